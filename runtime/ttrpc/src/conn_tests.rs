//! Client ↔ server tests over real unix sockets, plus an interop test against Go ttrpc
//! (`containerd-shim-runc-v2`).

use std::sync::Arc;
use std::time::Duration;

use berth_proto::containerd::task::v2::{ConnectRequest, ConnectResponse, ShutdownRequest};
use berth_testutil::{require_binary, require_root, skip};
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::wire::{self, Frame, KeyValue, Request, Response};
use crate::*;

const TASK: &str = "containerd.task.v2.Task";

struct TestTask;

impl Service for TestTask {
    fn name(&self) -> &str {
        TASK
    }

    fn call(&self, method: &str, ctx: Context, payload: Vec<u8>) -> HandlerFuture {
        match method {
            "Connect" => unary(&payload, |req: ConnectRequest| async move {
                Ok(ConnectResponse {
                    shim_pid: 42,
                    task_pid: 0,
                    version: req.id,
                })
            }),
            "Fail" => unary(&payload, |_: ConnectRequest| async move {
                Err::<ConnectResponse, _>(status(code::NOT_FOUND, "no such thing"))
            }),
            "Sleep" => unary(&payload, |req: ConnectRequest| async move {
                let ms = req.id.parse().unwrap_or(5_000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(ConnectResponse {
                    shim_pid: 1,
                    ..Default::default()
                })
            }),
            "Metadata" => {
                let ns = ctx
                    .get("containerd-namespace-ttrpc")
                    .unwrap_or("")
                    .to_owned();
                let has_timeout = ctx.timeout.is_some();
                unary(&payload, move |_: ConnectRequest| async move {
                    Ok(ConnectResponse {
                        shim_pid: u32::from(has_timeout),
                        task_pid: 0,
                        version: ns,
                    })
                })
            }
            other => unimplemented_method(other),
        }
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Harness {
    fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ttrpc.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut server = Server::new();
        server.add_service(Arc::new(TestTask));
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(server.serve(listener, async move {
            let _ = rx.await;
        }));
        Harness {
            _dir: dir,
            path,
            stop: Some(tx),
            server,
        }
    }

    async fn client(&self) -> Client {
        Client::connect(&self.path).await.unwrap()
    }

    async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.server.await.unwrap().unwrap();
    }
}

fn connect_req(id: &str) -> ConnectRequest {
    ConnectRequest { id: id.to_owned() }
}

#[tokio::test]
async fn unary_ok() {
    let h = Harness::start();
    let client = h.client().await;
    let resp: ConnectResponse = client
        .call(TASK, "Connect", &connect_req("abc"), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(resp.shim_pid, 42);
    assert_eq!(resp.version, "abc");
    assert!(!client.is_closed());

    // Also through the address forms.
    let addr = format!("unix://{}", h.path.display());
    let c2 = Client::connect_address(&addr).await.unwrap();
    let resp: ConnectResponse = c2
        .call(TASK, "Connect", &connect_req("x"), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(resp.version, "x");
    let c3 = Client::connect_address(h.path.to_str().unwrap())
        .await
        .unwrap();
    let _: ConnectResponse = c3
        .call(TASK, "Connect", &connect_req("y"), CallOptions::default())
        .await
        .unwrap();
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_service_and_method_are_unimplemented() {
    let h = Harness::start();
    let client = h.client().await;
    let err = client
        .call::<_, ConnectResponse>(TASK, "Nope", &connect_req(""), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(code::UNIMPLEMENTED), "{err}");
    assert_eq!(err.to_string(), "code 12: method Nope");
    let err = client
        .call::<_, ConnectResponse>("x.Y", "Connect", &connect_req(""), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(code::UNIMPLEMENTED), "{err}");
    assert_eq!(err.to_string(), "code 12: service x.Y");
    h.shutdown().await;
}

#[tokio::test]
async fn handler_error_is_propagated() {
    let h = Harness::start();
    let client = h.client().await;
    let err = client
        .call::<_, ConnectResponse>(TASK, "Fail", &connect_req(""), CallOptions::default())
        .await
        .unwrap_err();
    match &err {
        TtrpcError::Status(st) => {
            assert_eq!(st.code, code::NOT_FOUND);
            assert_eq!(st.message, "no such thing");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.to_string(), "code 5: no such thing");
    h.shutdown().await;
}

#[tokio::test]
async fn hundred_concurrent_calls_on_one_client() {
    let h = Harness::start();
    let client = h.client().await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..100u32 {
        let client = client.clone();
        set.spawn(async move {
            // Interleave slow calls so responses come back out of order.
            let (method, id) = if i % 10 == 0 {
                ("Sleep", "50".to_owned())
            } else {
                ("Connect", format!("call-{i}"))
            };
            let resp: ConnectResponse = client
                .call(TASK, method, &connect_req(&id), CallOptions::default())
                .await
                .unwrap();
            (i, resp)
        });
    }
    let mut seen = 0;
    while let Some(res) = set.join_next().await {
        let (i, resp) = res.unwrap();
        if i % 10 == 0 {
            assert_eq!(resp.shim_pid, 1);
        } else {
            assert_eq!(resp.version, format!("call-{i}"));
            assert_eq!(resp.shim_pid, 42);
        }
        seen += 1;
    }
    assert_eq!(seen, 100);
    h.shutdown().await;
}

#[tokio::test]
async fn call_timeout() {
    let h = Harness::start();
    let client = h.client().await;
    let started = std::time::Instant::now();
    let err = client
        .call::<_, ConnectResponse>(
            TASK,
            "Sleep",
            &connect_req("5000"),
            CallOptions {
                timeout: Some(Duration::from_millis(100)),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(err.code(), Some(code::DEADLINE_EXCEEDED), "{err}");
    // The connection stays usable after a timed-out call.
    let resp: ConnectResponse = client
        .call(
            TASK,
            "Connect",
            &connect_req("after"),
            CallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version, "after");
    h.shutdown().await;
}

#[tokio::test]
async fn metadata_and_timeout_reach_the_handler() {
    let h = Harness::start();
    let client = h.client().await;
    let resp: ConnectResponse = client
        .call(
            TASK,
            "Metadata",
            &connect_req(""),
            CallOptions {
                timeout: Some(Duration::from_secs(10)),
                metadata: vec![("containerd-namespace-ttrpc".into(), "default".into())],
            },
        )
        .await
        .unwrap();
    assert_eq!(resp.version, "default");
    assert_eq!(resp.shim_pid, 1);
    let resp: ConnectResponse = client
        .call(TASK, "Metadata", &connect_req(""), CallOptions::default())
        .await
        .unwrap();
    assert_eq!((resp.version.as_str(), resp.shim_pid), ("", 0));
    h.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_then_closes() {
    let h = Harness::start();
    let client = h.client().await;
    let idle = h.client().await;
    let _: ConnectResponse = idle
        .call(TASK, "Connect", &connect_req(""), CallOptions::default())
        .await
        .unwrap();

    let slow = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call::<_, ConnectResponse>(
                    TASK,
                    "Sleep",
                    &connect_req("300"),
                    CallOptions::default(),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let path = h.path.clone();
    h.shutdown().await;

    // The in-flight call was answered before the connection closed.
    assert_eq!(slow.await.unwrap().unwrap().shim_pid, 1);
    for c in [&client, &idle] {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !c.is_closed() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("client notices the closed connection");
        let err = c
            .call::<_, ConnectResponse>(TASK, "Connect", &connect_req(""), CallOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, TtrpcError::Closed), "{err:?}");
        assert_eq!(err.code(), Some(code::UNAVAILABLE));
    }
    // No longer accepting.
    assert!(Client::connect(&path).await.is_err());
}

/// Writes raw frames and reads raw responses.
async fn raw_exchange(stream: &mut UnixStream, frame: &[u8]) -> (u32, Response) {
    stream.write_all(frame).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), wire::read_frame(stream))
        .await
        .unwrap()
        .unwrap()
    {
        Some(Frame::Message(h, p)) => {
            assert_eq!(h.kind, wire::TYPE_RESPONSE);
            (h.stream_id, Response::decode(&p[..]).unwrap())
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn oversized_frames_are_refused() {
    let h = Harness::start();

    // Server side: a frame above 4 MiB gets ResourceExhausted on its stream id, and the
    // connection keeps working.
    let mut raw = UnixStream::connect(&h.path).await.unwrap();
    let len = wire::MAX_MESSAGE_LEN + 10;
    let mut frame = wire::FrameHeader {
        length: len as u32,
        stream_id: 7,
        kind: wire::TYPE_REQUEST,
        flags: 0,
    }
    .to_bytes()
    .to_vec();
    frame.resize(wire::HEADER_LEN + len, 0);
    let (id, resp) = raw_exchange(&mut raw, &frame).await;
    assert_eq!(id, 7);
    assert_eq!(resp.status.unwrap().code, code::RESOURCE_EXHAUSTED);
    let req = Request {
        service: TASK.into(),
        method: "Connect".into(),
        payload: connect_req("still").encode_to_vec(),
        ..Default::default()
    };
    let (id, resp) = raw_exchange(
        &mut raw,
        &wire::encode_frame(9, wire::TYPE_REQUEST, &req.encode_to_vec()),
    )
    .await;
    assert_eq!(id, 9);
    assert!(resp.status.is_none());
    assert_eq!(
        ConnectResponse::decode(&resp.payload[..]).unwrap().version,
        "still"
    );

    // Client side: refuses to send it.
    let client = h.client().await;
    let big = ConnectRequest {
        id: "x".repeat(wire::MAX_MESSAGE_LEN + 1),
    };
    let err = client
        .call::<_, ConnectResponse>(TASK, "Connect", &big, CallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, TtrpcError::TooLarge(_)), "{err:?}");
    assert!(!client.is_closed());
    h.shutdown().await;
}

#[tokio::test]
async fn raw_protocol_rules() {
    let h = Harness::start();
    let mut raw = UnixStream::connect(&h.path).await.unwrap();

    // Even stream ids are rejected.
    let req = Request {
        service: TASK.into(),
        method: "Connect".into(),
        ..Default::default()
    };
    let (id, resp) = raw_exchange(
        &mut raw,
        &wire::encode_frame(2, wire::TYPE_REQUEST, &req.encode_to_vec()),
    )
    .await;
    assert_eq!(id, 2);
    assert_eq!(resp.status.unwrap().code, code::INVALID_ARGUMENT);

    // The server enforces timeout_nano itself.
    let req = Request {
        service: TASK.into(),
        method: "Sleep".into(),
        payload: connect_req("5000").encode_to_vec(),
        timeout_nano: 50_000_000,
        metadata: vec![KeyValue {
            key: "k".into(),
            value: "v".into(),
        }],
    };
    let (id, resp) = raw_exchange(
        &mut raw,
        &wire::encode_frame(11, wire::TYPE_REQUEST, &req.encode_to_vec()),
    )
    .await;
    assert_eq!(id, 11);
    assert_eq!(resp.status.unwrap().code, code::DEADLINE_EXCEEDED);

    // Undecodable payload → InvalidArgument.
    let req = Request {
        service: TASK.into(),
        method: "Connect".into(),
        payload: vec![0xff, 0xff, 0xff],
        ..Default::default()
    };
    let (_, resp) = raw_exchange(
        &mut raw,
        &wire::encode_frame(13, wire::TYPE_REQUEST, &req.encode_to_vec()),
    )
    .await;
    assert_eq!(resp.status.unwrap().code, code::INVALID_ARGUMENT);
    h.shutdown().await;
}

#[tokio::test]
async fn abstract_socket_address() {
    let name = format!("berth-ttrpc-test-{}", std::process::id());
    let std_listener = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        std::os::unix::net::UnixListener::bind_addr(&addr).unwrap()
    };
    std_listener.set_nonblocking(true).unwrap();
    let listener = UnixListener::from_std(std_listener).unwrap();
    let mut server = Server::new();
    server.add_service(Arc::new(TestTask));
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async move {
        let _ = rx.await;
    }));
    for addr in [format!("@{name}"), format!("unix://@{name}")] {
        let client = Client::connect_address(&addr).await.unwrap();
        let resp: ConnectResponse = client
            .call(TASK, "Connect", &connect_req("abs"), CallOptions::default())
            .await
            .unwrap();
        assert_eq!(resp.version, "abs");
    }
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

/// Interop with Go ttrpc: start the Debian containerd's runc v2 shim and talk to its
/// `containerd.task.v2.Task` service.
#[tokio::test]
async fn interop_with_go_shim() {
    const SHIM: &str = "/usr/bin/containerd-shim-runc-v2";
    // Root: the shim serves under /run/containerd/s.
    if !require_root() || !require_binary(SHIM) {
        return;
    }
    let bundle = tempfile::tempdir().unwrap();
    std::fs::write(bundle.path().join("config.json"), "{}").unwrap();
    let log = bundle.path().join("log");
    nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Read-write open never blocks and keeps a reader on the fifo for the shim's log.
    let _log_reader = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&log)
        .unwrap();
    let id = format!("ttrpc-interop-{}", std::process::id());
    // The socket path is a hash of (address, namespace, id): a unique address keeps it unique.
    let fake_daemon = bundle.path().join("containerd.sock");
    let out = tokio::process::Command::new(SHIM)
        .args(["-namespace", "berth-ttrpc-test", "-id", &id, "-address"])
        .arg(&fake_daemon)
        .args(["-publish-binary", "/bin/true", "start"])
        .current_dir(bundle.path())
        .stdin(std::process::Stdio::null())
        .output();
    let out = match tokio::time::timeout(Duration::from_secs(10), out).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            skip(&format!("cannot run the shim: {e}"));
            return;
        }
        Err(_) => {
            skip("shim start timed out");
            return;
        }
    };
    let address = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || !address.starts_with("unix://") {
        skip(&format!(
            "shim start failed: {} {address} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        return;
    }

    let client = Client::connect_address(&address).await.unwrap();
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(5)),
        metadata: vec![(
            "containerd-namespace-ttrpc".into(),
            "berth-ttrpc-test".into(),
        )],
    };
    let resp: ConnectResponse = client
        .call(TASK, "Connect", &connect_req(&id), opts.clone())
        .await
        .unwrap();
    assert!(resp.shim_pid > 0, "{resp:?}");

    // Go's unknown-method answer.
    let err = client
        .call::<_, ConnectResponse>(TASK, "NoSuchMethod", &connect_req(&id), opts.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(code::UNIMPLEMENTED), "{err}");

    // Shutdown: the shim may answer or exit first; either way the connection closes.
    match client
        .call::<_, ()>(
            TASK,
            "Shutdown",
            &ShutdownRequest {
                id: id.clone(),
                now: true,
            },
            opts,
        )
        .await
    {
        Ok(()) | Err(TtrpcError::Closed) => {}
        Err(e) => panic!("shutdown: {e:?}"),
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while !client.is_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("shim closes the connection after Shutdown");
    let _ = std::fs::remove_file(address.trim_start_matches("unix://"));
}
