//! `berth images pull REF`: fetch an image from a registry into the content store and unpack it
//! into the snapshotter (ctr `images pull`), through the transfer library over the daemon's
//! content, snapshot, diff, image and lease services. An interrupted pull resumes: committed
//! blobs are not fetched again and partial ingests continue with ranged requests.
//!
//! With `--local=false` (ctr 1.7's flag) the daemon pulls instead, through its Transfer
//! service: the registry flags become the request's resolver (`--plain-http` its default
//! scheme, `--hosts-dir` its hosts directory, `--user` answers on its credential stream) and
//! the daemon's progress events are shown as they stream in.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use berth_proto::containerd::types::transfer::Progress as Event;
use berth_transfer::grpc::{from_proto_descriptor, GrpcStores};
use berth_transfer::hosts::registry_hosts;
use berth_transfer::{pull, Image, ImageRef, Platform, Progress as _, PullOptions};

use super::platform_arg;
use super::transfer::{interactive, platform_flag, transfer_error, Bars, RegistryFlags};
use crate::client::images as img;
use crate::client::transfer::{self as remote, RemotePull};
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
    /// A directory of `<host>/hosts.toml` registry configurations (containerd's hosts
    /// directory); with `--local=false` it is read by the daemon, on its machine.
    #[arg(long, value_name = "DIR")]
    pub hosts_dir: Option<PathBuf>,
    /// Pull here, through the daemon's stores (the default); `--local=false` has the daemon
    /// pull through its Transfer service.
    #[command(flatten)]
    pub local: super::import::LocalFlag,
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
    fetch_from(client, flags, unpack, snapshotter, None).await
}

/// [`fetch`] with the registry endpoints of `hosts_dir` (a hosts directory) when given.
async fn fetch_from(
    client: &Client,
    flags: &FetchFlags,
    unpack: bool,
    snapshotter: &str,
    hosts_dir: Option<&std::path::Path>,
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
    let mut options = options;
    if let Some(dir) = hosts_dir {
        let registry = ImageRef::parse(&flags.reference)
            .map_err(transfer_error)?
            .registry()
            .to_owned();
        options.registry.hosts =
            registry_hosts(&[dir.to_owned()], &registry).map_err(transfer_error)?;
    }
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
    let image = if args.local.local {
        fetch_from(
            client,
            &args.fetch,
            !args.no_unpack,
            &snapshotter,
            args.hosts_dir.as_deref(),
        )
        .await?
    } else {
        daemon_pull(client, &args, &snapshotter).await?
    };
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

/// `--local=false`: the daemon pulls through its Transfer service; returns the image record.
async fn daemon_pull(client: &Client, args: &Args, snapshotter: &str) -> Result<Image> {
    let flags = &args.fetch;
    if flags.registry.tlscacert.is_some() || flags.registry.skip_verify {
        anyhow::bail!(
            "--tlscacert and --skip-verify are not supported with --local=false: \
             configure the registry in a hosts.toml under --hosts-dir"
        );
    }
    let platform = platform_flag(flags.platform.as_deref())?.unwrap_or_else(Platform::host);
    let api_platform = berth_proto::containerd::types::Platform {
        os: platform.os.clone(),
        architecture: platform.architecture.clone(),
        variant: platform.variant.clone(),
    };
    let hosts_dir = match &args.hosts_dir {
        Some(dir) => Some(
            dir.to_str()
                .with_context(|| format!("--hosts-dir {} is not UTF-8", dir.display()))?
                .to_owned(),
        ),
        None => None,
    };
    let spec = RemotePull {
        reference: flags.reference.clone(),
        labels: label_flags(&flags.labels).into_iter().collect(),
        platforms: if flags.all_platforms {
            Vec::new()
        } else {
            vec![api_platform.clone()]
        },
        unpack: (!args.no_unpack).then(|| (api_platform, snapshotter.to_owned())),
        credentials: flags.registry.user.as_deref().map(|u| {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            (user.to_owned(), pass.to_owned())
        }),
        host_dir: hosts_dir,
        default_scheme: flags.registry.plain_http.then(|| "http".to_owned()),
    };
    let mut shown = Shown::new(interactive());
    let pulled = remote::pull(client, &spec, |event| shown.event(event)).await;
    shown.bars.finish();
    pulled.map_err(|status| anyhow::Error::msg(status.message().to_owned()))?;
    let record = img::get(client, &flags.reference).await?;
    Ok(Image {
        name: record.name.clone(),
        target: record
            .target
            .clone()
            .map(from_proto_descriptor)
            .unwrap_or_else(|| berth_transfer::Descriptor::new("", "", 0)),
        labels: record.labels.into_iter().collect(),
    })
}

/// The daemon's progress events on screen: bars on a terminal, else one line per event (the
/// byte counts of `downloading` left out).
struct Shown {
    bars: Bars,
    show: bool,
    /// Bytes drawn so far per blob name.
    seen: HashMap<String, u64>,
}

impl Shown {
    fn new(show: bool) -> Self {
        Self {
            bars: Bars::new(show, "downloading"),
            show,
            seen: HashMap::new(),
        }
    }

    fn event(&mut self, e: &Event) {
        let desc = e.desc.clone().map(from_proto_descriptor);
        if !self.show {
            if e.event != "downloading" {
                let line = match (&desc, e.name.is_empty()) {
                    (Some(_), _) => format!("{}: {} {}/{}", e.name, e.event, e.progress, e.total),
                    (None, true) => e.event.clone(),
                    (None, false) => format!("{}: {}", e.name, e.event),
                };
                println!("{line}");
            }
            return;
        }
        let Some(desc) = desc else {
            let text = if e.name.is_empty() {
                e.event.clone()
            } else {
                format!("{}: {}", e.name, e.event)
            };
            self.bars.line(&text);
            return;
        };
        match e.event.as_str() {
            "waiting" => self.bars.on_start(&desc),
            "downloading" => {
                let now = u64::try_from(e.progress).unwrap_or(0);
                let before = self.seen.insert(e.name.clone(), now).unwrap_or(0);
                self.bars.on_bytes(&desc, now.saturating_sub(before));
            }
            "complete" => self.bars.on_done(&desc),
            "already exists" => self.bars.on_exists(&desc),
            "unpacked" => self.bars.on_unpacked(&desc),
            other => self.bars.line(&format!("{}: {other}", e.name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::Args;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("pull").chain(argv.iter().copied()))
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
            .args
    }

    #[test]
    fn local_is_the_default_and_false_only_with_equals() {
        assert!(parse(&["r"]).local.local);
        assert!(parse(&["--local", "r"]).local.local);
        assert!(!parse(&["--local=false", "r"]).local.local);
        let a = parse(&["--local=false", "--hosts-dir", "/etc/berth/certs.d", "r"]);
        assert_eq!(a.fetch.reference, "r");
        assert_eq!(
            a.hosts_dir.as_deref(),
            Some(std::path::Path::new("/etc/berth/certs.d"))
        );
    }
}
