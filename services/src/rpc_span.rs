//! The span every gRPC call runs in, one per call, whatever service answers it.
//!
//! [`RpcSpanLayer`] goes on the daemon's server around the routing table. For each call it opens
//! an INFO span named `rpc` carrying `rpc.service` and `rpc.method` (from the path
//! `/package.Service/Method`) and `namespace` (the `containerd-namespace` header, as sent), and
//! declares the object fields a handler fills in with [`record`] once the request is decoded:
//! `id`, `exec_id`, `digest`, `ref`, `name`, `key`, ... ([`OBJECT_FIELDS`]). When the answer's
//! status is known (the response headers of an error, or the trailers at the end of the body)
//! it records `rpc.grpc.status_code`, and the span closes when the body is done, so a span's
//! time covers the whole call.
//!
//! With an OpenTelemetry exporter on ([`set_otel_fields`]), the span also carries `otel.name`
//! (`package.Service/Method`, the name otelgrpc gives a server span), `otel.kind`, `rpc.system`
//! and, for an error, `otel.status_code`; without one these are never recorded.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{ready, Context, Poll};

use berth_errdefs::outcome::{on_call_end, OnCallEnd, OutcomeBody};
use http::HeaderMap;
use tonic::body::Body;
use tracing::field::Empty;
use tracing::Span;

use crate::namespace::NAMESPACE_HEADER;

/// The object fields every call's span declares; a handler records those its request names.
/// A field recorded that is not in this list is dropped by `tracing`.
pub const OBJECT_FIELDS: &[&str] = &[
    "id",
    "exec_id",
    "digest",
    "ref",
    "name",
    "key",
    "parent",
    "snapshotter",
    "topic",
    "media_type",
    "filters",
    "signal",
    "lease",
    "sandbox_id",
    "container_id",
    "image",
];

static OTEL_FIELDS: AtomicBool = AtomicBool::new(false);

/// Whether the spans carry the OpenTelemetry fields (`otel.name`, ...); on only while an
/// exporter runs, so that text and JSON logs stay as they are without one.
pub fn set_otel_fields(on: bool) {
    OTEL_FIELDS.store(on, Ordering::Relaxed);
}

/// Records `value` as the current call's `field` (one of [`OBJECT_FIELDS`]) unless it is
/// empty. Outside a call, or with the span filtered out, nothing happens.
pub fn record(field: &'static str, value: &str) {
    if !value.is_empty() {
        Span::current().record(field, tracing::field::display(value));
    }
}

/// Records several fields of the current call at once (empty values are left out).
pub fn record_all(fields: &[(&'static str, &str)]) {
    let span = Span::current();
    for (field, value) in fields {
        if !value.is_empty() {
            span.record(*field, tracing::field::display(value));
        }
    }
}

/// `(service, method)` of a gRPC path `/package.Service/Method`.
fn service_and_method(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').unwrap_or((path, ""))
}

/// The span of one call to `path` with `headers`.
fn span_for(path: &str, headers: &HeaderMap) -> Span {
    let (service, method) = service_and_method(path);
    let namespace = headers.get(NAMESPACE_HEADER).and_then(|v| v.to_str().ok());
    let span = tracing::info_span!(
        "rpc",
        rpc.service = %service,
        rpc.method = %method,
        namespace = namespace.map(tracing::field::display),
        rpc.grpc.status_code = Empty,
        id = Empty,
        exec_id = Empty,
        digest = Empty,
        r#ref = Empty,
        name = Empty,
        key = Empty,
        parent = Empty,
        snapshotter = Empty,
        topic = Empty,
        media_type = Empty,
        filters = Empty,
        signal = Empty,
        lease = Empty,
        sandbox_id = Empty,
        container_id = Empty,
        image = Empty,
        rpc.system = Empty,
        otel.name = Empty,
        otel.kind = Empty,
        otel.status_code = Empty,
    );
    if OTEL_FIELDS.load(Ordering::Relaxed) && !span.is_disabled() {
        span.record(
            "otel.name",
            tracing::field::display(path.strip_prefix('/').unwrap_or(path)),
        );
        span.record("otel.kind", "server");
        span.record("rpc.system", tracing::field::display("grpc"));
    }
    span
}

/// Records a call's status code on its span.
fn record_status(span: &Span, code: i64) {
    span.record("rpc.grpc.status_code", code);
    if code != 0 && OTEL_FIELDS.load(Ordering::Relaxed) {
        span.record("otel.status_code", "ERROR");
    }
}

/// Puts every call in its own span (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcSpanLayer;

impl<S> tower::Layer<S> for RpcSpanLayer {
    type Service = RpcSpans<S>;

    fn layer(&self, inner: S) -> RpcSpans<S> {
        RpcSpans { inner }
    }
}

/// A service `S` whose calls each run in their own span.
#[derive(Debug, Clone)]
pub struct RpcSpans<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for RpcSpans<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = http::Response<SpanBody<RB>>;
    type Error = Infallible;
    type Future = RpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let span = span_for(req.uri().path(), req.headers());
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        RpcFuture {
            inner,
            span: Some(span),
        }
    }
}

/// A call's answer, computed inside its span.
#[derive(Debug)]
pub struct RpcFuture<F> {
    inner: F,
    span: Option<Span>,
}

impl<F, RB> Future for RpcFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, Infallible>> + Unpin,
{
    type Output = Result<http::Response<SpanBody<RB>>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let response = {
            let _entered = this.span.as_ref().map(Span::enter);
            ready!(Pin::new(&mut this.inner).poll(cx))
        };
        let Ok(response) = response;
        let span = this.span.take().unwrap_or_else(Span::none);
        Poll::Ready(Ok(on_call_end(response, SpanEnd(span))))
    }
}

/// A call's span, kept open until the call's status is known (the answer's headers or the end
/// of its body), then given the status and closed. A call whose client went away before the
/// end gets Cancelled, as grpc-go's server reports a cancelled context.
#[derive(Debug)]
pub struct SpanEnd(Span);

impl OnCallEnd for SpanEnd {
    fn call_ended(self, code: tonic::Code) {
        record_status(&self.0, code as i64);
    }
}

/// A response body holding its call's span until the status is known.
pub type SpanBody<B = Body> = OutcomeBody<B, SpanEnd>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            service_and_method("/containerd.services.tasks.v1.Tasks/Create"),
            ("containerd.services.tasks.v1.Tasks", "Create")
        );
        assert_eq!(service_and_method("/a.B"), ("a.B", ""));
    }
}
