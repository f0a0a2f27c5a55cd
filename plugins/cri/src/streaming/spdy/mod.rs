//! SPDY/3.1 as the kubelet's streaming protocols use it (moby/spdystream under
//! k8s.io/apimachinery's httpstream): frames, compressed header blocks, and a connection
//! multiplexing streams. Both ends: the streaming server accepts streams after an HTTP
//! `Upgrade: SPDY/3.1`, and [`client::connect`] lets a test (or a tool) be the client.

pub mod client;
pub mod conn;
pub mod dictionary;
pub mod frame;
pub mod headers;

pub use conn::{Connection, Incoming, Options, Stream};
pub use headers::Headers;

/// The `Upgrade` token.
pub const UPGRADE_PROTOCOL: &str = "SPDY/3.1";

/// What can go wrong on a SPDY connection.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// The byte stream failed.
    #[error("spdy: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol; the connection is closed.
    #[error("spdy protocol error: {0}")]
    Protocol(&'static str),
    /// The connection is closed.
    #[error("spdy: connection closed")]
    Closed,
    /// The peer reset the stream with this status.
    #[error("spdy: stream reset (status {0})")]
    Reset(u32),
    /// The peer did not answer in time.
    #[error("spdy: timed out")]
    Timeout,
    /// The HTTP upgrade was refused: the status and the body.
    #[error("upgrade refused: HTTP {status}: {body}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The response body.
        body: String,
    },
    /// The HTTP upgrade answer was malformed, or the URL was.
    #[error("upgrade: {0}")]
    Handshake(String),
}
