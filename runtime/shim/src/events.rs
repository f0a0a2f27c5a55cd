//! Task events to the daemon, in order, from one forwarding task (containerd
//! `runtime/v2/shim/publisher.go`): ttrpc `Events/Forward` on `$TTRPC_ADDRESS` with the
//! namespace in `containerd-namespace-ttrpc`, a 5 s timeout per call and up to 5 retries; without
//! a ttrpc address, `<publish-binary> --address A publish --topic T --namespace N` with the
//! `Any` on stdin, as older shims did.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use berth_proto::containerd::services::events::ttrpc::v1::{Envelope, ForwardRequest};
use berth_ttrpc::{CallOptions, Client};
use prost::Message;
use prost_types::{Any, Timestamp};
use tokio::sync::{mpsc, watch};

use crate::constants::{EVENTS_SERVICE, TTRPC_NAMESPACE_HEADER};
use crate::reaper::Reaper;

const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_RETRIES: u32 = 5;

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// The daemon's ttrpc socket (`$TTRPC_ADDRESS`).
    Ttrpc(String),
    /// `<binary> --address <address> publish ...`.
    Binary {
        /// The daemon binary (`-publish-binary`).
        binary: String,
        /// The daemon's gRPC address (`-address`).
        address: String,
    },
    /// Nowhere (no daemon to tell).
    Discard,
}

impl Sink {
    /// Chooses the sink from the environment and flags.
    pub fn choose(ttrpc_address: Option<String>, publish_binary: &str, address: &str) -> Sink {
        match ttrpc_address.filter(|a| !a.is_empty()) {
            Some(addr) => Sink::Ttrpc(addr),
            None if !publish_binary.is_empty() && !address.is_empty() => Sink::Binary {
                binary: publish_binary.to_owned(),
                address: address.to_owned(),
            },
            None => Sink::Discard,
        }
    }
}

#[derive(Debug)]
struct Item {
    topic: &'static str,
    event: Any,
    timestamp: SystemTime,
}

/// Queues events for the forwarder; cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Item>,
    pending: watch::Sender<usize>,
}

/// Converts a time to a protobuf timestamp.
pub fn timestamp(t: SystemTime) -> Timestamp {
    Timestamp::from(t)
}

/// Builds the envelope containerd expects.
pub fn forward_request(namespace: &str, topic: &str, event: Any, at: SystemTime) -> ForwardRequest {
    ForwardRequest {
        envelope: Some(Envelope {
            timestamp: Some(timestamp(at)),
            namespace: namespace.to_owned(),
            topic: topic.to_owned(),
            event: Some(event),
        }),
    }
}

/// Wraps an event with its bare type URL.
pub fn any<M: Message>(type_url: &str, msg: &M) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: msg.encode_to_vec(),
    }
}

fn dial_address(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("unix://{addr}")
    }
}

impl Publisher {
    /// Starts the forwarding task for `namespace`.
    pub fn start(namespace: String, sink: Sink, reaper: Reaper) -> Publisher {
        let (tx, rx) = mpsc::unbounded_channel();
        let (pending, _) = watch::channel(0usize);
        let publisher = Publisher { tx, pending };
        let counter = publisher.pending.clone();
        tokio::spawn(forward_loop(namespace, sink, reaper, rx, counter));
        publisher
    }

    /// Queues `msg` under `topic`.
    pub fn publish<M: Message>(&self, topic: &'static str, type_url: &str, msg: &M) {
        self.pending.send_modify(|n| *n += 1);
        let item = Item {
            topic,
            event: any(type_url, msg),
            timestamp: SystemTime::now(),
        };
        if self.tx.send(item).is_err() {
            self.pending.send_modify(|n| *n = n.saturating_sub(1));
        }
    }

    /// Waits until every queued event was forwarded (or dropped), at most `limit`.
    pub async fn flush(&self, limit: Duration) {
        let mut rx = self.pending.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
    }
}

async fn forward_loop(
    namespace: String,
    sink: Sink,
    reaper: Reaper,
    mut rx: mpsc::UnboundedReceiver<Item>,
    pending: watch::Sender<usize>,
) {
    let mut client: Option<Client> = None;
    while let Some(item) = rx.recv().await {
        let req = forward_request(&namespace, item.topic, item.event, item.timestamp);
        let mut attempt = 0;
        loop {
            let result = match &sink {
                Sink::Ttrpc(addr) => forward_ttrpc(&mut client, addr, &namespace, &req).await,
                Sink::Binary { binary, address } => {
                    publish_binary(&reaper, binary, address, &namespace, &req).await
                }
                Sink::Discard => Ok(()),
            };
            match result {
                Ok(()) => break,
                Err(err) if attempt < MAX_RETRIES => {
                    attempt += 1;
                    tracing::debug!(topic = item.topic, attempt, error = %err, "retrying event");
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                }
                Err(err) => {
                    tracing::error!(topic = item.topic, error = %err, "dropping event");
                    break;
                }
            }
        }
        pending.send_modify(|n| *n = n.saturating_sub(1));
    }
}

