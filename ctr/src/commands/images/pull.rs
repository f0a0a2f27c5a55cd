//! `berth images pull REF`: fetch an image from a registry into the content store and unpack it
//! into the snapshotter (ctr `images pull`), through the transfer library over the daemon's
//! content, snapshot, diff, image and lease services. An interrupted pull resumes: committed
//! blobs are not fetched again and partial ingests continue with ranged requests.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use anyhow::Result;
use berth_transfer::grpc::GrpcStores;
use berth_transfer::{pull, Image, PullOptions};

use super::platform_arg;
use super::transfer::{interactive, platform_flag, transfer_error, Bars, RegistryFlags};
use crate::client::images as img;
use crate::client::Client;
use crate::commands::label_flags;
use crate::oci;

/// What `images pull` and `content fetch` share: where from, which platforms, which labels
/// (ctr's `RegistryFlags`, `--platform`, `--all-platforms`, `--label`).
#[derive(Debug, clap::Args)]
pub struct FetchFlags {
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// Platform to fetch (and unpack) (`os/arch[/variant]`; default: this host's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Fetch content for every platform of an index (only one is unpacked).
    #[arg(long)]
    pub all_platforms: bool,
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

/// Arguments of `images pull`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub fetch: FetchFlags,
    /// Snapshotter to unpack on (default: namespace label, else overlayfs).
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER")]
    pub snapshotter: Option<String>,
    /// Fetch the content without unpacking it.
    #[arg(long)]
    pub no_unpack: bool,
    /// Print the chain ID of the unpacked image.
    #[arg(long)]
    pub print_chainid: bool,
}

/// Fetches `flags.reference` into the content store under a lease and records the image (ctr's
/// `client.Fetch`), unpacking it on `snapshotter` when `unpack` (`client.Pull`); draws progress
/// bars on a terminal.
pub async fn fetch(
    client: &Client,
    flags: &FetchFlags,
    unpack: bool,
    snapshotter: &str,
) -> Result<Image> {
    let show = interactive();
    let bars = Arc::new(Bars::new(show, "downloading"));
    let options = PullOptions {
        registry: flags.registry.options(flags.max_concurrent_downloads)?,
        platform: platform_flag(flags.platform.as_deref())?,
        all_platforms: flags.all_platforms,
        unpack,
        labels: label_flags(&flags.labels)
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        progress: bars.clone(),
    };
    let proxies = GrpcStores::new(client.channel(), snapshotter);
    let pulled = pull(
        &flags.reference,
        &options,
        &proxies.stores(&client.namespace),
    )
    .await;
    bars.finish();
    pulled.map_err(transfer_error)
}

/// Pulls and, unless `--no-unpack`, unpacks.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let snapshotter = client.snapshotter(args.snapshotter.as_deref()).await?;
    let image = fetch(client, &args.fetch, !args.no_unpack, &snapshotter).await?;
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
        let wanted = platform_arg(args.fetch.platform.as_deref())?;
        let rootfs = img::rootfs(client, &img::target(&record), &wanted).await?;
        let chain = oci::chain_ids(&rootfs.diff_ids());
        if let Some(top) = chain.last() {
            println!("image chain ID: {top}");
        }
    }
    Ok(())
}
