//! `berth images unpack IMAGE`: unpack an image into snapshots on a snapshotter.

use anyhow::Result;

use super::{platform_arg, unpack_image};
use crate::client::images as img;
use crate::client::Client;

/// Arguments of `images unpack`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Snapshotter to unpack on (default: namespace label, else overlayfs).
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER")]
    pub snapshotter: Option<String>,
    /// Platform to unpack (`os/arch[/variant]`).
    #[arg(long)]
    pub platform: Option<String>,
    /// Image name.
    pub image: String,
}

/// Unpacks and prints progress like `ctr images import`.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let image = img::get(client, &args.image).await?;
    let platform = platform_arg(args.platform.as_deref())?;
    let snapshotter = client.snapshotter(args.snapshotter.as_deref()).await?;
    let digest = img::target(&image).digest;
    print!("unpacking {} ({digest})...", image.name);
    use std::io::Write as _;
    std::io::stdout().flush().ok();
    let chain = unpack_image(client, &image, &platform, &snapshotter).await?;
    println!("done");
    println!("{chain}");
    Ok(())
}
