//! `berth snapshots label KEY [k=v...]`: Snapshots.Update with `labels.<k>` masks.

use anyhow::Result;
use berth_proto::containerd::services::snapshots::v1::{Info, UpdateSnapshotRequest};

use crate::client::Client;
use crate::commands::parse_labels;
use crate::error::{Object, RpcResultExt};
use crate::output::sorted_labels;

/// Arguments of `snapshots label`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Snapshot key.
    pub key: String,
    /// Labels as KEY=VALUE; `KEY=` removes the label.
    pub labels: Vec<String>,
}

/// Updates the labels and prints the result.
pub async fn run(client: &Client, snapshotter: &str, args: Args) -> Result<()> {
    let labels = parse_labels(&args.labels);
    let mut paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
    paths.sort();
    let info = client
        .snapshots()
        .update(client.req(UpdateSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            info: Some(Info {
                name: args.key.clone(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        }))
        .await
        .rpc(client, "update", Object::snapshot(snapshotter, &args.key))?
        .into_inner()
        .info
        .unwrap_or_default();
    println!("{}", sorted_labels(&info.labels).join(","));
    Ok(())
}
