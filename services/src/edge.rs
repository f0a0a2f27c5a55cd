//! The edge every gRPC service sits behind ([`GrpcService`](crate::grpc::GrpcService) puts it
//! there): what the transport refuses before a handler runs is answered as containerd's
//! grpc-go answers it.
//!
//! - Each request message is checked against [`MAX_MESSAGE_SIZE`] from its gRPC frame header,
//!   before it is read: one over the limit ends the call with ResourceExhausted and grpc-go's
//!   words, for unary calls and for every message of a client stream alike.
//! - Every status leaving a service goes through [`status::from_transport`]: a request that
//!   does not decode (a string that is not UTF-8) is InvalidArgument, and no message is longer
//!   than a client accepts in one header. tonic answers a failed decode before the handler
//!   runs, in the response headers, or, in a stream, with the handler's own end of stream, in
//!   the trailers; both places are looked at.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::Status;

use crate::grpc::MAX_MESSAGE_SIZE;
use crate::status;

/// Length of a gRPC message header: a compression flag and a big-endian `u32` length.
const FRAME_HEADER_LEN: usize = 5;

/// A service `S` behind the edge.
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
}

impl<S> Edge<S> {
    /// `inner` behind the edge.
    pub fn new(inner: S) -> Self {
        Edge { inner }
    }
}

impl<S: NamedService> NamedService for Edge<S> {
    const NAME: &'static str = S::NAME;
}

