//! `berth snapshots prepare KEY [PARENT]`: Snapshots.Prepare with `containerd.io/gc.root`.

use anyhow::Result;
use berth_proto::containerd::services::snapshots::v1::PrepareSnapshotRequest;

use super::{gc_root_labels, print_mounts};
use crate::client::Client;
use crate::commands::label_flags;
use crate::error::{Object, RpcResultExt};

/// Arguments of `snapshots prepare`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print `mount` commands for this target.
    #[arg(long)]
    pub target: Option<String>,
    /// Print the mounts as `mount` commands (target `/tmp/<key>` unless --target).
    #[arg(long)]
    pub mounts: bool,
    /// Extra labels (KEY=VALUE, repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Key of the new active snapshot.
    pub key: String,
    /// Parent (a committed snapshot).
    #[arg(default_value = "")]
    pub parent: String,
}

/// Prepares the snapshot.
pub async fn run(client: &Client, snapshotter: &str, args: Args) -> Result<()> {
    let mounts = client
        .snapshots()
        .prepare(client.req(PrepareSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            key: args.key.clone(),
            parent: args.parent.clone(),
            labels: gc_root_labels(label_flags(&args.labels)),
        }))
        .await
        .rpc(client, "prepare", Object::snapshot(snapshotter, &args.key))?
        .into_inner()
        .mounts;
    if let Some(target) = &args.target {
        print_mounts(target, &mounts);
    } else if args.mounts {
        print_mounts(&format!("/tmp/{}", args.key), &mounts);
    }
    Ok(())
}
