//! The remotecommand protocols over SPDY (`v4.channel.k8s.io`, `v3`, `v2`,
//! `channel.k8s.io`): the client opens one stream per `streamType` (error, stdin, stdout,
//! stderr, resize); the server replies to each, runs the command, and reports how it ended on
//! the error stream (v4: a `metav1.Status` JSON; older: the error text, nothing on success).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::{Connection, Incoming, Stream};
use super::{ClientReader, ClientWriter, StdioStreams, StreamRuntime, TermSize};

/// The protocols, newest first (the server's preference when a client offers several).
pub const PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// How long the client has to open its streams.
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The negotiated protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `channel.k8s.io` (also a client that offers nothing).
    V1,
    /// `v2.channel.k8s.io`.
    V2,
    /// `v3.channel.k8s.io`: adds the resize stream.
    V3,
    /// `v4.channel.k8s.io`: the error stream carries a JSON status.
    V4,
}

impl Version {
    /// The version of a protocol name.
    pub fn from_name(name: &str) -> Option<Version> {
        match name {
            "v4.channel.k8s.io" => Some(Version::V4),
            "v3.channel.k8s.io" => Some(Version::V3),
            "v2.channel.k8s.io" => Some(Version::V2),
            "channel.k8s.io" | "" => Some(Version::V1),
            _ => None,
        }
    }
}

/// The streams the request asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wanted {
    /// stdin.
    pub stdin: bool,
    /// stdout.
    pub stdout: bool,
    /// stderr.
    pub stderr: bool,
    /// A terminal.
    pub tty: bool,
}

/// What to run once the streams are there.
#[derive(Debug, Clone)]
pub enum Action {
    /// Exec `cmd` in the container.
    Exec {
        /// The container.
        container_id: String,
        /// The command.
        cmd: Vec<String>,
    },
    /// Attach to the container.
    Attach {
        /// The container.
        container_id: String,
    },
}

#[derive(Default)]
struct Streams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

