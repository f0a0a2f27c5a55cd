//! `berth snapshots rm KEY...`: Snapshots.Remove each.

use anyhow::Result;
use berth_proto::containerd::services::snapshots::v1::RemoveSnapshotRequest;

use crate::client::Client;
use crate::commands::Failures;
use crate::error::{Object, RpcResultExt};

/// Arguments of `snapshots rm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keys to remove.
    #[arg(required = true)]
    pub keys: Vec<String>,
}

/// Removes each snapshot.
pub async fn run(client: &Client, snapshotter: &str, args: Args) -> Result<()> {
    let mut failures = Failures::default();
    for key in &args.keys {
        let res = client
            .snapshots()
            .remove(client.req(RemoveSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                key: key.clone(),
            }))
            .await
            .rpc(client, "remove", Object::snapshot(snapshotter, key));
        if let Err(err) = res {
            failures.add(err);
        }
    }
    failures.finish()
}
