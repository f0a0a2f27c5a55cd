//! `berth images pull REF`: fetch an image from a registry into the content store and unpack it
//! into the snapshotter (ctr `images pull`), through the transfer library over the daemon's
//! content, snapshot, diff, image and lease services. An interrupted pull resumes: committed
//! blobs are not fetched again and partial ingests continue with ranged requests.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use anyhow::Result;
use berth_transfer::grpc::GrpcStores;
use berth_transfer::{pull, PullOptions};

use super::platform_arg;
use super::transfer::{interactive, platform_flag, transfer_error, Bars, RegistryFlags};
use crate::client::images as img;
use crate::client::Client;
use crate::commands::label_flags;
use crate::oci;

/// Arguments of `images pull`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// Snapshotter to unpack on (default: namespace label, else overlayfs).
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER")]
    pub snapshotter: Option<String>,
    /// Platform to pull and unpack (`os/arch[/variant]`; default: this host's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Pull content for every platform of an index (only one is unpacked).
    #[arg(long)]
    pub all_platforms: bool,
    /// Fetch the content without unpacking it.
    #[arg(long)]
    pub no_unpack: bool,
    /// Print the chain ID of the unpacked image.
    #[arg(long)]
    pub print_chainid: bool,
    /// Labels to set on the image (`k=v`; repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// How many blobs download at once.
    #[arg(long, default_value_t = 3)]
    pub max_concurrent_downloads: usize,
    /// The image reference (`busybox` means `docker.io/library/busybox:latest`).
    #[arg(value_name = "REF")]
    pub reference: String,
}

/// Pulls, drawing progress bars on a terminal.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let snapshotter = client.snapshotter(args.snapshotter.as_deref()).await?;
    let platform = platform_flag(args.platform.as_deref())?;
    let show = interactive();
    let bars = Arc::new(Bars::new(show, "downloading"));
    let options = PullOptions {
        registry: args.registry.options(args.max_concurrent_downloads)?,
        platform,
        all_platforms: args.all_platforms,
        unpack: !args.no_unpack,
        labels: label_flags(&args.labels)
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        progress: bars.clone(),
    };
    let proxies = GrpcStores::new(client.channel(), &snapshotter);
    let pulled = pull(
        &args.reference,
        &options,
        &proxies.stores(&client.namespace),
    )
    .await;
    bars.finish();
    let image = pulled.map_err(transfer_error)?;
    let digest = &image.target.digest;
    if args.no_unpack {
        println!("{} ({digest})", image.name);
    } else {
        print!("unpacking {} ({digest})...", image.name);
        std::io::stdout().flush().ok();
        println!("done");
    }
    if args.print_chainid && !args.no_unpack {
        let record = img::get(client, &image.name).await?;
        let wanted = platform_arg(args.platform.as_deref())?;
        let rootfs = img::rootfs(client, &img::target(&record), &wanted).await?;
        let chain = oci::chain_ids(&rootfs.diff_ids());
        if let Some(top) = chain.last() {
            println!("image chain ID: {top}");
        }
    }
    Ok(())
}
