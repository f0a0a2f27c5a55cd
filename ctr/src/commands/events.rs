//! `berth events [FILTER...]`: Events.Subscribe, one line per event:
//! `<time> <namespace> <topic> <event JSON>` (ctr `events`).

use anyhow::Result;
use berth_proto::containerd::events as ev;
use berth_proto::containerd::services::events::v1::SubscribeRequest;
use berth_proto::containerd::services::images::v1 as img_ev;
use prost::Message;
use serde_json::{json, Value};

use crate::client::leases::base64url;
use crate::client::Client;
use crate::error::{Object, RpcResultExt};
use crate::output::labels_json;
use crate::timefmt;

/// Arguments of `events`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Filters (`topic==/tasks/exit`, `namespace==default`, `event.container_id==c1`).
    pub filters: Vec<String>,
}

fn ts(t: Option<&prost_types::Timestamp>) -> Value {
    match t {
        Some(t) => Value::String(timefmt::rfc3339_nano(t.seconds, t.nanos)),
        None => Value::Null,
    }
}

fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    M::decode(bytes).ok()
}

/// The event payload as JSON with containerd's (snake_case) field names; unknown types give
/// `{"type_url": …, "value": <base64>}`.
pub fn event_json(type_url: &str, bytes: &[u8]) -> Value {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    let known = match name {
        "containerd.events.ContainerCreate" => decode::<ev::ContainerCreate>(bytes).map(|e| {
            json!({"id": e.id, "image": e.image,
                   "runtime": e.runtime.map(|r| json!({"name": r.name}))})
        }),
        "containerd.events.ContainerUpdate" => decode::<ev::ContainerUpdate>(bytes).map(|e| {
            json!({"id": e.id, "image": e.image, "labels": labels_json(&e.labels), "snapshot_key": e.snapshot_key})
        }),
        "containerd.events.ContainerDelete" => {
            decode::<ev::ContainerDelete>(bytes).map(|e| json!({"id": e.id}))
        }
        "containerd.events.ContentDelete" => {
            decode::<ev::ContentDelete>(bytes).map(|e| json!({"digest": e.digest}))
        }
        "containerd.services.images.v1.ImageCreate" => decode::<img_ev::ImageCreate>(bytes)
            .map(|e| json!({"name": e.name, "labels": labels_json(&e.labels)})),
        "containerd.services.images.v1.ImageUpdate" => decode::<img_ev::ImageUpdate>(bytes)
            .map(|e| json!({"name": e.name, "labels": labels_json(&e.labels)})),
        "containerd.services.images.v1.ImageDelete" => {
            decode::<img_ev::ImageDelete>(bytes).map(|e| json!({"name": e.name}))
        }
        "containerd.events.NamespaceCreate" => decode::<ev::NamespaceCreate>(bytes)
            .map(|e| json!({"name": e.name, "labels": labels_json(&e.labels)})),
        "containerd.events.NamespaceUpdate" => decode::<ev::NamespaceUpdate>(bytes)
            .map(|e| json!({"name": e.name, "labels": labels_json(&e.labels)})),
        "containerd.events.NamespaceDelete" => {
            decode::<ev::NamespaceDelete>(bytes).map(|e| json!({"name": e.name}))
        }
        "containerd.events.SnapshotPrepare" => {
            decode::<ev::SnapshotPrepare>(bytes).map(|e| json!({"key": e.key, "parent": e.parent}))
        }
        "containerd.events.SnapshotCommit" => {
            decode::<ev::SnapshotCommit>(bytes).map(|e| json!({"key": e.key, "name": e.name}))
        }
        "containerd.events.SnapshotRemove" => {
            decode::<ev::SnapshotRemove>(bytes).map(|e| json!({"key": e.key}))
        }
        "containerd.events.TaskCreate" => decode::<ev::TaskCreate>(bytes).map(|e| {
            json!({
                "container_id": e.container_id,
                "bundle": e.bundle,
                "rootfs": e.rootfs.iter().map(|m| json!({"type": m.r#type, "source": m.source, "options": m.options})).collect::<Vec<_>>(),
                "io": e.io.map(|io| json!({"stdin": io.stdin, "stdout": io.stdout, "stderr": io.stderr, "terminal": io.terminal})),
                "checkpoint": e.checkpoint,
                "pid": e.pid,
            })
        }),
        "containerd.events.TaskStart" => decode::<ev::TaskStart>(bytes)
            .map(|e| json!({"container_id": e.container_id, "pid": e.pid})),
        "containerd.events.TaskDelete" => decode::<ev::TaskDelete>(bytes).map(|e| {
            json!({"container_id": e.container_id, "pid": e.pid, "exit_status": e.exit_status,
                   "exited_at": ts(e.exited_at.as_ref()), "id": e.id})
        }),
        "containerd.events.TaskExit" => decode::<ev::TaskExit>(bytes).map(|e| {
            json!({"container_id": e.container_id, "id": e.id, "pid": e.pid,
                   "exit_status": e.exit_status, "exited_at": ts(e.exited_at.as_ref())})
        }),
        "containerd.events.TaskOOM" => {
            decode::<ev::TaskOom>(bytes).map(|e| json!({"container_id": e.container_id}))
        }
        "containerd.events.TaskExecAdded" => decode::<ev::TaskExecAdded>(bytes)
            .map(|e| json!({"container_id": e.container_id, "exec_id": e.exec_id})),
        "containerd.events.TaskExecStarted" => decode::<ev::TaskExecStarted>(bytes)
            .map(|e| json!({"container_id": e.container_id, "exec_id": e.exec_id, "pid": e.pid})),
        "containerd.events.TaskPaused" => {
            decode::<ev::TaskPaused>(bytes).map(|e| json!({"container_id": e.container_id}))
        }
        "containerd.events.TaskResumed" => {
            decode::<ev::TaskResumed>(bytes).map(|e| json!({"container_id": e.container_id}))
        }
        "containerd.events.TaskCheckpointed" => decode::<ev::TaskCheckpointed>(bytes)
            .map(|e| json!({"container_id": e.container_id, "checkpoint": e.checkpoint})),
        _ => None,
    };
    known.unwrap_or_else(|| json!({"type_url": type_url, "value": base64url(bytes)}))
}

/// Go's `time.Time.String()` in UTC: `2006-01-02 15:04:05.999999999 +0000 UTC`.
fn go_time(t: Option<&prost_types::Timestamp>) -> String {
    let (secs, nanos) = t.map(|t| (t.seconds, t.nanos)).unwrap_or((0, 0));
    let iso = timefmt::rfc3339_nano(secs, nanos);
    let body = iso.trim_end_matches('Z').replacen('T', " ", 1);
    format!("{body} +0000 UTC")
}

/// Streams events until interrupted.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let mut stream = client
        .events()
        .subscribe(client.req(SubscribeRequest {
            filters: args.filters,
        }))
        .await
        .rpc(client, "subscribe to", Object::kind("events"))?
        .into_inner();
    while let Some(env) = stream
        .message()
        .await
        .rpc(client, "receive", Object::kind("events"))?
    {
        let payload = env
            .event
            .as_ref()
            .map(|a| event_json(&a.type_url, &a.value))
            .unwrap_or(Value::Null);
        println!(
            "{} {} {} {}",
            go_time(env.timestamp.as_ref()),
            env.namespace,
            env.topic,
            payload
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_known_events_and_falls_back() {
        let exit = ev::TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 42,
            exit_status: 137,
            exited_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
        };
        let v = event_json("containerd.events.TaskExit", &exit.encode_to_vec());
        assert_eq!(v["container_id"], "c1");
        assert_eq!(v["exit_status"], 137);
        assert_eq!(v["exited_at"], "2023-11-14T22:13:20Z");
        let img = img_ev::ImageCreate {
            name: "x".into(),
            labels: Default::default(),
        };
        let v = event_json(
            "containerd.services.images.v1.ImageCreate",
            &img.encode_to_vec(),
        );
        assert_eq!(v, json!({"name": "x", "labels": {}}));
        let v = event_json("example.Unknown", b"a");
        assert_eq!(v, json!({"type_url": "example.Unknown", "value": "YQ=="}));
    }

    #[test]
    fn time_like_go() {
        let t = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 120_000_000,
        };
        assert_eq!(go_time(Some(&t)), "2023-11-14 22:13:20.12 +0000 UTC");
    }
}
