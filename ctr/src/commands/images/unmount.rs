//! `berth images unmount DIR`: unmount everything on DIR; `--rm` also deletes the lease and
//! the snapshot named DIR.

use std::path::PathBuf;

use anyhow::Result;
use berth_proto::containerd::services::snapshots::v1::RemoveSnapshotRequest;
use tonic::Code;

use crate::client::{leases, mount, Client};
use crate::error::{Object, RpcResultExt};

/// Arguments of `images unmount`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remove the snapshot and lease after unmounting.
    #[arg(long)]
    pub rm: bool,
    /// Snapshotter (default: namespace label, else overlayfs).
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER")]
    pub snapshotter: Option<String>,
    /// Target directory.
    pub target: String,
}

/// Unmounts and prints the target.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let target = PathBuf::from(&args.target);
    tokio::task::spawn_blocking(move || mount::unmount_all(&target)).await??;
    if args.rm {
        if let Err(err) = leases::delete(client, &args.target, false).await {
            if crate::error::code_of(&err) != Some(Code::NotFound) {
                return Err(err);
            }
        }
        let snapshotter = client.snapshotter(args.snapshotter.as_deref()).await?;
        let removed = client
            .snapshots()
            .remove(client.req(RemoveSnapshotRequest {
                snapshotter: snapshotter.clone(),
                key: args.target.clone(),
            }))
            .await;
        if let Err(s) = removed {
            if s.code() != Code::NotFound {
                return Err(s).rpc(
                    client,
                    "remove",
                    Object::snapshot(&snapshotter, &args.target),
                );
            }
        }
    }
    println!("{}", args.target);
    Ok(())
}
