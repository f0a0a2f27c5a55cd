//! The CRI streaming server (containerd `pkg/cri/streaming`, the kubelet's
//! `pkg/kubelet/cri/streaming`): Exec, Attach and PortForward hand out single-use URLs, and a
//! client (the kubelet, kubectl through it, critest) connects to them with SPDY/3.1 or
//! WebSocket to move stdio and port data.
//!
//! Split: the server side (HTTP, tokens, SPDY and WebSocket framing, the remotecommand and
//! portforward protocols) talks to the container side only through [`StreamRuntime`], which
//! the CRI implements on its tasks and pods.

pub mod portforward;
pub mod remotecommand;
pub mod server;
pub mod spdy;
pub mod tokens;
pub mod websocket;

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::error::Result;

/// A byte stream read from the client (stdin).
pub type ClientReader = Pin<Box<dyn AsyncRead + Send>>;
/// A byte stream written to the client (stdout, stderr).
pub type ClientWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// A terminal size, as the resize channel sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// The client's side of an exec or attach: the streams it asked for.
pub struct StdioStreams {
    /// stdin, when requested.
    pub stdin: Option<ClientReader>,
    /// stdout, when requested.
    pub stdout: Option<ClientWriter>,
    /// stderr, when requested (never with a terminal).
    pub stderr: Option<ClientWriter>,
    /// Whether a terminal was requested.
    pub tty: bool,
    /// Terminal resizes, when a terminal was requested.
    pub resize: Option<mpsc::Receiver<TermSize>>,
}

impl std::fmt::Debug for StdioStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioStreams")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("tty", &self.tty)
            .finish()
    }
}

/// A bidirectional byte stream to the client (one forwarded connection).
pub trait ClientStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ClientStream for T {}

/// What the streaming server needs from the container side.
#[tonic::async_trait]
pub trait StreamRuntime: Send + Sync + 'static {
    /// Runs `cmd` in container `container_id` with `streams` until it exits; its exit code.
    /// A client that goes away ends the process.
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        streams: StdioStreams,
    ) -> Result<i32>;

    /// Attaches `streams` to the running container's stdio until the container exits or the
    /// client goes; several attachers share its output, stdin goes to the container.
    async fn attach(&self, container_id: &str, streams: StdioStreams) -> Result<()>;

    /// Connects `stream` to TCP `port` on localhost inside pod `sandbox_id`'s network
    /// namespace (the host's for a host-network pod) and copies both ways until either side
    /// closes.
    async fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
        stream: Box<dyn ClientStream>,
    ) -> Result<()>;
}

#[cfg(test)]
mod tests;
