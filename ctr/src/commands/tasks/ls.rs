//! `berth tasks ls`: Tasks.List; `TASK PID STATUS` (`-q`: ids, `--format json`).

use anyhow::Result;
use berth_proto::containerd::services::tasks::v1::ListTasksRequest;
use serde_json::json;

use super::pad4;
use crate::client::{tasks, Client};
use crate::error::{Object, RpcResultExt};
use crate::output::{ListOpts, Listing};
use crate::timefmt;

/// Flags of `tasks ls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub list: ListOpts,
}

/// Lists tasks.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let list = client
        .tasks()
        .list(client.req(ListTasksRequest::default()))
        .await
        .rpc(client, "list", Object::kind("tasks"))?
        .into_inner()
        .tasks;
    let mut listing = Listing::new(&["TASK   ", "PID   ", "STATUS"]);
    for t in &list {
        let status = tasks::status_name(t);
        let mut obj = json!({
            "id": t.id,
            "container_id": t.container_id,
            "pid": t.pid,
            "status": status,
            "terminal": t.terminal,
            "stdin": t.stdin,
            "stdout": t.stdout,
            "stderr": t.stderr,
        });
        if status == "STOPPED" {
            obj["exit_status"] = json!(t.exit_status);
            obj["exited_at"] = json!(timefmt::timestamp(t.exited_at.as_ref()));
        }
        listing.push(
            t.id.clone(),
            pad4(vec![t.id.clone(), t.pid.to_string(), status.to_owned()]),
            obj,
        );
    }
    listing.print(&args.list)?;
    Ok(())
}
