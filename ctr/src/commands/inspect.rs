//! `berth inspect CONTAINER...`: a JSON array with one object per container in the shape of
//! `docker inspect` (the fields berth knows): id, name, image, created, state (status, pid, exit
//! code, times), mounts with volume names, network addresses, restart policy and log location.
//!
//! Sources: Containers.Get and Tasks.Get; mounts from the `berth/mounts` label (or
//! `nerdctl/mounts`, else the spec's bind mounts); network from `berth/network.addresses` (a JSON
//! array of addresses, or a comma-separated list), `nerdctl/networks` (network names) and the
//! published-ports labels; restart policy from `containerd.io/restart.policy` /
//! `containerd.io/restart.status` / `containerd.io/restart.count`; the log location from
//! `containerd.io/restart.loguri`, else `containerd.io/restart.logpath`, else `nerdctl/log-uri`
//! (a `file://` URI also gives `LogPath`).

use std::collections::HashMap;

use anyhow::Result;
use berth_proto::containerd::services::containers::v1::Container;
use serde_json::{json, Value};
use tonic::Code;

use super::ps;
use crate::client::volumes as vol;
use crate::client::{tasks as task_client, Client};
use crate::commands::Failures;
use crate::timefmt;

/// Label with the container's network addresses (JSON array, or comma-separated).
pub const ADDRESSES_LABEL: &str = "berth/network.addresses";
/// nerdctl's label naming the container's networks (JSON array).
pub const NETWORKS_LABEL: &str = "nerdctl/networks";
/// The restart monitor's labels (containerd `runtime/restart`).
pub const RESTART_POLICY_LABEL: &str = "containerd.io/restart.policy";
pub const RESTART_STATUS_LABEL: &str = "containerd.io/restart.status";
/// The json-file log of `berth run --log-driver json-file`.
pub const LOG_PATH_LABEL: &str = "berth/log-path";
pub const LOG_URI_LABELS: [&str; 3] = [
    "containerd.io/restart.loguri",
    "containerd.io/restart.logpath",
    "nerdctl/log-uri",
];

/// Arguments of `inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

