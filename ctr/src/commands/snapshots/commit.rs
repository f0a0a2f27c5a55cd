//! `berth snapshots commit NAME KEY`: Snapshots.Commit of active KEY as NAME, with
//! `containerd.io/gc.root`.

use anyhow::Result;
use berth_proto::containerd::services::snapshots::v1::CommitSnapshotRequest;

use super::gc_root_labels;
use crate::client::Client;
use crate::commands::label_flags;
use crate::error::{Object, RpcResultExt};

/// Arguments of `snapshots commit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Extra labels (KEY=VALUE, repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Name of the committed snapshot.
    pub name: String,
    /// Key of the active snapshot.
    pub key: String,
}

/// Commits the snapshot.
pub async fn run(client: &Client, snapshotter: &str, args: Args) -> Result<()> {
    client
        .snapshots()
        .commit(client.req(CommitSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            name: args.name.clone(),
            key: args.key.clone(),
            labels: gc_root_labels(label_flags(&args.labels)),
        }))
        .await
        .rpc(client, "commit", Object::snapshot(snapshotter, &args.key))?;
    Ok(())
}
