//! The WebSocket forms of the streaming protocols (k8s.io/apimachinery's wsstream):
//!
//! - exec and attach with `v5.channel.k8s.io`, `v4.channel.k8s.io` and `channel.k8s.io`
//!   (and their `base64.` text variants): every message starts with a channel byte, 0 stdin,
//!   1 stdout, 2 stderr, 3 error (the status), 4 resize; v5 adds channel 255, "close
//!   channel N" (the client's stdin EOF);
//! - port-forward with `v4.channel.k8s.io` (or no protocol): ports from the `port` query
//!   parameters, channels 2i (data) and 2i+1 (error) for the i-th port, each first carrying
//!   the port as two little-endian bytes;
//! - port-forward with `SPDY/3.1+portforward.k8s.io`: the SPDY byte stream tunneled in
//!   binary messages, served as `portforward.k8s.io` over SPDY.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::remotecommand::{Action, Status, Wanted};
use super::spdy::{self, Connection};
use super::{portforward, ClientReader, ClientWriter, StdioStreams, StreamRuntime, TermSize};

/// Sub-protocols for exec and attach, preferred first.
pub const EXEC_PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
/// The tunneled SPDY port-forward sub-protocol.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// Sub-protocols for port-forward.
pub const PORT_FORWARD_PROTOCOLS: [&str; 3] =
    [TUNNEL_PROTOCOL, "v4.channel.k8s.io", "portforward.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;
const PIPE: usize = 64 * 1024;

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Wraps the upgraded connection.
pub async fn accept(upgraded: Upgraded) -> Ws {
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await
}

/// How messages are framed under a protocol.
#[derive(Debug, Clone, Copy)]
struct Framing {
    base64: bool,
}

impl Framing {
    fn message(self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            text.push((b'0' + channel) as char);
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
            Message::text(text)
        } else {
            let mut bin = Vec::with_capacity(1 + data.len());
            bin.push(channel);
            bin.extend_from_slice(data);
            Message::binary(bin)
        }
    }

    /// A message's channel and payload; `None` for control messages and bad input.
    fn parse(self, msg: &Message) -> Option<(u8, Vec<u8>)> {
        match msg {
            Message::Binary(b) if !self.base64 => {
                let (ch, rest) = b.split_first()?;
                Some((*ch, rest.to_vec()))
            }
            Message::Text(t) if self.base64 => {
                let bytes = t.as_bytes();
                let (ch, rest) = bytes.split_first()?;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .ok()?;
                Some((ch.checked_sub(b'0')?, data))
            }
            _ => None,
        }
    }
}

/// Serves exec or attach over a WebSocket with `protocol`.
pub async fn serve_exec(
    ws: Ws,
    protocol: &str,
    wanted: Wanted,
    action: Action,
    runtime: Arc<dyn StreamRuntime>,
) {
    let framing = Framing {
        base64: protocol.contains("base64"),
    };
    let v5 = protocol.starts_with("v5.");
    let json_status = v5 || protocol.starts_with("v4.");
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let close = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let mut stdin_end: Option<DuplexStream> = None;
    let stdin: Option<ClientReader> = wanted.stdin.then(|| {
        let (ours, theirs) = tokio::io::duplex(PIPE);
        stdin_end = Some(ours);
        Box::pin(theirs) as ClientReader
    });
    let mut pumps = Vec::new();
    let mut output = |channel: u8, want: bool| -> Option<ClientWriter> {
        want.then(|| {
            let (ours, theirs) = tokio::io::duplex(PIPE);
            pumps.push(tokio::spawn(pump_reader(
                ours,
                channel,
                framing,
                out_tx.clone(),
            )));
            Box::pin(theirs) as ClientWriter
        })
    };
    let stdout = output(STDOUT, wanted.stdout);
    let stderr = output(STDERR, wanted.stderr);
    let (resize_tx, resize_rx) = mpsc::channel::<TermSize>(8);
    let streams = StdioStreams {
        stdin,
        stdout,
        stderr,
        tty: wanted.tty,
        resize: wanted.tty.then_some(resize_rx),
    };

    // Said by the reader when the client went (its messages ended before the session did).
    let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<()>();
    // What the client sends: stdin data, resizes, v5's close of stdin.
    let reader = tokio::spawn(async move {
        let mut stdin_end = stdin_end;
        while let Some(Ok(msg)) = source.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            let Some((channel, data)) = framing.parse(&msg) else {
                continue;
            };
            match channel {
                STDIN => {
                    if let Some(pipe) = stdin_end.as_mut() {
                        if pipe.write_all(&data).await.is_err() {
                            stdin_end = None;
                        }
                    }
                }
                RESIZE => {
                    #[derive(serde::Deserialize)]
                    struct Size {
                        #[serde(rename = "Width", default)]
                        width: u16,
                        #[serde(rename = "Height", default)]
                        height: u16,
                    }
                    if let Ok(size) = serde_json::from_slice::<Size>(&data) {
                        let _ = resize_tx
                            .send(TermSize {
                                width: size.width,
                                height: size.height,
                            })
                            .await;
                    }
                }
                CLOSE if v5 && data.first() == Some(&STDIN) => {
                    if let Some(mut pipe) = stdin_end.take() {
                        let _ = pipe.shutdown().await;
                    }
                }
                _ => {}
            }
        }
        // The client went: stdin ends.
        if let Some(mut pipe) = stdin_end.take() {
            let _ = pipe.shutdown().await;
        }
        let _ = gone_tx.send(());
    });

    // A client gone mid-session drops the runtime call: the runtime ends what it started
    // (StreamRuntime::exec kills the process).
    let status = tokio::select! {
        status = run(&action, streams, runtime) => status,
        Ok(()) = gone_rx => {
            tracing::debug!("client went away; session ended");
            return;
        }
    };
    for p in pumps {
        let _ = p.await;
    }
    let payload = if json_status {
        status.to_json().into_bytes()
    } else {
        status.message().map(String::into_bytes).unwrap_or_default()
    };
    if !payload.is_empty() {
        let _ = out_tx.send(framing.message(ERROR, &payload)).await;
    }
    let _ = out_tx.send(Message::Close(None)).await;
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    reader.abort();
}