/// Serves one upgraded connection: waits for the streams, runs `action`, writes the status
/// and closes the connection.
pub async fn serve(
    conn: Connection,
    mut incoming: Incoming,
    version: Version,
    wanted: Wanted,
    action: Action,
    runtime: Arc<dyn StreamRuntime>,
) {
    let expected = 1
        + usize::from(wanted.stdin)
        + usize::from(wanted.stdout)
        + usize::from(wanted.stderr)
        + usize::from(wanted.tty && version >= Version::V3);
    let mut got = Streams::default();
    let mut count = 0;
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while count < expected {
        let mut stream = tokio::select! {
            s = incoming.recv() => match s {
                Some(s) => s,
                None => {
                    tracing::debug!("connection ended before the streams were opened");
                    conn.close().await;
                    return;
                }
            },
            _ = &mut deadline => {
                tracing::debug!("timed out waiting for client to create streams");
                conn.close().await;
                return;
            }
        };
        let kind = stream.headers().get("streamtype").unwrap_or("").to_owned();
        let slot = match kind.as_str() {
            "error" => &mut got.error,
            "stdin" => &mut got.stdin,
            "stdout" => &mut got.stdout,
            "stderr" => &mut got.stderr,
            "resize" if version >= Version::V3 => &mut got.resize,
            other => {
                tracing::debug!(stream_type = other, "unexpected stream type");
                let _ = stream.reply().await;
                continue;
            }
        };
        if stream.reply().await.is_err() {
            conn.close().await;
            return;
        }
        if slot.replace(stream).is_none() {
            count += 1;
        }
    }
    // Streams opened later are not wanted: refuse them.
    let stray = tokio::spawn(async move {
        while let Some(s) = incoming.recv().await {
            s.reset(super::spdy::frame::rst::REFUSED_STREAM).await;
        }
    });

    let Streams {
        error,
        stdin,
        stdout,
        stderr,
        resize,
    } = got;
    let mut stdin = stdin;
    if version == Version::V1 {
        // channel.k8s.io has no usable stdin half-close: the kubelet closes it at once.
        if let Some(mut s) = stdin.take() {
            let _ = s.shutdown().await;
        }
    }
    let resize = resize.map(|r| {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(read_resizes(r, tx));
        rx
    });
    let streams = StdioStreams {
        stdin: stdin.map(|s| Box::pin(s) as ClientReader),
        stdout: stdout.map(|s| Box::pin(s) as ClientWriter),
        stderr: stderr.map(|s| Box::pin(s) as ClientWriter),
        tty: wanted.tty,
        resize,
    };
    let run = async {
        match &action {
            Action::Exec { container_id, cmd } => {
                match runtime.exec(container_id, cmd.clone(), streams).await {
                    Ok(0) => Status::Success,
                    Ok(code) => Status::ExitCode(code),
                    Err(e) => {
                        Status::Internal(format!("error executing command in container: {e}"))
                    }
                }
            }
            Action::Attach { container_id } => match runtime.attach(container_id, streams).await {
                Ok(()) => Status::Success,
                Err(e) => Status::Internal(format!("error attaching to container: {e}")),
            },
        }
    };
    // A client gone mid-session (its streams then read as ended) drops the call: the
    // runtime ends what it started (StreamRuntime::exec).
    let status = tokio::select! {
        status = run => status,
        () = conn.closed() => {
            tracing::debug!("client went away; session ended");
            stray.abort();
            return;
        }
    };
    tracing::debug!(?status, "stream session ended");
    if let Some(mut error) = error {
        let bytes = match version {
            Version::V4 => status.to_json().into_bytes(),
            _ => status.message().map(String::into_bytes).unwrap_or_default(),
        };
        if !bytes.is_empty() {
            let _ = error.write_all(&bytes).await;
        }
        let _ = error.shutdown().await;
    }
    stray.abort();
    conn.close().await;
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Exit code 0 (or an attach that ended).
    Success,
    /// A non-zero exit code.
    ExitCode(i32),
    /// The runtime failed.
    Internal(String),
}

impl Status {
    /// The error text (`StatusError.Error()`); `None` on success.
    pub fn message(&self) -> Option<String> {
        match self {
            Status::Success => None,
            Status::ExitCode(code) => Some(format!(
                "command terminated with non-zero exit code: exit status {code}"
            )),
            Status::Internal(msg) => Some(format!("Internal error occurred: {msg}")),
        }
    }

    /// The `metav1.Status` JSON the v4 error stream carries.
    pub fn to_json(&self) -> String {
        let value = match self {
            Status::Success => serde_json::json!({"metadata": {}, "status": "Success"}),
            Status::ExitCode(code) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": self.message(),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Status::Internal(msg) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": self.message(),
                "reason": "InternalError",
                "details": {"causes": [{"message": msg}]},
                "code": 500,
            }),
        };
        value.to_string()
    }
}

#[derive(Deserialize)]
struct Size {
    #[serde(rename = "Width", default)]
    width: u16,
    #[serde(rename = "Height", default)]
    height: u16,
}

/// Decodes the resize stream's JSON objects (one after another, as Go's json.Decoder reads
/// them) into terminal sizes until the stream ends or a value is malformed.
async fn read_resizes(mut stream: Stream, tx: mpsc::Sender<TermSize>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<Size>();
        let mut used = 0;
        loop {
            match values.next() {
                Some(Ok(size)) => {
                    used = values.byte_offset();
                    let size = TermSize {
                        width: size.width,
                        height: size.height,
                    };
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => return,
                None => break,
            }
        }
        buf.drain(..used);
        if buf.len() > 64 * 1024 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_go_in_the_status_causes() {
        let v: serde_json::Value = serde_json::from_str(&Status::ExitCode(3).to_json()).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let ok: serde_json::Value = serde_json::from_str(&Status::Success.to_json()).unwrap();
        assert_eq!(ok["status"], "Success");
        assert_eq!(Status::Success.message(), None);
    }
}
