//! `berth snapshots view KEY [PARENT]`: Snapshots.View with `containerd.io/gc.root`.

use anyhow::Result;
use berth_proto::containerd::services::snapshots::v1::ViewSnapshotRequest;

use super::{gc_root_labels, print_mounts};
use crate::client::Client;
use crate::error::{Object, RpcResultExt};

/// Arguments of `snapshots view`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print `mount` commands for this target.
    #[arg(long)]
    pub target: Option<String>,
    /// Key of the new view.
    pub key: String,
    /// Parent (a committed snapshot).
    #[arg(default_value = "")]
    pub parent: String,
}

/// Creates the view.
pub async fn run(client: &Client, snapshotter: &str, args: Args) -> Result<()> {
    let mounts = client
        .snapshots()
        .view(client.req(ViewSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            key: args.key.clone(),
            parent: args.parent.clone(),
            labels: gc_root_labels(Default::default()),
        }))
        .await
        .rpc(client, "view", Object::snapshot(snapshotter, &args.key))?
        .into_inner()
        .mounts;
    if let Some(target) = &args.target {
        print_mounts(target, &mounts);
    }
    Ok(())
}
