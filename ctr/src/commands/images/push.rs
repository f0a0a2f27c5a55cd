//! `berth images push REMOTE [LOCAL]`: upload a local image to a registry (ctr `images push`):
//! layers and configs the registry lacks, then the manifests and the index, named REMOTE.

use std::sync::Arc;

use anyhow::Result;
use berth_transfer::grpc::GrpcStores;
use berth_transfer::{push, PushOptions};

use super::transfer::{interactive, platform_flag, transfer_error, Bars, RegistryFlags};
use crate::client::Client;

/// Arguments of `images push`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// Push only this platform's manifest of an index (`os/arch[/variant]`).
    #[arg(long)]
    pub platform: Option<String>,
    /// How many blobs upload at once.
    #[arg(long, default_value_t = 3)]
    pub max_concurrent_uploaded_layers: usize,
    /// The reference to push to (`registry/repo:tag`).
    #[arg(value_name = "REMOTE")]
    pub remote: String,
    /// The local image to push (default: REMOTE).
    #[arg(value_name = "LOCAL")]
    pub local: Option<String>,
}

/// Pushes, drawing progress bars on a terminal.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let local = args.local.clone().unwrap_or_else(|| args.remote.clone());
    let show = interactive();
    let bars = Arc::new(Bars::new(show, "uploading"));
    let options = PushOptions {
        registry: args.registry.options(args.max_concurrent_uploaded_layers)?,
        platform: platform_flag(args.platform.as_deref())?,
        progress: bars.clone(),
    };
    // Push reads content only: the snapshotter name is not used.
    let proxies = GrpcStores::new(client.channel(), crate::client::DEFAULT_SNAPSHOTTER);
    let pushed = push(
        &local,
        &args.remote,
        &options,
        &proxies.stores(&client.namespace),
    )
    .await;
    bars.finish();
    let desc = pushed.map_err(transfer_error)?;
    println!("pushed {} ({})", args.remote, desc.digest);
    Ok(())
}
