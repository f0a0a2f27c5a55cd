//! `berth snapshots info KEY`: Snapshots.Stat printed as indented JSON.

use anyhow::Result;
use berth_proto::containerd::services::snapshots::v1::StatSnapshotRequest;

use super::info_json;
use crate::client::Client;
use crate::error::{Object, RpcResultExt};

/// Arguments of `snapshots info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Snapshot key.
    pub key: String,
}

/// Prints the snapshot's info.
pub async fn run(client: &Client, snapshotter: &str, args: Args) -> Result<()> {
    let info = client
        .snapshots()
        .stat(client.req(StatSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            key: args.key.clone(),
        }))
        .await
        .rpc(client, "stat", Object::snapshot(snapshotter, &args.key))?
        .into_inner()
        .info
        .unwrap_or_default();
    println!("{}", serde_json::to_string_pretty(&info_json(&info))?);
    Ok(())
}
