//! CRI streaming as the kubelet and kubectl use it: Exec, Attach and PortForward hand out a
//! URL, and a SPDY/3.1 client (berth-cri's `streaming::spdy::client`) speaks the
//! remotecommand (`v4.channel.k8s.io`) and `portforward.k8s.io` protocols to it. Exec with
//! and without a terminal, stdin on and off, the exit code in the status, a resize seen by
//! `stty size`; two attachers of a running container sharing its output and stdin;
//! port-forward to an HTTP server in a pod and in a host-network pod; a client gone mid-exec
//! ends the process; a token works once.
//!
//! The SPDY cases also run against a private containerd 1.6 (`reference_containerd_*`); the
//! WebSocket ones (exec and attach with `v5`/`v4.channel.k8s.io`, channel-framed port-forward
//! with its port prefixes; newer than containerd 1.6's streaming server) run on berthd only.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::time::{Duration, Instant};

use berth_cri::streaming::spdy::client::{connect, Upgraded};
use berth_cri::streaming::spdy::conn::Stream;
use berth_cri::streaming::spdy::headers::Headers;
use berth_cri::streaming::spdy::SpdyError;
use berth_integration::cri::leftovers::processes_mentioning;
use berth_integration::cri::{free_port, require_cri, CriClient, CriEnv, CriEnvOptions};
use berth_proto::runtime::v1::{
    AttachRequest, ExecRequest, NamespaceMode, NamespaceOption, PortForwardRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REMOTECOMMAND: &str = "v4.channel.k8s.io";
const PORTFORWARD: &str = "portforward.k8s.io";
const WAIT: Duration = Duration::from_secs(20);

async fn env(reference: bool) -> CriEnv {
    CriEnv::start_with(CriEnvOptions {
        containerd: reference,
        ..CriEnvOptions::default()
    })
    .await
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    let mut h = Headers::new();
    for (k, v) in pairs {
        h.add(k, v);
    }
    h
}

/// The client's streams of one remotecommand session.
struct Session {
    up: Upgraded,
    error: Stream,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

/// Upgrades to `url` and opens the streams (error first, as client-go).
async fn session(url: &str, stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Session {
    let up = connect(url, &[REMOTECOMMAND])
        .await
        .unwrap_or_else(|e| panic!("upgrade {url}: {e}"));
    assert_eq!(up.protocol.as_deref(), Some(REMOTECOMMAND));
    let open = |kind: &'static str, fin: bool| {
        let conn = up.conn.clone();
        async move {
            conn.open_stream(headers(&[("streamType", kind)]), fin)
                .await
                .unwrap_or_else(|e| panic!("open {kind} stream: {e}"))
        }
    };
    let error = open("error", true).await;
    let stdin_s = if stdin {
        Some(open("stdin", false).await)
    } else {
        None
    };
    let stdout_s = if stdout {
        Some(open("stdout", true).await)
    } else {
        None
    };
    let stderr_s = if stderr && !tty {
        Some(open("stderr", true).await)
    } else {
        None
    };
    let resize = if tty {
        Some(open("resize", false).await)
    } else {
        None
    };
    Session {
        up,
        error,
        stdin: stdin_s,
        stdout: stdout_s,
        stderr: stderr_s,
        resize,
    }
}

/// Reads a stream to its end (within [`WAIT`]) as text.
async fn text(s: &mut Stream) -> String {
    let bytes = tokio::time::timeout(WAIT, s.read_to_end_vec())
        .await
        .expect("the stream ends in time")
        .expect("read the stream");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The exit code the error stream reports: 0 for `Success`, the `ExitCode` cause otherwise.
fn exit_code(status: &str) -> i32 {
    if status.is_empty() {
        return 0;
    }
    let v: serde_json::Value =
        serde_json::from_str(status).unwrap_or_else(|e| panic!("status {status:?}: {e}"));
    if v["status"] == "Success" {
        return 0;
    }
    v["details"]["causes"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["reason"] == "ExitCode"))
        .and_then(|c| c["message"].as_str())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no exit code in {status}"))
}

async fn exec_url(cri: &mut CriClient, id: &str, cmd: &[&str], stdin: bool, tty: bool) -> String {
    cri.runtime
        .exec(ExecRequest {
            container_id: id.to_owned(),
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        })
        .await
        .expect("Exec")
        .into_inner()
        .url
}

/// Polls until no process mentions `needle`; panics after [`WAIT`].
async fn wait_gone(needle: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = processes_mentioning(needle);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still running: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What berthd's open descriptors point at (empty on the reference: its fds are not ours to
/// count).
fn fds(env: &CriEnv) -> Vec<String> {
    if env.is_reference() {
        return Vec::new();
    }
    let dir = format!("/proc/{}/fd", env.daemon().pid());
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.display().to_string())
        .collect();
    out.sort();
    out
}

/// Polls until berthd holds no more descriptors than `before`; panics after [`WAIT`] with
/// what it holds.
async fn fds_settle(env: &CriEnv, before: &[String]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = fds(env);
        if now.len() <= before.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "berthd holds {} descriptors, {} before: {:?}",
            now.len(),
            before.len(),
            now.iter()
                .filter(|f| !before.contains(f))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn start_pod(env: &CriEnv, cri: &mut CriClient, name: &str) -> (String, String) {
    let (pod, pod_id) = env.busybox_pod(cri, name).await;
    let config = env.busybox_container("main", &["sleep", "3600"]);
    let id = cri
        .run_container(&pod_id, &config, &pod)
        .await
        .expect("run the sleeper");
    (pod_id, id)
}

/// A pod named `name` with a container (stdin open) that echoes each line it reads as
/// `got:<line>` and prints `bye` when stdin closes; returns the pod's and the container's ids.
async fn start_reader(
    env: &CriEnv,
    cri: &mut CriClient,
    name: &str,
    bye: &str,
) -> (String, String) {
    let (pod, pod_id) = env.busybox_pod(cri, name).await;
    let script = format!("while read l; do echo got:$l; done; echo {bye}");
    let mut config = env.busybox_container("echo", &["sh", "-c", &script]);
    config.stdin = true;
    let id = cri
        .run_container(&pod_id, &config, &pod)
        .await
        .expect("run the reader");
    (pod_id, id)
}

async fn exec_streams(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = env(reference).await;
    let mut cri = env.client().await;
    let (pod_id, id) = start_pod(&env, &mut cri, "exec").await;
    let before = fds(&env);

    // No terminal, no stdin: both streams and the exit code.
    let url = exec_url(
        &mut cri,
        &id,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        false,
        false,
    )
    .await;
    let mut s = session(&url, false, true, true, false).await;
    let out = text(s.stdout.as_mut().expect("stdout")).await;
    let err = text(s.stderr.as_mut().expect("stderr")).await;
    let status = text(&mut s.error).await;
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    assert_eq!(exit_code(&status), 3, "{status}");

    // A token works once.
    match connect(&url, &[REMOTECOMMAND]).await {
        Err(SpdyError::Refused { status, .. }) => assert_eq!(status, 404),
        other => panic!("a reused token must be refused with 404: {other:?}"),
    }

    // stdin echoed back; its end ends `cat`.
    let url = exec_url(&mut cri, &id, &["cat"], true, false).await;
    let mut s = session(&url, true, true, true, false).await;
    let mut stdin = s.stdin.take().expect("stdin");
    stdin
        .write_all(b"hello\nworld\n")
        .await
        .expect("send stdin");
    stdin.shutdown().await.expect("close stdin");
    assert_eq!(
        text(s.stdout.as_mut().expect("stdout")).await,
        "hello\nworld\n"
    );
    assert_eq!(exit_code(&text(&mut s.error).await), 0);

    // A terminal: a resize while it runs is what `stty size` says.
    let url = exec_url(
        &mut cri,
        &id,
        &["sh", "-c", "read x; stty size; exit 5"],
        true,
        true,
    )
    .await;
    let mut s = session(&url, true, true, false, true).await;
    let mut resize = s.resize.take().expect("resize");
    resize
        .write_all(br#"{"Width":80,"Height":24}"#)
        .await
        .expect("resize");
    tokio::time::sleep(Duration::from_millis(500)).await;
    resize
        .write_all(br#"{"Width":123,"Height":45}"#)
        .await
        .expect("resize");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut stdin = s.stdin.take().expect("stdin");
    stdin.write_all(b"go\r").await.expect("send stdin");
    let out = text(s.stdout.as_mut().expect("stdout")).await;
    assert!(out.contains("45 123"), "stty size said {out:?}");
    assert_eq!(exit_code(&text(&mut s.error).await), 5);
    drop((stdin, resize, s));
    // No FIFO, pipe or connection of these sessions is left in berthd.
    fds_settle(&env, &before).await;

    // A client gone mid-exec ends the process (Berth; containerd 1.6 runs a streaming exec
    // under a background context and leaves it running).
    if reference {
        cri.stop_and_remove_pod(&pod_id)
            .await
            .expect("remove the pod");
        return;
    }
    let url = exec_url(&mut cri, &id, &["sleep", "4321"], true, false).await;
    let s = session(&url, true, true, true, false).await;
    let deadline = Instant::now() + WAIT;
    while processes_mentioning("sleep 4321").is_empty() {
        assert!(Instant::now() < deadline, "the exec never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.up.conn.abort();
    drop(s);
    wait_gone("sleep 4321").await;
    fds_settle(&env, &before).await;

    cri.stop_and_remove_pod(&pod_id)
        .await
        .expect("remove the pod");
}

async fn attach_url(cri: &mut CriClient, id: &str, stdin: bool) -> String {
    cri.runtime
        .attach(AttachRequest {
            container_id: id.to_owned(),
            stdin,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .expect("Attach")
        .into_inner()
        .url
}

/// Reads what `s` has within a moment.
async fn read_some(s: &mut Stream, seen: &mut String) {
    let mut buf = [0u8; 4096];
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Reads `s` until `want` appeared; panics after [`WAIT`].
async fn read_until(s: &mut Stream, seen: &mut String, want: &str) {
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    while !seen.contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want:?} in {seen:?}"))
            .expect("read");
        assert!(n > 0, "the stream ended before {want:?}: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

async fn attach_two(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = env(reference).await;
    let mut cri = env.client().await;
    let (pod_id, id) = start_reader(&env, &mut cri, "attach", "bye").await;
    let before = fds(&env);

    let url = attach_url(&mut cri, &id, true).await;
    let mut a = session(&url, true, true, true, false).await;
    let url = attach_url(&mut cri, &id, true).await;
    let mut b = session(&url, true, true, true, false).await;
    let (mut seen_a, mut seen_b) = (String::new(), String::new());
    let mut a_in = a.stdin.take().expect("stdin");
    let mut a_out = a.stdout.take().expect("stdout");
    let mut b_out = b.stdout.take().expect("stdout");
    // Nothing tells a client when its attach is live: send until both see a line.
    let deadline = Instant::now() + WAIT;
    while !(seen_a.contains("got:sync\n") && seen_b.contains("got:sync\n")) {
        assert!(
            Instant::now() < deadline,
            "attachers never live: {seen_a:?} {seen_b:?}"
        );
        a_in.write_all(b"sync\n").await.expect("send");
        read_some(&mut a_out, &mut seen_a).await;
        read_some(&mut b_out, &mut seen_b).await;
    }
    a_in.write_all(b"one\n").await.expect("send");
    read_until(&mut a_out, &mut seen_a, "got:one\n").await;
    read_until(&mut b_out, &mut seen_b, "got:one\n").await;
    let mut b_in = b.stdin.take().expect("stdin");
    b_in.write_all(b"two\n").await.expect("send");
    read_until(&mut a_out, &mut seen_a, "got:two\n").await;
    read_until(&mut b_out, &mut seen_b, "got:two\n").await;
    // A leaves; B still gets the output.
    a.up.conn.abort();
    drop((a, a_in, a_out));
    b_in.write_all(b"three\n").await.expect("send");
    read_until(&mut b_out, &mut seen_b, "got:three\n").await;
    let lines: Vec<&str> = seen_b.lines().filter(|l| *l != "got:sync").collect();
    assert_eq!(lines, ["got:one", "got:two", "got:three"], "{seen_b:?}");
    // The container still runs: its stdin was not closed by A's leaving.
    let status = cri
        .container_status(&id, false)
        .await
        .expect("ContainerStatus")
        .status
        .expect("a status");
    assert_eq!(status.state, 1, "running: {status:?}");
    drop((b, b_in, b_out));
    fds_settle(&env, &before).await;
    cri.stop_and_remove_pod(&pod_id)
        .await
        .expect("remove the pod");
}

/// GETs `/` through a port-forward to `port` of `pod_id`: the answer and what the error
/// stream said.
async fn forward_get(cri: &mut CriClient, pod_id: &str, port: u16) -> (String, String) {
    let url = cri
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod_id.to_owned(),
            port: vec![i32::from(port)],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let up = connect(&url, &[PORTFORWARD])
        .await
        .unwrap_or_else(|e| panic!("upgrade {url}: {e}"));
    let p = port.to_string();
    let mut error = up
        .conn
        .open_stream(
            headers(&[("streamType", "error"), ("port", &p), ("requestID", "0")]),
            true,
        )
        .await
        .expect("open the error stream");
    let mut data = up
        .conn
        .open_stream(
            headers(&[("streamType", "data"), ("port", &p), ("requestID", "0")]),
            false,
        )
        .await
        .expect("open the data stream");
    data.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
        .await
        .expect("send the request");
    let answer = text(&mut data).await;
    let err = tokio::time::timeout(Duration::from_secs(2), error.read_to_end_vec())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    up.conn.close().await;
    (answer, String::from_utf8_lossy(&err).into_owned())
}

/// [`forward_get`] until the answer holds `body` (the server may still be starting).
async fn forward_get_until(cri: &mut CriClient, pod_id: &str, port: u16, body: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (answer, err) = forward_get(cri, pod_id, port).await;
        if answer.contains(body) {
            assert!(err.is_empty(), "error stream: {err}");
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "no {body:?} through the forward: {answer:?}, error stream: {err}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn port_forward(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = env(reference).await;
    let mut cri = env.client().await;
    let server = |port: u16, body: &str| {
        format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 127.0.0.1:{port} -h /www")
    };
    // A pod with its own network: the server listens on the pod's loopback only.
    let (pod, pod_id) = env.busybox_pod(&mut cri, "pf").await;
    let script = server(8080, "hello-from-pod");
    let config = env.busybox_container("httpd", &["sh", "-c", &script]);
    cri.run_container(&pod_id, &config, &pod)
        .await
        .expect("run httpd");
    let before = fds(&env);
    let answer = forward_get_until(&mut cri, &pod_id, 8080, "hello-from-pod").await;
    assert!(answer.starts_with("HTTP/1."), "{answer}");
    // Nothing listens on another port: the error stream says so.
    let (answer, err) = forward_get(&mut cri, &pod_id, 8081).await;
    assert!(answer.is_empty(), "{answer}");
    assert!(err.contains("8081"), "error stream: {err}");
    fds_settle(&env, &before).await;

    // A client gone while the pod's side stays silent (and open) ends the forward too.
    let config = env.busybox_container(
        "silent",
        &["nc", "-ll", "-p", "9000", "-e", "sleep", "1234"],
    );
    cri.run_container(&pod_id, &config, &pod)
        .await
        .expect("run the silent server");
    let before = fds(&env);
    let url = cri
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod_id.clone(),
            port: vec![9000],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let up = connect(&url, &[PORTFORWARD]).await.expect("upgrade");
    let pair = [("port", "9000"), ("requestID", "0")];
    let _error = up
        .conn
        .open_stream(
            headers(&[&[("streamType", "error")], &pair[..]].concat()),
            true,
        )
        .await
        .expect("open the error stream");
    let _data = up
        .conn
        .open_stream(
            headers(&[&[("streamType", "data")], &pair[..]].concat()),
            false,
        )
        .await
        .expect("open the data stream");
    let deadline = Instant::now() + WAIT;
    while processes_mentioning("sleep 1234").is_empty() {
        assert!(Instant::now() < deadline, "the forward never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    up.conn.abort();
    drop(up);
    fds_settle(&env, &before).await;

    // A host-network pod: the host's loopback.
    let mut host = env.pod_config("pf-host");
    // A host-network pod has the host's name.
    host.hostname = String::new();
    if let Some(linux) = host.linux.as_mut() {
        let sc = linux.security_context.get_or_insert_with(Default::default);
        let ns = sc
            .namespace_options
            .get_or_insert_with(NamespaceOption::default);
        ns.network = NamespaceMode::Node as i32;
    }
    let host_id = cri.run_pod(&host).await.expect("RunPodSandbox host");
    let port = free_port();
    let script = server(port, "hello-from-host");
    let config = env.busybox_container("httpd", &["sh", "-c", &script]);
    cri.run_container(&host_id, &config, &host)
        .await
        .expect("run httpd in the host network");
    forward_get_until(&mut cri, &host_id, port, "hello-from-host").await;

    cri.stop_and_remove_pod(&pod_id)
        .await
        .expect("remove the pod");
    cri.stop_and_remove_pod(&host_id)
        .await
        .expect("remove the host pod");
}

/// A WebSocket session's collected output: stdout, stderr, the status channel.
#[derive(Debug, Default)]
struct WsOutput {
    stdout: String,
    stderr: String,
    status: String,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens `url` as a WebSocket with `protocol` (as current kubectl does).
async fn ws_connect(url: &str, protocol: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws_url = url.replacen("http://", "ws://", 1);
    let authority = ws_url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .expect("an authority")
        .to_owned();
    let mut request = ws_url.into_client_request().expect("a request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        protocol.parse().expect("a header value"),
    );
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .expect("connect to the streaming server");
    let (ws, response) = tokio_tungstenite::client_async(request, tcp)
        .await
        .unwrap_or_else(|e| panic!("WebSocket upgrade of {url}: {e}"));
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok()),
        Some(protocol)
    );
    ws
}

/// Reads channel messages until the server closes.
async fn ws_collect(ws: &mut Ws) -> WsOutput {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut out = WsOutput::default();
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the session ends in time");
        let data = match msg {
            Some(Ok(Message::Binary(b))) => b.to_vec(),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return out,
            Some(Ok(_)) => continue,
        };
        let Some((channel, body)) = data.split_first() else {
            continue;
        };
        let text = String::from_utf8_lossy(body);
        match channel {
            1 => out.stdout.push_str(&text),
            2 => out.stderr.push_str(&text),
            3 => out.status.push_str(&text),
            _ => {}
        }
    }
}

async fn exec_over_websocket() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    const V5: &str = "v5.channel.k8s.io";
    if !require_cri() {
        return;
    }
    let env = env(false).await;
    let mut cri = env.client().await;
    let (pod_id, id) = start_pod(&env, &mut cri, "ws").await;
    let before = fds(&env);

    // stdin echoed back; v5's close of stdin ends `cat`.
    let url = exec_url(&mut cri, &id, &["cat"], true, false).await;
    let mut ws = ws_connect(&url, V5).await;
    ws.send(Message::binary(b"\x00hello\n".to_vec()))
        .await
        .expect("send stdin");
    ws.send(Message::binary(vec![255u8, 0]))
        .await
        .expect("close stdin");
    let out = ws_collect(&mut ws).await;
    assert_eq!(out.stdout, "hello\n");
    assert_eq!(exit_code(&out.status), 0, "{out:?}");

    // The exit code on the status channel.
    let url = exec_url(
        &mut cri,
        &id,
        &["sh", "-c", "echo err >&2; exit 3"],
        false,
        false,
    )
    .await;
    let mut ws = ws_connect(&url, V5).await;
    let out = ws_collect(&mut ws).await;
    assert_eq!(out.stderr, "err\n");
    assert_eq!(exit_code(&out.status), 3, "{out:?}");

    // A client gone mid-exec ends the process.
    let url = exec_url(&mut cri, &id, &["sleep", "4322"], true, false).await;
    let ws = ws_connect(&url, V5).await;
    let deadline = Instant::now() + WAIT;
    while processes_mentioning("sleep 4322").is_empty() {
        assert!(Instant::now() < deadline, "the exec never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(ws);
    wait_gone("sleep 4322").await;
    fds_settle(&env, &before).await;

    cri.stop_and_remove_pod(&pod_id)
        .await
        .expect("remove the pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_exec_over_websocket_stdin_exit_code_and_client_loss() {
    exec_over_websocket().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_exec_streams_tty_stdin_exit_codes_resize_and_client_loss() {
    exec_streams(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_exec_streams_tty_stdin_exit_codes_resize_and_client_loss() {
    exec_streams(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_two_attachers_share_output_and_stdin() {
    attach_two(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_two_attachers_share_output_and_stdin() {
    attach_two(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_port_forward_to_pod_and_host_network_pod() {
    port_forward(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_port_forward_to_pod_and_host_network_pod() {
    port_forward(true).await;
}

/// Reads channel messages for a moment and adds what `channel` carried to `seen`; `false`
/// once the server closed.
async fn ws_read_some(ws: &mut Ws, channel: u8, seen: &mut Vec<u8>) -> bool {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let msg = match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
            Err(_) => return true,
            Ok(msg) => msg,
        };
        match msg {
            Some(Ok(Message::Binary(b))) => {
                if let Some((ch, body)) = b.split_first() {
                    if *ch == channel {
                        seen.extend_from_slice(body);
                    }
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return false,
            Some(Ok(_)) => {}
        }
    }
}

/// Closes `ws` and reads until the server's side ended too.
async fn ws_close(mut ws: Ws) {
    use futures::StreamExt;
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
}

async fn attach_over_websocket() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    if !require_cri() {
        return;
    }
    let env = env(false).await;
    let mut cri = env.client().await;
    let (pod_id, id) = start_reader(&env, &mut cri, "ws-attach", "ws-attach-bye").await;
    let before = fds(&env);

    for protocol in ["v5.channel.k8s.io", "v4.channel.k8s.io"] {
        let url = attach_url(&mut cri, &id, true).await;
        let mut ws = ws_connect(&url, protocol).await;
        let mut out = Vec::new();
        // Nothing tells a client when its attach is live: send until a line comes back.
        let deadline = Instant::now() + WAIT;
        while !String::from_utf8_lossy(&out).contains("got:sync\n") {
            assert!(
                Instant::now() < deadline,
                "{protocol}: attach never live: {:?}",
                String::from_utf8_lossy(&out)
            );
            ws.send(Message::binary(b"\x00sync\n".to_vec()))
                .await
                .expect("send stdin");
            assert!(
                ws_read_some(&mut ws, 1, &mut out).await,
                "{protocol}: the server closed: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        out.clear();
        let line = format!("\x00hello-{}\n", &protocol[..2]);
        ws.send(Message::binary(line.into_bytes()))
            .await
            .expect("send stdin");
        let want = format!("got:hello-{}\n", &protocol[..2]);
        let deadline = Instant::now() + WAIT;
        while !String::from_utf8_lossy(&out).contains(&want) {
            assert!(
                Instant::now() < deadline,
                "{protocol}: no {want:?} on stdout: {:?}",
                String::from_utf8_lossy(&out)
            );
            assert!(
                ws_read_some(&mut ws, 1, &mut out).await,
                "{protocol}: the server closed: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        let lines: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| *l != "got:sync")
            .map(str::to_owned)
            .collect();
        assert_eq!(lines, [want.trim_end()], "{protocol}");
        ws_close(ws).await;
        // The container still runs: the attacher's leaving did not close its stdin.
        let status = cri
            .container_status(&id, false)
            .await
            .expect("ContainerStatus")
            .status
            .expect("a status");
        assert_eq!(status.state, 1, "{protocol}: running: {status:?}");
        fds_settle(&env, &before).await;
    }

    cri.stop_and_remove_pod(&pod_id)
        .await
        .expect("remove the pod");
    wait_gone("ws-attach-bye").await;
    fds_settle(&env, &before).await;
}

/// One GET of `/` through a channel-framed WebSocket port-forward to `port` of `pod_id`:
/// the data channel and the error channel, each without its port prefix.
async fn ws_forward_get(
    cri: &mut CriClient,
    pod_id: &str,
    port: u16,
    body: &str,
) -> (String, String) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = cri
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod_id.to_owned(),
            port: vec![i32::from(port)],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let mut ws = ws_connect(&format!("{url}?port={port}"), "v4.channel.k8s.io").await;
    ws.send(Message::binary(
        b"\x00GET / HTTP/1.0\r\nHost: pod\r\n\r\n".to_vec(),
    ))
    .await
    .expect("send the request");
    // Channel 0 is the data, 1 the errors; the first message of each is the port.
    let mut firsts: [Option<Vec<u8>>; 2] = [None, None];
    let mut rest = [Vec::new(), Vec::new()];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && !String::from_utf8_lossy(&rest[0]).contains(body)
        && rest[1].is_empty()
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(msg) = tokio::time::timeout(left, ws.next()).await else {
            break;
        };
        match msg {
            Some(Ok(Message::Binary(b))) => {
                let Some((ch, data)) = b.split_first() else {
                    continue;
                };
                let ch = usize::from(*ch);
                assert!(ch < 2, "a message on channel {ch}");
                if firsts[ch].is_none() {
                    firsts[ch] = Some(data.to_vec());
                } else {
                    rest[ch].extend_from_slice(data);
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    for (ch, first) in firsts.iter().enumerate() {
        assert_eq!(
            first.as_deref(),
            Some(&port.to_le_bytes()[..]),
            "channel {ch} starts with the port, little-endian"
        );
    }
    ws_close(ws).await;
    let [data, err] = rest;
    (
        String::from_utf8_lossy(&data).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

async fn port_forward_over_websocket() {
    if !require_cri() {
        return;
    }
    let env = env(false).await;
    let mut cri = env.client().await;
    let (pod, pod_id) = env.busybox_pod(&mut cri, "ws-pf").await;
    let script = "mkdir -p /www && echo hello-ws-forward > /www/index.html && exec httpd -f -p 127.0.0.1:8090 -h /www";
    let config = env.busybox_container("httpd", &["sh", "-c", script]);
    cri.run_container(&pod_id, &config, &pod)
        .await
        .expect("run httpd");
    let before = fds(&env);

    // The server may still be starting: ask until it answers.
    let deadline = Instant::now() + WAIT;
    let answer = loop {
        let (answer, err) = ws_forward_get(&mut cri, &pod_id, 8090, "hello-ws-forward").await;
        if answer.contains("hello-ws-forward") {
            assert!(err.is_empty(), "error channel: {err}");
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "no answer through the forward: {answer:?}, error channel: {err}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(answer.starts_with("HTTP/1."), "{answer}");
    // Nothing listens on another port: the error channel says so.
    let (answer, err) = ws_forward_get(&mut cri, &pod_id, 8091, "never").await;
    assert!(answer.is_empty(), "{answer}");
    assert!(err.contains("8091"), "error channel: {err}");
    fds_settle(&env, &before).await;

    cri.stop_and_remove_pod(&pod_id)
        .await
        .expect("remove the pod");
    wait_gone("hello-ws-forward").await;
    fds_settle(&env, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_attach_over_websocket_echoes_stdin() {
    attach_over_websocket().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_port_forward_over_websocket_to_pod() {
    port_forward_over_websocket().await;
}