async fn run(action: &Action, streams: StdioStreams, runtime: Arc<dyn StreamRuntime>) -> Status {
    match action {
        Action::Exec { container_id, cmd } => {
            match runtime.exec(container_id, cmd.clone(), streams).await {
                Ok(0) => Status::Success,
                Ok(code) => Status::ExitCode(code),
                Err(e) => Status::Internal(format!("error executing command in container: {e}")),
            }
        }
        Action::Attach { container_id } => match runtime.attach(container_id, streams).await {
            Ok(()) => Status::Success,
            Err(e) => Status::Internal(format!("error attaching to container: {e}")),
        },
    }
}

/// Serves channel-framed port-forward for `ports` over a WebSocket.
pub async fn serve_port_forward(
    ws: Ws,
    ports: Vec<u16>,
    sandbox_id: String,
    runtime: Arc<dyn StreamRuntime>,
) {
    let framing = Framing { base64: false };
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            if sink.send(msg).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut inputs: Vec<Option<tokio::io::WriteHalf<DuplexStream>>> = Vec::new();
    let mut tasks = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let data_ch = (2 * i) as u8;
        let err_ch = data_ch + 1;
        let prefix = port.to_le_bytes();
        let _ = out_tx.send(framing.message(data_ch, &prefix)).await;
        let _ = out_tx.send(framing.message(err_ch, &prefix)).await;
        let (ours, theirs) = tokio::io::duplex(PIPE);
        let (read_half, write_half) = tokio::io::split(ours);
        inputs.push(Some(write_half));
        let runtime = runtime.clone();
        let sandbox_id = sandbox_id.clone();
        let tx = out_tx.clone();
        tasks.push(tokio::spawn(async move {
            let pump = tokio::spawn(pump_reader(read_half, data_ch, framing, tx.clone()));
            if let Err(e) = runtime
                .port_forward(&sandbox_id, port, Box::new(theirs))
                .await
            {
                let msg = format!("error forwarding port {port} to pod {sandbox_id}, uid : {e}");
                let _ = tx.send(framing.message(err_ch, msg.as_bytes())).await;
            }
            let _ = pump.await;
        }));
    }
    let reader = async {
        while let Some(Ok(msg)) = source.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            let Some((channel, data)) = framing.parse(&msg) else {
                continue;
            };
            if channel % 2 != 0 {
                continue;
            }
            let i = usize::from(channel / 2);
            if let Some(slot) = inputs.get_mut(i) {
                if let Some(pipe) = slot.as_mut() {
                    if pipe.write_all(&data).await.is_err() {
                        *slot = None;
                    }
                }
            }
        }
        for slot in inputs.iter_mut() {
            if let Some(mut pipe) = slot.take() {
                let _ = pipe.shutdown().await;
            }
        }
    };
    reader.await;
    for t in tasks {
        let _ = t.await;
    }
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// Copies what the runtime writes (read from `r`) to `channel` until it closes.
async fn pump_reader<R: AsyncRead + Unpin>(
    mut r: R,
    channel: u8,
    framing: Framing,
    tx: mpsc::Sender<Message>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(framing.message(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Serves `portforward.k8s.io` over SPDY tunneled in the WebSocket's binary messages.
pub async fn serve_tunnel(
    ws: Ws,
    sandbox_id: String,
    idle_timeout: Option<Duration>,
    runtime: Arc<dyn StreamRuntime>,
) {
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let (conn, incoming) = Connection::new(theirs, true, spdy::Options { idle_timeout });
    let bridge = tokio::spawn(bridge(ws, ours));
    portforward::serve(conn.clone(), incoming, sandbox_id, runtime).await;
    conn.closed().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), bridge).await;
}

/// Moves bytes between binary messages and a byte stream until either side ends.
async fn bridge<S: AsyncRead + AsyncWrite + Unpin>(ws: Ws, io: S) {
    let (mut sink, mut source) = ws.split();
    let (mut r, mut w) = tokio::io::split(io);
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    let up = async {
        while let Some(Ok(msg)) = source.next().await {
            match msg {
                Message::Binary(b) if w.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = w.shutdown().await;
    };
    tokio::join!(down, up);
}
