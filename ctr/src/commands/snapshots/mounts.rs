//! `berth snapshots mounts TARGET KEY`: Snapshots.Mounts printed as `mount` commands.

use anyhow::Result;
use berth_proto::containerd::services::snapshots::v1::MountsRequest;

use super::print_mounts;
use crate::client::Client;
use crate::error::{Object, RpcResultExt};

/// Arguments of `snapshots mounts`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the commands mount.
    pub target: String,
    /// Snapshot key.
    pub key: String,
}

/// Prints the mounts.
pub async fn run(client: &Client, snapshotter: &str, args: Args) -> Result<()> {
    let mounts = client
        .snapshots()
        .mounts(client.req(MountsRequest {
            snapshotter: snapshotter.to_owned(),
            key: args.key.clone(),
        }))
        .await
        .rpc(
            client,
            "get mounts of",
            Object::snapshot(snapshotter, &args.key),
        )?
        .into_inner()
        .mounts;
    print_mounts(&args.target, &mounts);
    Ok(())
}
