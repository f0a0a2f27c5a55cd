//! The streaming server end to end over TCP, with this crate's SPDY client and a fake
//! [`StreamRuntime`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::runtime::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::server::StreamServer;
use super::spdy::client::{connect, Upgraded};
use super::spdy::{Headers, SpdyError, Stream};
use super::{ClientStream, StdioStreams, StreamRuntime};
use crate::config::CriConfig;
use crate::error::{CriError, Result};

#[derive(Default)]
struct Fake {
    running: AtomicUsize,
}

#[tonic::async_trait]
impl StreamRuntime for Fake {
    async fn exec(&self, _id: &str, cmd: Vec<String>, mut s: StdioStreams) -> Result<i32> {
        self.running.fetch_add(1, Ordering::SeqCst);
        let _guard = Dec(&self.running);
        match cmd[0].as_str() {
            "cat" => {
                let (mut stdin, mut stdout) = (s.stdin.take().unwrap(), s.stdout.take().unwrap());
                let _ = tokio::io::copy(&mut stdin, &mut stdout).await;
                Ok(0)
            }
            "exit3" => {
                s.stdout.as_mut().unwrap().write_all(b"out").await.unwrap();
                s.stderr.as_mut().unwrap().write_all(b"err").await.unwrap();
                Ok(3)
            }
            "size" => {
                let size = s.resize.as_mut().unwrap().recv().await.unwrap();
                let msg = format!("{}x{}", size.width, size.height);
                s.stdout
                    .as_mut()
                    .unwrap()
                    .write_all(msg.as_bytes())
                    .await
                    .unwrap();
                Ok(0)
            }
            _ => Err(CriError::FailedPrecondition("no such command".into())),
        }
    }

    async fn attach(&self, _id: &str, mut s: StdioStreams) -> Result<()> {
        let mut stdout = s.stdout.take().unwrap();
        stdout.write_all(b"attached\n").await.unwrap();
        if let Some(mut stdin) = s.stdin.take() {
            let _ = tokio::io::copy(&mut stdin, &mut stdout).await;
        }
        Ok(())
    }

    async fn port_forward(
        &self,
        _id: &str,
        port: u16,
        stream: Box<dyn ClientStream>,
    ) -> Result<()> {
        if port == 1 {
            return Err(CriError::FailedPrecondition("connection refused".into()));
        }
        let (mut r, mut w) = tokio::io::split(stream);
        w.write_all(format!("{port}:").as_bytes()).await.unwrap();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
        Ok(())
    }
}

struct Dec<'a>(&'a AtomicUsize);
impl Drop for Dec<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn server() -> (StreamServer, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let server = StreamServer::bind(&CriConfig::default()).unwrap();
    server.serve(fake.clone()).unwrap();
    (server, fake)
}

fn exec_req(cmd: &str, stdin: bool, stderr: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: vec![cmd.into()],
        stdin,
        stdout: true,
        stderr,
        tty,
    }
}

async fn open(up: &Upgraded, kind: &str) -> Stream {
    let mut h = Headers::new();
    h.add("streamType", kind);
    up.conn.open_stream(h, false).await.unwrap()
}

/// An exec of the fake's `command` upgraded with `protocols`.
async fn exec_session(
    server: &StreamServer,
    command: &str,
    stdin: bool,
    stderr: bool,
    tty: bool,
    protocols: &[&str],
) -> Upgraded {
    let url = server
        .exec_url(exec_req(command, stdin, stderr, tty))
        .unwrap();
    connect(&url, protocols).await.unwrap()
}

/// The `metav1.Status` a v4 session sends on its error stream.
async fn read_status(error: &mut Stream) -> serde_json::Value {
    serde_json::from_str(&read_all(error).await).unwrap()
}

async fn read_all(s: &mut Stream) -> String {
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test]
async fn exec_v4_echoes_stdin_and_reports_success() {
    let (server, _) = server();
    let up = exec_session(
        &server,
        "cat",
        true,
        false,
        false,
        &["v4.channel.k8s.io", "v3.channel.k8s.io"],
    )
    .await;
    assert_eq!(up.protocol.as_deref(), Some("v4.channel.k8s.io"));
    let mut error = open(&up, "error").await;
    let mut stdin = open(&up, "stdin").await;
    let mut stdout = open(&up, "stdout").await;
    stdin.write_all(b"hello").await.unwrap();
    stdin.shutdown().await.unwrap();
    assert_eq!(read_all(&mut stdout).await, "hello");
    let status = read_status(&mut error).await;
    assert_eq!(status["status"], "Success");
    tokio::time::timeout(Duration::from_secs(10), up.conn.closed())
        .await
        .unwrap();
}

