//! `berth images mount IMAGE DIR`: lease named DIR, unpack if needed, Snapshots.View (Prepare
//! with `--rw`) keyed DIR on the top chain ID, then a local mount (containerd `images mount`).

use std::path::PathBuf;

use anyhow::Result;
use berth_proto::containerd::services::snapshots::v1::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, ViewSnapshotRequest,
};
use berth_wellknown::label;
use tonic::Code;

use super::{platform_arg, unpack_image};
use crate::client::images as img;
use crate::client::leases::{self, DEFAULT_EXPIRY_SECS};
use crate::client::{mount, Client};
use crate::error::{Object, RpcResultExt};

/// Arguments of `images mount`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Enable write support on the mount.
    #[arg(long)]
    pub rw: bool,
    /// Platform to mount (`os/arch[/variant]`).
    #[arg(long)]
    pub platform: Option<String>,
    /// Snapshotter (default: namespace label, else overlayfs).
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER")]
    pub snapshotter: Option<String>,
    /// Image name.
    pub image: String,
    /// Target directory.
    pub target: String,
}

/// Mounts the image and prints the chain ID and the target.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let snapshotter = client.snapshotter(args.snapshotter.as_deref()).await?;
    let mut labels = leases::expiry_labels(DEFAULT_EXPIRY_SECS);
    labels.insert(
        format!("{}.{snapshotter}", label::GC_REF_SNAPSHOT),
        args.target.clone(),
    );
    let created = match leases::create(client, &args.target, labels).await {
        Ok(_) => true,
        Err(err) if crate::error::code_of(&err) == Some(Code::AlreadyExists) => false,
        Err(err) => return Err(err),
    };
    let leased = client.with_lease(&args.target);
    let result = mount_leased(&leased, &args, &snapshotter).await;
    if result.is_err() && created {
        let _ = leases::delete(client, &args.target, false).await;
    }
    result
}

async fn mount_leased(client: &Client, args: &Args, snapshotter: &str) -> Result<()> {
    let platform = platform_arg(args.platform.as_deref())?;
    let image = img::get(client, &args.image).await?;
    let chain = unpack_image(client, &image, &platform, snapshotter).await?;
    println!("{chain}");
    let key = args.target.clone();
    let object = Object::snapshot(snapshotter, &key);
    let resp = if args.rw {
        client
            .snapshots()
            .prepare(client.req(PrepareSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                key: key.clone(),
                parent: chain.clone(),
                labels: Default::default(),
            }))
            .await
            .map(|r| r.into_inner().mounts)
    } else {
        client
            .snapshots()
            .view(client.req(ViewSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                key: key.clone(),
                parent: chain.clone(),
                labels: Default::default(),
            }))
            .await
            .map(|r| r.into_inner().mounts)
    };
    let mounts = match resp {
        Ok(m) => m,
        Err(s) if s.code() == Code::AlreadyExists => {
            client
                .snapshots()
                .mounts(client.req(MountsRequest {
                    snapshotter: snapshotter.to_owned(),
                    key: key.clone(),
                }))
                .await
                .rpc(client, "get mounts of", object.clone())?
                .into_inner()
                .mounts
        }
        Err(s) => return Err(s).rpc(client, if args.rw { "prepare" } else { "view" }, object),
    };
    let target = PathBuf::from(&args.target);
    let mounted = tokio::task::spawn_blocking(move || mount::mount_all(&mounts, &target)).await?;
    if let Err(err) = mounted {
        let removed = client
            .snapshots()
            .remove(client.req(RemoveSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                key,
            }))
            .await;
        if let Err(s) = removed {
            if s.code() != Code::NotFound {
                eprintln!(
                    "berth: error cleaning up snapshot after mount error: {}",
                    s.message()
                );
            }
        }
        return Err(err);
    }
    println!("{}", args.target);
    Ok(())
}
