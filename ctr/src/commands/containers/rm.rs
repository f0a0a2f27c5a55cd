//! `berth containers rm ID...`: Containers.Get, Tasks.Get (a stopped or created task is deleted
//! first, a live one refused: `cannot delete a non stopped container`), Containers.Delete, then
//! Snapshots.Remove of the container's snapshot unless `--keep-snapshot`.

use anyhow::Result;
use berth_proto::containerd::services::containers::v1::{
    DeleteContainerRequest, GetContainerRequest,
};
use berth_proto::containerd::services::snapshots::v1::RemoveSnapshotRequest;
use tonic::Code;

use crate::client::Client;
use crate::commands::Failures;
use crate::error::{Object, RpcResultExt};

/// Arguments of `containers rm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do not clean up the snapshot with the container.
    #[arg(long)]
    pub keep_snapshot: bool,
    /// Container ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

async fn delete(client: &Client, id: &str, keep_snapshot: bool) -> Result<()> {
    let c = client
        .containers()
        .get(client.req(GetContainerRequest { id: id.to_owned() }))
        .await
        .rpc(client, "get", Object::container(id))?
        .into_inner()
        .container
        .unwrap_or_default();
    match crate::client::tasks::get(client, id, "").await {
        Ok(task) => {
            use berth_proto::containerd::v1::types::Status;
            match task.status() {
                Status::Stopped | Status::Created => {
                    crate::client::tasks::delete(client, id, false).await?;
                }
                _ => anyhow::bail!(
                    "cannot delete a non stopped container: {}",
                    crate::client::tasks::status_name(&task).to_ascii_lowercase()
                ),
            }
        }
        Err(err) if crate::error::code_of(&err) == Some(Code::NotFound) => {}
        Err(err) => return Err(err),
    }
    client
        .containers()
        .delete(client.req(DeleteContainerRequest { id: id.to_owned() }))
        .await
        .rpc(client, "delete", Object::container(id))?;
    if !keep_snapshot && !c.snapshot_key.is_empty() {
        let removed = client
            .snapshots()
            .remove(client.req(RemoveSnapshotRequest {
                snapshotter: c.snapshotter.clone(),
                key: c.snapshot_key.clone(),
            }))
            .await;
        if let Err(s) = removed {
            if s.code() != Code::NotFound {
                return Err(s).rpc(
                    client,
                    "remove",
                    Object::snapshot(&c.snapshotter, &c.snapshot_key),
                );
            }
        }
    }
    Ok(())
}

/// Deletes each container.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let mut failures = Failures::default();
    for id in &args.ids {
        if let Err(err) = delete(client, id, args.keep_snapshot).await {
            failures.add(err);
        }
    }
    failures.finish()
}