#[tokio::test]
async fn exec_exit_code_goes_in_the_status_v4_and_as_text_v2() {
    let (server, _) = server();
    let up = exec_session(&server, "exit3", false, true, false, &["v4.channel.k8s.io"]).await;
    let mut error = open(&up, "error").await;
    let mut stdout = open(&up, "stdout").await;
    let mut stderr = open(&up, "stderr").await;
    assert_eq!(read_all(&mut stdout).await, "out");
    assert_eq!(read_all(&mut stderr).await, "err");
    let status = read_status(&mut error).await;
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");

    let up = exec_session(&server, "exit3", false, true, false, &["v2.channel.k8s.io"]).await;
    assert_eq!(up.protocol.as_deref(), Some("v2.channel.k8s.io"));
    let mut error = open(&up, "error").await;
    let _stdout = open(&up, "stdout").await;
    let _stderr = open(&up, "stderr").await;
    assert_eq!(
        read_all(&mut error).await,
        "command terminated with non-zero exit code: exit status 3"
    );
}

#[tokio::test]
async fn a_tty_exec_gets_resizes() {
    let (server, _) = server();
    let up = exec_session(&server, "size", false, false, true, &["v4.channel.k8s.io"]).await;
    let mut error = open(&up, "error").await;
    let mut stdout = open(&up, "stdout").await;
    let mut resize = open(&up, "resize").await;
    // Split across frames, as a decoder reading a byte stream must accept.
    resize.write_all(br#"{"Width":120,"#).await.unwrap();
    resize.write_all(br#""Height":33}"#).await.unwrap();
    assert_eq!(read_all(&mut stdout).await, "120x33");
    assert!(read_all(&mut error).await.contains("Success"));
}

#[tokio::test]
async fn a_runtime_failure_is_an_internal_error_status() {
    let (server, _) = server();
    let up = exec_session(&server, "nope", false, false, false, &["v4.channel.k8s.io"]).await;
    let mut error = open(&up, "error").await;
    let _stdout = open(&up, "stdout").await;
    let status = read_status(&mut error).await;
    assert_eq!(status["reason"], "InternalError");
    assert_eq!(status["code"], 500);
}

#[tokio::test]
async fn attach_streams_output_and_stdin() {
    let (server, _) = server();
    let url = server
        .attach_url(AttachRequest {
            container_id: "c1".into(),
            stdin: true,
            stdout: true,
            ..Default::default()
        })
        .unwrap();
    let up = connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let mut error = open(&up, "error").await;
    let mut stdin = open(&up, "stdin").await;
    let mut stdout = open(&up, "stdout").await;
    stdin.write_all(b"typed\n").await.unwrap();
    stdin.shutdown().await.unwrap();
    assert_eq!(read_all(&mut stdout).await, "attached\ntyped\n");
    assert!(read_all(&mut error).await.contains("Success"));
}

#[tokio::test]
async fn unknown_used_and_mismatched_tokens_are_404_and_start_nothing() {
    let (server, fake) = server();
    let base = format!("http://{}", server.addr());
    for path in ["/exec/nope", "/attach/", "/portforward/x/y", "/other/x"] {
        match connect(&format!("{base}{path}"), &["v4.channel.k8s.io"]).await {
            Err(SpdyError::Refused { status: 404, .. }) => {}
            other => panic!("{path}: {other:?}"),
        }
    }
    let url = server
        .exec_url(exec_req("cat", true, false, false))
        .unwrap();
    let up = connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    match connect(&url, &["v4.channel.k8s.io"]).await {
        Err(SpdyError::Refused { status: 404, .. }) => {}
        other => panic!("reuse: {other:?}"),
    }
    // An exec token is no attach token.
    let url = server
        .exec_url(exec_req("cat", true, false, false))
        .unwrap();
    let attach = url.replace("/exec/", "/attach/");
    match connect(&attach, &["v4.channel.k8s.io"]).await {
        Err(SpdyError::Refused { status: 404, .. }) => {}
        other => panic!("kind: {other:?}"),
    }
    drop(up);
    assert_eq!(fake.running.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_unknown_protocol_is_refused_with_the_accepted_list() {
    let (server, _) = server();
    let url = server
        .exec_url(exec_req("cat", true, false, false))
        .unwrap();
    match connect(&url, &["v9.channel.k8s.io"]).await {
        Err(SpdyError::Refused { status: 403, body }) => {
            assert!(body.contains("unable to negotiate protocol"), "{body}")
        }
        other => panic!("{other:?}"),
    }
}

async fn forward(up: &Upgraded, port: u16, request: usize) -> (Stream, Stream) {
    let mut h = Headers::new();
    h.add("streamType", "error")
        .add("port", &port.to_string())
        .add("requestID", &request.to_string());
    let error = up.conn.open_stream(h, false).await.unwrap();
    let mut h = Headers::new();
    h.add("streamType", "data")
        .add("port", &port.to_string())
        .add("requestID", &request.to_string());
    let data = up.conn.open_stream(h, false).await.unwrap();
    (error, data)
}

#[tokio::test]
async fn port_forward_pairs_streams_and_100_run_at_once() {
    let (server, _) = server();
    let url = server
        .port_forward_url(PortForwardRequest {
            pod_sandbox_id: "p1".into(),
            port: vec![80],
        })
        .unwrap();
    let up = Arc::new(connect(&url, &["portforward.k8s.io"]).await.unwrap());
    assert_eq!(up.protocol.as_deref(), Some("portforward.k8s.io"));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let up = up.clone();
        tasks.push(tokio::spawn(async move {
            let (mut error, mut data) = forward(&up, 8000 + i as u16, i).await;
            data.write_all(format!("req{i}").as_bytes()).await.unwrap();
            data.shutdown().await.unwrap();
            assert_eq!(read_all(&mut data).await, format!("{}:req{i}", 8000 + i));
            assert_eq!(read_all(&mut error).await, "");
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .unwrap()
            .unwrap();
    }
    // A failing port reports on its error stream.
    let (mut error, _data) = forward(&up, 1, 1000).await;
    assert!(read_all(&mut error).await.contains("connection refused"));
    // A stream without a port is refused.
    let mut h = Headers::new();
    h.add("streamType", "data");
    assert!(matches!(
        up.conn.open_stream(h, false).await,
        Err(SpdyError::Reset(_))
    ));
}

#[tokio::test]
async fn a_malformed_frame_closes_only_its_connection() {
    let (server, _) = server();
    let url = server
        .port_forward_url(PortForwardRequest {
            pod_sandbox_id: "p1".into(),
            port: vec![80],
        })
        .unwrap();
    let good = connect(&url.clone(), &["portforward.k8s.io"]).await;
    let good = good.unwrap();
    // A raw upgrade that then sends a SPDY/2 frame.
    let url2 = server
        .port_forward_url(PortForwardRequest {
            pod_sandbox_id: "p1".into(),
            port: vec![80],
        })
        .unwrap();
    let path = url2.splitn(4, '/').nth(3).unwrap().to_owned();
    let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let req = format!(
        "POST /{path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = tcp.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 101"));
    tcp.write_all(&[0x80, 2, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1])
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    // The other connection still forwards.
    let (_error, mut data) = forward(&good, 9000, 1).await;
    data.shutdown().await.unwrap();
    assert_eq!(read_all(&mut data).await, "9000:");
}

mod ws {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    use super::*;

    type Client = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

    async fn ws_connect(url: &str, protocol: &str) -> Client {
        let url = url.replacen("http://", "ws://", 1);
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let addr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
        assert_eq!(
            resp.headers().get("Sec-WebSocket-Protocol").unwrap(),
            protocol
        );
        ws
    }

    /// Everything until the server closes: (channel, bytes) per message.
    async fn drain(ws: &mut Client) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .unwrap();
            match msg {
                Some(Ok(Message::Binary(b))) => out.push((b[0], b[1..].to_vec())),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return out,
                Some(Ok(_)) => {}
            }
        }
    }

    fn channel(msgs: &[(u8, Vec<u8>)], ch: u8) -> String {
        let bytes: Vec<u8> = msgs
            .iter()
            .filter(|(c, _)| *c == ch)
            .flat_map(|(_, d)| d.clone())
            .collect();
        String::from_utf8(bytes).unwrap()
    }

    #[tokio::test]
    async fn v5_exec_echoes_stdin_until_the_close_channel() {
        let (server, _) = server();
        let url = server
            .exec_url(exec_req("cat", true, false, false))
            .unwrap();
        let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
        ws.send(Message::binary(b"\x00hello".to_vec()))
            .await
            .unwrap();
        ws.send(Message::binary(vec![255, 0])).await.unwrap();
        let msgs = drain(&mut ws).await;
        assert_eq!(channel(&msgs, 1), "hello");
        let status: serde_json::Value = serde_json::from_str(&channel(&msgs, 3)).unwrap();
        assert_eq!(status["status"], "Success");
    }

    #[tokio::test]
    async fn v4_exec_reports_exit_code_3() {
        let (server, _) = server();
        let url = server
            .exec_url(exec_req("exit3", false, true, false))
            .unwrap();
        let mut ws = ws_connect(&url, "v4.channel.k8s.io").await;
        let msgs = drain(&mut ws).await;
        assert_eq!(channel(&msgs, 1), "out");
        assert_eq!(channel(&msgs, 2), "err");
        let status: serde_json::Value = serde_json::from_str(&channel(&msgs, 3)).unwrap();
        assert_eq!(status["details"]["causes"][0]["message"], "3");
    }

    #[tokio::test]
    async fn port_forward_channels_carry_the_port_then_data() {
        let (server, _) = server();
        let url = server
            .port_forward_url(PortForwardRequest {
                pod_sandbox_id: "p1".into(),
                port: vec![8080],
            })
            .unwrap();
        let mut ws = ws_connect(&format!("{url}?port=8080"), "v4.channel.k8s.io").await;
        ws.send(Message::binary(b"\x00abc".to_vec())).await.unwrap();
        let mut got: Vec<(u8, Vec<u8>)> = Vec::new();
        while got
            .iter()
            .filter(|(c, _)| *c == 0)
            .map(|(_, d)| d.len())
            .sum::<usize>()
            < 2 + "8080:abc".len()
        {
            match tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .unwrap()
            {
                Some(Ok(Message::Binary(b))) => got.push((b[0], b[1..].to_vec())),
                other => panic!("{other:?}"),
            }
        }
        let data: Vec<u8> = got
            .iter()
            .filter(|(c, _)| *c == 0)
            .flat_map(|(_, d)| d.clone())
            .collect();
        assert_eq!(&data[..2], &8080u16.to_le_bytes());
        assert_eq!(&data[2..], b"8080:abc");
        let err: Vec<u8> = got
            .iter()
            .filter(|(c, _)| *c == 1)
            .flat_map(|(_, d)| d.clone())
            .collect();
        assert_eq!(err, 8080u16.to_le_bytes());
    }

    #[tokio::test]
    async fn spdy_tunneled_in_websocket_forwards() {
        let (server, _) = server();
        let url = server
            .port_forward_url(PortForwardRequest {
                pod_sandbox_id: "p1".into(),
                port: vec![80],
            })
            .unwrap();
        let ws = ws_connect(&url, "SPDY/3.1+portforward.k8s.io").await;
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let (mut sink, mut source) = ws.split();
            let (mut r, mut w) = tokio::io::split(theirs);
            let up = async {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0 || sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            };
            let down = async {
                while let Some(Ok(Message::Binary(b))) = source.next().await {
                    if w.write_all(&b).await.is_err() {
                        break;
                    }
                }
            };
            tokio::join!(up, down);
        });
        let (conn, incoming) = super::super::spdy::Connection::new(ours, false, Default::default());
        let up = Upgraded {
            conn,
            incoming,
            protocol: None,
        };
        let (_error, mut data) = forward(&up, 7000, 0).await;
        data.write_all(b"x").await.unwrap();
        data.shutdown().await.unwrap();
        assert_eq!(read_all(&mut data).await, "7000:x");
    }
}

mod tls {
    use std::path::Path;

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls;

    use super::*;

    fn config(tls: bool) -> CriConfig {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/streaming/testdata");
        let mut config = CriConfig {
            enable_tls_streaming: tls,
            ..Default::default()
        };
        config.x509_key_pair_streaming.tls_cert_file = dir.join("tls.crt").display().to_string();
        config.x509_key_pair_streaming.tls_key_file = dir.join("tls.key").display().to_string();
        config
    }

    #[tokio::test]
    async fn tls_streaming_serves_https_urls() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let server = StreamServer::bind(&config(true)).unwrap();
        server.serve(Arc::new(Fake::default())).unwrap();
        let url = server
            .exec_url(exec_req("cat", true, false, false))
            .unwrap();
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");

        let mut roots = rustls::RootCertStore::empty();
        for cert in
            CertificateDer::pem_file_iter(&config(true).x509_key_pair_streaming.tls_cert_file)
                .unwrap()
        {
            roots.add(cert.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET /exec/unknown HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        assert!(
            String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 404"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }

    #[test]
    fn tls_streaming_without_a_key_pair_is_refused() {
        let mut c = config(true);
        c.x509_key_pair_streaming = Default::default();
        assert!(StreamServer::bind(&c).is_err());
    }
}
