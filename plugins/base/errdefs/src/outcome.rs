//! The status a gRPC call ends with, as the server's HTTP response shows it: `grpc-status` in
//! the headers of a trailers-only answer, else in the trailers. A body that fails or ends
//! without trailers ends its call Unknown (the client sees a reset or a missing status); one
//! dropped before its trailers, Cancelled (the client went away). One home for the tower layers
//! that act when a call ends (its span, its metrics).

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tonic::Code;

/// The code of the `grpc-status` in `headers`, if there is one (Unknown when unreadable).
pub fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?;
    let code = std::str::from_utf8(value.as_bytes())
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
        .map_or(Code::Unknown, Code::from_i32);
    Some(code)
}

/// What is done once a call's status is known: a closure `FnOnce(Code)`, or a named type (a
/// tower service's associated types cannot name a closure).
pub trait OnCallEnd {
    /// The call ended with `code`.
    fn call_ended(self, code: Code);
}

impl<F: FnOnce(Code)> OnCallEnd for F {
    fn call_ended(self, code: Code) {
        self(code);
    }
}

/// Has `on_end` called once with the status `response`'s call ends with: now for a
/// trailers-only answer, else when its body yields its trailers, fails, ends or is dropped.
pub fn on_call_end<B, F>(
    response: http::Response<B>,
    on_end: F,
) -> http::Response<OutcomeBody<B, F>>
where
    F: OnCallEnd,
{
    let (parts, body) = response.into_parts();
    let on_end = match grpc_status(&parts.headers) {
        Some(code) => {
            on_end.call_ended(code);
            None
        }
        None => Some(on_end),
    };
    http::Response::from_parts(
        parts,
        OutcomeBody {
            inner: body,
            on_end,
        },
    )
}

/// A response body that calls its `on_end` with the call's status (see [`on_call_end`]).
pub struct OutcomeBody<B, F: OnCallEnd> {
    inner: B,
    /// Still to be called: the status is not known yet.
    on_end: Option<F>,
}

impl<B, F: OnCallEnd> OutcomeBody<B, F> {
    fn end(&mut self, code: Code) {
        if let Some(on_end) = self.on_end.take() {
            on_end.call_ended(code);
        }
    }
}

impl<B: fmt::Debug, F: OnCallEnd> fmt::Debug for OutcomeBody<B, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutcomeBody")
            .field("inner", &self.inner)
            .field("ended", &self.on_end.is_none())
            .finish()
    }
}

impl<B, F> Body for OutcomeBody<B, F>
where
    B: Body + Unpin,
    F: OnCallEnd + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if self.on_end.is_some() {
            let code = match &frame {
                Some(Ok(frame)) => frame
                    .trailers_ref()
                    .map(|t| grpc_status(t).unwrap_or(Code::Unknown)),
                Some(Err(_)) | None => Some(Code::Unknown),
            };
            if let Some(code) = code {
                self.end(code);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B, F: OnCallEnd> Drop for OutcomeBody<B, F> {
    fn drop(&mut self) {
        self.end(Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A body yielding `frames` in order, then the end.
    struct Frames(VecDeque<Result<Frame<&'static [u8]>, ()>>);

    impl Body for Frames {
        type Data = &'static [u8];
        type Error = ();

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, ()>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn status(code: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", code.parse().expect("a header value"));
        h
    }

    /// What `on_end` saw for a response with `headers` and `frames`, polled to its end
    /// (`polls` frames at most) and dropped.
    fn outcome(
        headers: HeaderMap,
        frames: Vec<Result<Frame<&'static [u8]>, ()>>,
        polls: usize,
    ) -> Vec<Code> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut response = http::Response::new(Frames(frames.into()));
        *response.headers_mut() = headers;
        let s = seen.clone();
        let response = on_call_end(response, move |c| s.lock().expect("lock").push(c));
        let mut body = response.into_body();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..polls {
            if let Poll::Ready(None) = Pin::new(&mut body).poll_frame(&mut cx) {
                break;
            }
        }
        drop(body);
        let seen = seen.lock().expect("lock").clone();
        seen
    }

    #[test]
    fn status_codes_come_from_grpc_status() {
        let mut headers = HeaderMap::new();
        assert_eq!(grpc_status(&headers), None);
        tonic::Status::not_found("x")
            .add_header(&mut headers)
            .expect("a header");
        assert_eq!(grpc_status(&headers), Some(Code::NotFound));
    }

    #[test]
    fn every_ending_calls_once_with_its_code() {
        let data = || Ok(Frame::data(&b"x"[..]));
        // Trailers-only: at once, from the headers.
        assert_eq!(outcome(status("5"), vec![], 0), [Code::NotFound]);
        // Trailers.
        let trailers = Ok(Frame::trailers(status("0")));
        assert_eq!(
            outcome(HeaderMap::new(), vec![data(), trailers], 9),
            [Code::Ok]
        );
        // An unreadable status, trailers without one, a failed body, an end without trailers.
        let bad = Ok(Frame::trailers(status("x")));
        assert_eq!(outcome(HeaderMap::new(), vec![bad], 9), [Code::Unknown]);
        let none = Ok(Frame::trailers(HeaderMap::new()));
        assert_eq!(outcome(HeaderMap::new(), vec![none], 9), [Code::Unknown]);
        assert_eq!(
            outcome(HeaderMap::new(), vec![data(), Err(())], 9),
            [Code::Unknown]
        );
        assert_eq!(outcome(HeaderMap::new(), vec![data()], 9), [Code::Unknown]);
        // Dropped before its trailers.
        let trailers = Ok(Frame::trailers(status("0")));
        assert_eq!(
            outcome(HeaderMap::new(), vec![data(), trailers], 1),
            [Code::Cancelled]
        );
    }
}