type BoxResponse = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Edge<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxResponse;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let req = req.map(|body| Body::new(LimitedRequest::new(body)));
        let response = self.inner.call(req);
        Box::pin(async move {
            let (mut parts, body) = response.await?.into_parts();
            // A status in the headers is a trailers-only answer: the body is empty.
            let body = if rewrite_status(&mut parts.headers) {
                body
            } else {
                Body::new(CheckedTrailers { inner: body })
            };
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// Replaces the status in `headers` by what a client should see (see
/// [`status::from_transport`]); true when `headers` held a status at all.
fn rewrite_status(headers: &mut HeaderMap) -> bool {
    let Some(code) = headers.get(Status::GRPC_STATUS) else {
        return false;
    };
    // The common answers (OK, or an error from a handler with a short message) are left
    // without decoding anything.
    let worth_a_look = code.as_bytes() != b"0"
        && (code.as_bytes() == b"13"
            || code.as_bytes() == b"11"
            || headers
                .get(Status::GRPC_MESSAGE)
                .is_some_and(|m| m.len() > status::MAX_MESSAGE_LEN));
    if !worth_a_look {
        return true;
    }
    let Some(replacement) = Status::from_header_map(headers)
        .as_ref()
        .and_then(status::from_transport)
    else {
        return true;
    };
    if let Err(e) = replacement.add_header(headers) {
        tracing::warn!(error = %e, "cannot write a status into the headers");
    }
    true
}

/// A response body whose trailers get [`rewrite_status`].
struct CheckedTrailers {
    inner: Body,
}

impl http_body::Body for CheckedTrailers {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        Poll::Ready(frame.map(|frame| {
            frame.map(|mut frame| {
                if let Some(trailers) = frame.trailers_mut() {
                    rewrite_status(trailers);
                }
                frame
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that follows the gRPC framing and fails with ResourceExhausted at the
/// header of a message over [`MAX_MESSAGE_SIZE`], before any of that message is buffered.
/// tonic passes a `Status` from the body on unchanged.
struct LimitedRequest {
    inner: Body,
    /// The header being read, and how much of it has come.
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
    /// A refusal to give once the data before the offending header has been passed on.
    refusal: Option<Status>,
    /// Whether the body failed: nothing more is read after that.
    failed: bool,
}

impl LimitedRequest {
    fn new(inner: Body) -> Self {
        LimitedRequest {
            inner,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            remaining: 0,
            refusal: None,
            failed: false,
        }
    }

    /// Follows the framing through `data`. On a message over the limit: how many bytes of
    /// `data` come before its header (they belong to earlier messages), and the refusal.
    fn scan(&mut self, data: &[u8]) -> Result<(), (usize, Status)> {
        let mut i = 0;
        let mut header_start = 0;
        while i < data.len() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len() - i);
                self.remaining -= n;
                i += n;
                continue;
            }
            if self.header_len == 0 {
                header_start = i;
            }
            self.header[self.header_len] = data[i];
            self.header_len += 1;
            i += 1;
            if self.header_len == FRAME_HEADER_LEN {
                self.header_len = 0;
                let [_, a, b, c, d] = self.header;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if len > MAX_MESSAGE_SIZE {
                    // grpc-go's words (rpc_util.go, recvMsg), as containerd's clients know them.
                    let refusal = Status::resource_exhausted(format!(
                        "grpc: received message larger than max ({len} vs. {MAX_MESSAGE_SIZE})"
                    ));
                    tracing::debug!(len, "request message over the limit");
                    return Err((header_start, refusal));
                }
                self.remaining = len;
            }
        }
        Ok(())
    }
}

impl http_body::Body for LimitedRequest {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(refusal) = self.refusal.take() {
            self.failed = true;
            return Poll::Ready(Some(Err(refusal)));
        }
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => return Poll::Ready(Some(Ok(frame))),
        };
        match self.scan(&data) {
            Ok(()) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Err((0, refusal)) => {
                self.failed = true;
                Poll::Ready(Some(Err(refusal)))
            }
            Err((before, refusal)) => {
                self.refusal = Some(refusal);
                Poll::Ready(Some(Ok(Frame::data(data.slice(..before)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.refusal.is_none() && (self.failed || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: u32) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&len.to_be_bytes());
        v
    }

    #[test]
    fn messages_under_the_limit_pass_across_chunks() {
        let mut r = LimitedRequest::new(Body::empty());
        let mut data = frame(3);
        data.extend_from_slice(b"abc");
        data.extend_from_slice(&frame(MAX_MESSAGE_SIZE as u32));
        // The second header split over two chunks, its body over many.
        assert!(r.scan(&data[..10]).is_ok());
        assert!(r.scan(&data[10..]).is_ok());
        assert_eq!(r.remaining, MAX_MESSAGE_SIZE);
        assert!(r.scan(&vec![0; MAX_MESSAGE_SIZE - 1]).is_ok());
        assert!(r.scan(&[0]).is_ok());
        assert_eq!(r.remaining, 0);
        assert_eq!(r.header_len, 0);
    }

    #[test]
    fn a_message_over_the_limit_is_refused_after_the_earlier_ones() {
        let mut r = LimitedRequest::new(Body::empty());
        let mut data = frame(2);
        data.extend_from_slice(b"ok");
        data.extend_from_slice(&frame(MAX_MESSAGE_SIZE as u32 + 1));
        let (before, status) = r.scan(&data).unwrap_err();
        assert_eq!(before, 7);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            format!(
                "grpc: received message larger than max ({} vs. {MAX_MESSAGE_SIZE})",
                MAX_MESSAGE_SIZE + 1
            )
        );
    }

    #[test]
    fn decode_failures_in_headers_become_invalid_argument() {
        let mut headers = HeaderMap::new();
        Status::internal("failed to decode Protobuf message: invalid string value")
            .add_header(&mut headers)
            .unwrap();
        assert!(rewrite_status(&mut headers));
        let s = Status::from_header_map(&headers).unwrap();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);

        let mut headers = HeaderMap::new();
        assert!(!rewrite_status(&mut headers));
        Status::not_found("x").add_header(&mut headers).unwrap();
        assert!(rewrite_status(&mut headers));
        assert_eq!(
            Status::from_header_map(&headers).unwrap().code(),
            tonic::Code::NotFound
        );
    }
}
