//! ttrpc — containerd's lightweight request/response RPC over unix sockets — client and server,
//! on tokio and prost.
//!
//! Why hand-written rather than the `ttrpc` crate: that crate is tied to rust-protobuf code
//! generation, while every generated type in Berth is prost (`berth-proto`); the wire format is
//! small (a 10-byte big-endian frame header around a protobuf `Request`/`Response` envelope, see
//! [`wire`]), so it is implemented here directly.
//!
//! Wire facts follow `github.com/containerd/ttrpc` (`channel.go`, `types.go`, `server.go`,
//! `client.go`): payloads are limited to 4 MiB, client stream ids are odd (1, 3, 5, ...), a
//! successful response omits `status`, unknown services/methods answer `Unimplemented`, and a
//! server by default only accepts peers whose effective uid/gid equal its own.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use berth_proto::google::rpc::Status as RpcStatus;

mod client;
#[cfg(test)]
mod conn_tests;
mod server;
pub mod wire;

pub use client::{CallOptions, Client};
pub use server::Server;

/// gRPC status codes as i32 (same numbering).
pub mod code {
    pub const OK: i32 = 0;
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    pub const ALREADY_EXISTS: i32 = 6;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const ABORTED: i32 = 10;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const DATA_LOSS: i32 = 15;
}

/// Builds a status with no details.
pub fn status(code: i32, message: impl Into<String>) -> RpcStatus {
    RpcStatus {
        code,
        message: message.into(),
        details: Vec::new(),
    }
}

/// Per-request context handed to a [`Service`]: the request metadata and its timeout (if the
/// client set one).
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub metadata: Vec<(String, String)>,
    pub timeout: Option<Duration>,
}

impl Context {
    /// First metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What a [`Service`] returns: the encoded response payload, or a status.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, RpcStatus>> + Send>>;

/// A ttrpc service: `name()` is the full protobuf service name (e.g. `containerd.task.v2.Task`),
/// `call` dispatches one method. Unknown methods should answer [`code::UNIMPLEMENTED`]
/// (see [`unimplemented_method`]).
pub trait Service: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn call(&self, method: &str, ctx: Context, payload: Vec<u8>) -> HandlerFuture;
}

/// Decodes Req, runs f, encodes Resp (decode failure → INVALID_ARGUMENT).
pub fn unary<Req, Resp, F, Fut>(payload: &[u8], f: F) -> HandlerFuture
where
    Req: prost::Message + Default,
    Resp: prost::Message + 'static,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<Resp, RpcStatus>> + Send + 'static,
{
    match Req::decode(payload) {
        Ok(req) => {
            let fut = f(req);
            Box::pin(async move { fut.await.map(|resp| resp.encode_to_vec()) })
        }
        Err(e) => {
            let st = status(
                code::INVALID_ARGUMENT,
                format!("unmarshal request error: {e}"),
            );
            Box::pin(async move { Err(st) })
        }
    }
}

/// The standard answer for a method a service does not know: `Unimplemented` `method <name>`
/// (as Go ttrpc's `serviceSet.resolve`).
pub fn unimplemented_method(method: &str) -> HandlerFuture {
    let st = status(code::UNIMPLEMENTED, format!("method {method}"));
    Box::pin(async move { Err(st) })
}

/// Errors of a ttrpc client call.
#[derive(Debug, thiserror::Error)]
pub enum TtrpcError {
    #[error("ttrpc: {0}")]
    Io(#[from] std::io::Error),
    #[error("code {}: {}", .0.code, .0.message)]
    Status(RpcStatus),
    #[error("ttrpc: closed")]
    Closed,
    #[error("ttrpc: deadline exceeded")]
    Timeout,
    #[error("ttrpc: decode response: {0}")]
    Decode(prost::DecodeError),
    #[error("ttrpc: message length {0} exceeds maximum message size of {max}", max = wire::MAX_MESSAGE_LEN)]
    TooLarge(usize),
}

impl TtrpcError {
    /// The gRPC code: the status code, `Timeout` → DEADLINE_EXCEEDED, `Closed` → UNAVAILABLE,
    /// `TooLarge` → RESOURCE_EXHAUSTED; `None` for I/O and decode errors.
    pub fn code(&self) -> Option<i32> {
        match self {
            TtrpcError::Status(st) => Some(st.code),
            TtrpcError::Timeout => Some(code::DEADLINE_EXCEEDED),
            TtrpcError::Closed => Some(code::UNAVAILABLE),
            TtrpcError::TooLarge(_) => Some(code::RESOURCE_EXHAUSTED),
            TtrpcError::Io(_) | TtrpcError::Decode(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_and_codes() {
        let e = TtrpcError::Status(status(code::NOT_FOUND, "nope"));
        assert_eq!(e.to_string(), "code 5: nope");
        assert_eq!(e.code(), Some(code::NOT_FOUND));
        assert_eq!(TtrpcError::Timeout.code(), Some(code::DEADLINE_EXCEEDED));
        assert_eq!(TtrpcError::Closed.code(), Some(code::UNAVAILABLE));
    }

    #[test]
    fn context_get_returns_first() {
        let ctx = Context {
            metadata: vec![
                ("a".into(), "1".into()),
                ("b".into(), "2".into()),
                ("a".into(), "3".into()),
            ],
            timeout: None,
        };
        assert_eq!(ctx.get("a"), Some("1"));
        assert_eq!(ctx.get("b"), Some("2"));
        assert_eq!(ctx.get("c"), None);
    }

    #[tokio::test]
    async fn unary_decode_failure_is_invalid_argument() {
        use berth_proto::containerd::task::v2::{ConnectRequest, ConnectResponse};
        let err = unary::<ConnectRequest, ConnectResponse, _, _>(&[0xff, 0xff], |_| async {
            Ok(ConnectResponse::default())
        })
        .await
        .unwrap_err();
        assert_eq!(err.code, code::INVALID_ARGUMENT);
    }
}