async fn forward_ttrpc(
    client: &mut Option<Client>,
    addr: &str,
    namespace: &str,
    req: &ForwardRequest,
) -> Result<(), String> {
    if client.is_none() {
        let c = Client::connect_address(&dial_address(addr))
            .await
            .map_err(|e| format!("dial {addr}: {e}"))?;
        *client = Some(c);
    }
    let Some(c) = client.as_ref() else {
        return Err("no client".into());
    };
    let opts = CallOptions {
        timeout: Some(FORWARD_TIMEOUT),
        metadata: vec![(TTRPC_NAMESPACE_HEADER.to_owned(), namespace.to_owned())],
    };
    match c
        .call::<ForwardRequest, ()>(EVENTS_SERVICE, "Forward", req, opts)
        .await
    {
        Ok(()) => Ok(()),
        Err(err) => {
            // Reconnect on the next attempt.
            *client = None;
            Err(err.to_string())
        }
    }
}

async fn publish_binary(
    reaper: &Reaper,
    binary: &str,
    address: &str,
    namespace: &str,
    req: &ForwardRequest,
) -> Result<(), String> {
    let Some(env) = &req.envelope else {
        return Ok(());
    };
    let payload = env
        .event
        .as_ref()
        .map(Message::encode_to_vec)
        .unwrap_or_default();
    let mut cmd = Command::new(binary);
    cmd.args([
        "--address",
        address,
        "publish",
        "--topic",
        &env.topic,
        "--namespace",
        namespace,
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let (mut child, mut sub) = reaper
        .spawn(&mut cmd)
        .map_err(|e| format!("exec {binary}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // The event is small: well under a pipe buffer, so this cannot block.
        let _ = stdin.write_all(&payload);
    }
    let pid = i32::try_from(child.id()).unwrap_or(-1);
    match tokio::time::timeout(FORWARD_TIMEOUT, sub.wait_for(pid)).await {
        Ok(Some(exit)) if exit.status == 0 => Ok(()),
        Ok(Some(exit)) => Err(format!("{binary} publish: exit status {}", exit.status)),
        Ok(None) => Err("exit monitor stopped".into()),
        Err(_) => Err(format!("{binary} publish: timed out")),
    }
}

#[cfg(test)]
mod tests {
    use berth_proto::containerd::events::TaskOom;

    use super::*;

    #[test]
    fn sink_choice() {
        assert_eq!(
            Sink::choose(
                Some("/run/c.sock.ttrpc".into()),
                "/bin/containerd",
                "/run/c.sock"
            ),
            Sink::Ttrpc("/run/c.sock.ttrpc".into())
        );
        assert_eq!(
            Sink::choose(None, "/bin/containerd", "/run/c.sock"),
            Sink::Binary {
                binary: "/bin/containerd".into(),
                address: "/run/c.sock".into()
            }
        );
        assert_eq!(Sink::choose(Some(String::new()), "", ""), Sink::Discard);
    }

    #[tokio::test]
    async fn publish_binary_fallback_gets_topic_namespace_and_any() {
        use std::os::unix::fs::PermissionsExt;

        let _serial = crate::reaper::TEST_FORK_LOCK.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-containerd");
        let out = dir.path().join("out");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$@\" > {o}.args\ncat > {o}.stdin\n",
                o = out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let reaper = Reaper::new();
        reaper.run().unwrap();
        let sink = Sink::choose(None, &script.display().to_string(), "/run/x.sock");
        let publisher = Publisher::start("ns1".into(), sink, reaper);
        let ev = TaskOom {
            container_id: "c1".into(),
        };
        publisher.publish(
            crate::constants::topic::TASK_OOM,
            crate::constants::type_url::TASK_OOM,
            &ev,
        );
        publisher.flush(Duration::from_secs(10)).await;
        let args = std::fs::read_to_string(dir.path().join("out.args")).unwrap();
        assert_eq!(
            args.trim(),
            "--address /run/x.sock publish --topic /tasks/oom --namespace ns1"
        );
        let stdin = std::fs::read(dir.path().join("out.stdin")).unwrap();
        let any = Any::decode(&*stdin).unwrap();
        assert_eq!(any.type_url, "containerd.events.TaskOOM");
        assert_eq!(TaskOom::decode(&*any.value).unwrap(), ev);
    }

    #[test]
    fn envelope_and_bare_type_url() {
        let ev = TaskOom {
            container_id: "c".into(),
        };
        let req = forward_request(
            "default",
            crate::constants::topic::TASK_OOM,
            any(crate::constants::type_url::TASK_OOM, &ev),
            SystemTime::UNIX_EPOCH + Duration::from_secs(5),
        );
        let env = req.envelope.unwrap();
        assert_eq!(env.namespace, "default");
        assert_eq!(env.topic, "/tasks/oom");
        assert_eq!(env.timestamp.unwrap().seconds, 5);
        let event = env.event.unwrap();
        assert_eq!(event.type_url, "containerd.events.TaskOOM");
        assert_eq!(TaskOom::decode(&*event.value).unwrap(), ev);
        assert_eq!(dial_address("/x"), "unix:///x");
        assert_eq!(dial_address("unix:///x"), "unix:///x");
    }
}
