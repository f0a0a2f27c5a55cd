//! `berth tasks ps CONTAINER`: Containers.Get, Tasks.Get, ListPids; `PID INFO`.

use anyhow::Result;
use berth_proto::containerd::runc::v1::ProcessDetails;
use berth_proto::containerd::services::tasks::v1::ListPidsRequest;
use prost::Message as _;
use serde_json::json;

use super::pad4;
use crate::client::{tasks, Client};
use crate::error::RpcResultExt;
use crate::output::{ListOpts, Listing};

/// Arguments of `tasks ps`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub list: ListOpts,
    /// Container id.
    pub id: String,
}

/// The INFO column: ctr prints the decoded `Any` with `%+v`.
fn info(any: Option<&prost_types::Any>) -> (String, serde_json::Value) {
    let Some(any) = any else {
        return ("-".to_owned(), serde_json::Value::Null);
    };
    if any.type_url.ends_with("containerd.runc.v1.ProcessDetails") {
        if let Ok(d) = ProcessDetails::decode(any.value.as_slice()) {
            return (
                format!("&ProcessDetails{{ExecID:{},}}", d.exec_id),
                json!({"exec_id": d.exec_id}),
            );
        }
    }
    (any.type_url.clone(), json!({"type_url": any.type_url}))
}

/// Lists the processes.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    tasks::container(client, &args.id).await?;
    tasks::get(client, &args.id, "").await?;
    let processes = client
        .tasks()
        .list_pids(client.req(ListPidsRequest {
            container_id: args.id.clone(),
        }))
        .await
        .rpc(
            client,
            "list processes of",
            tasks::task_object(&args.id, ""),
        )?
        .into_inner()
        .processes;
    let mut listing = Listing::new(&["PID   ", "INFO"]);
    for p in &processes {
        let (text, value) = info(p.info.as_ref());
        listing.push(
            p.pid.to_string(),
            pad4(vec![p.pid.to_string(), text]),
            json!({"pid": p.pid, "info": value}),
        );
    }
    listing.print(&args.list)?;
    Ok(())
}
