//! `berth snapshots usage [KEY...]`: Snapshots.Usage of each (all when none given);
//! `KEY SIZE INODES`.

use anyhow::Result;
use berth_proto::containerd::services::snapshots::v1::UsageRequest;
use serde_json::json;

use super::list_all;
use crate::client::Client;
use crate::error::{Object, RpcResultExt};
use crate::output::{bytes_binary, ListOpts, Listing};

/// Flags of `snapshots usage`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub list: ListOpts,
    /// Snapshot keys (default: all).
    pub keys: Vec<String>,
}

/// Prints usage.
pub async fn run(client: &Client, snapshotter: &str, args: Args) -> Result<()> {
    let keys = if args.keys.is_empty() {
        list_all(client, snapshotter, Vec::new())
            .await?
            .into_iter()
            .map(|i| i.name)
            .collect()
    } else {
        args.keys.clone()
    };
    let mut listing = Listing::new(&["KEY", "SIZE", "INODES"]);
    for key in keys {
        let usage = client
            .snapshots()
            .usage(client.req(UsageRequest {
                snapshotter: snapshotter.to_owned(),
                key: key.clone(),
            }))
            .await
            .rpc(client, "get usage of", Object::snapshot(snapshotter, &key))?
            .into_inner();
        listing.push(
            key.clone(),
            vec![
                key.clone(),
                bytes_binary(usage.size),
                usage.inodes.to_string(),
            ],
            json!({"key": key, "size": usage.size, "inodes": usage.inodes}),
        );
    }
    listing.print(&args.list)?;
    Ok(())
}