fn json_list(text: Option<&String>) -> Vec<String> {
    let Some(text) = text else {
        return Vec::new();
    };
    serde_json::from_str::<Vec<String>>(text).unwrap_or_else(|_| {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

/// Docker's `RestartPolicy` from containerd's policy label (`always`, `on-failure:3`, ...).
fn restart_policy(labels: &HashMap<String, String>) -> Value {
    let raw = labels.get(RESTART_POLICY_LABEL).map(String::as_str);
    let (name, retries) = match raw {
        None | Some("") => ("no", 0),
        Some(p) => match p.split_once(':') {
            Some((n, count)) => (n, count.parse::<u64>().unwrap_or(0)),
            None => (p, 0),
        },
    };
    json!({
        "Name": name,
        "MaximumRetryCount": retries,
        "Label": raw,
        "DesiredStatus": labels.get(RESTART_STATUS_LABEL),
    })
}

/// The inspect object of container `c` with task `task`.
pub fn inspect_json(
    c: &Container,
    task: Option<&berth_proto::containerd::v1::types::Process>,
) -> Value {
    let state = ps::task_state(task, c.created_at.as_ref());
    let args = ps::command_args(c);
    let log_uri = LOG_URI_LABELS
        .iter()
        .find_map(|k| c.labels.get(*k))
        .cloned();
    let log_path = c.labels.get(LOG_PATH_LABEL).cloned().or_else(|| {
        log_uri.as_deref().and_then(|u| {
            if let Some(path) = u.strip_prefix("file://") {
                Some(path.to_owned())
            } else if u.starts_with('/') {
                Some(u.to_owned())
            } else {
                None
            }
        })
    });
    let addresses = json_list(c.labels.get(ADDRESSES_LABEL));
    let created = c
        .created_at
        .as_ref()
        .map(|t| timefmt::rfc3339_nano(t.seconds, t.nanos))
        .unwrap_or_default();
    json!({
        "Id": c.id,
        "Name": ps::name(c),
        "Created": created,
        "Path": args.first(),
        "Args": args.get(1..).unwrap_or_default(),
        "Image": c.image,
        "State": {
            "Status": state.state,
            "Running": state.state == "running",
            "Paused": state.state == "paused",
            "Pid": state.pid,
            "ExitCode": state.exit_code,
            "StartedAt": state.started_at,
            "FinishedAt": state.finished_at,
            "Description": state.status,
        },
        "RestartCount": ps::restarts(c),
        "Runtime": c.runtime.as_ref().map(|r| r.name.clone()),
        "Snapshotter": c.snapshotter,
        "SnapshotKey": c.snapshot_key,
        "Mounts": vol::container_mounts(c),
        "AnonymousVolumes": vol::anonymous_volumes(&c.labels),
        "HostConfig": {
            "RestartPolicy": restart_policy(&c.labels),
            "LogConfig": {"LogURI": log_uri},
        },
        "LogPath": log_path,
        "NetworkSettings": {
            "IPAddress": addresses.first(),
            "Addresses": addresses,
            "Networks": json_list(c.labels.get(NETWORKS_LABEL)),
            "Ports": ps::ports(&c.labels),
        },
        "Config": {
            "Labels": c.labels,
        },
    })
}

/// Prints the containers found as a JSON array; a missing one is an error.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let mut out = Vec::new();
    let mut failures = Failures::default();
    for id in &args.ids {
        let found = async {
            let c = task_client::container(client, id).await?;
            let task = match task_client::get(client, id, "").await {
                Ok(p) => Some(p),
                Err(err) if crate::error::code_of(&err) == Some(Code::NotFound) => None,
                Err(err) => return Err(err),
            };
            let mut v = inspect_json(&c, task.as_ref());
            // `run --net`: the addresses are in the CNI record the OCI hook wrote.
            let none = v["NetworkSettings"]["Addresses"]
                .as_array()
                .is_some_and(Vec::is_empty);
            if none && c.labels.contains_key(NETWORKS_LABEL) {
                let root = crate::client::volumes::daemon_root(client).await?;
                let addrs =
                    crate::commands::internal::recorded_addresses(&root, &client.namespace, id);
                v["NetworkSettings"]["IPAddress"] = json!(addrs.first());
                v["NetworkSettings"]["Addresses"] = json!(addrs);
            }
            Ok(v)
        }
        .await;
        match found {
            Ok(v) => out.push(v),
            Err(err) => failures.add(err),
        }
    }
    println!("{}", serde_json::to_string_pretty(&Value::Array(out))?);
    failures.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_and_network_labels() {
        let labels = HashMap::from([
            (RESTART_POLICY_LABEL.to_owned(), "on-failure:2".to_owned()),
            (RESTART_STATUS_LABEL.to_owned(), "running".to_owned()),
            (ADDRESSES_LABEL.to_owned(), "10.4.0.2, fd00::2".to_owned()),
            (
                "containerd.io/restart.loguri".to_owned(),
                "file:///var/log/c.log".to_owned(),
            ),
        ]);
        let p = restart_policy(&labels);
        assert_eq!(p["Name"], "on-failure");
        assert_eq!(p["MaximumRetryCount"], 2);
        assert_eq!(
            json_list(labels.get(ADDRESSES_LABEL)),
            ["10.4.0.2", "fd00::2"]
        );
        let c = Container {
            id: "c".into(),
            labels,
            ..Default::default()
        };
        let v = inspect_json(&c, None);
        assert_eq!(v["LogPath"], "/var/log/c.log");
        assert_eq!(v["State"]["Status"], "created");
        assert_eq!(v["NetworkSettings"]["IPAddress"], "10.4.0.2");
        assert_eq!(restart_policy(&HashMap::new())["Name"], "no");
    }
}
