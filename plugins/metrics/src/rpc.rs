//! gRPC server counters under grpc-go-prometheus's names, as containerd exports them:
//! `grpc_server_started_total` and `grpc_server_handled_total` by service, method and type
//! (and code), and with `[metrics] grpc_histogram = true` the `grpc_server_handling_seconds`
//! histograms.
//!
//! The layer sits in front of the routing table. Per call it looks the path up in a map of
//! series made once per method, bumps an atomic counter, and watches the response for its
//! `grpc-status`: in the headers for a trailers-only answer, else in the trailers at the end of
//! the body. A call whose body is dropped before its status (a client gone mid-stream) counts
//! as Canceled, which is what grpc-go's handler returns then. berthd adds the layer only when a
//! metrics address is configured.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use berth_errdefs::outcome::on_call_end;
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tonic::body::Body;

/// At most this many distinct paths get series of their own: a client calling made-up methods
/// must not grow the daemon's memory without bound. Every API method fits many times over.
const MAX_METHODS: usize = 1024;

/// The buckets of grpc-go-prometheus's histograms (client_golang's `DefBuckets`), in seconds.
const HANDLING_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// grpc-go's names of the status codes (`codes.Code.String()`), by number.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The streaming methods of the API berthd serves (from the `.proto` files); every other
/// method is unary.
const STREAMING: [(&str, &str); 7] = [
    (
        "/containerd.services.containers.v1.Containers/ListStream",
        "server_stream",
    ),
    (
        "/containerd.services.content.v1.Content/List",
        "server_stream",
    ),
    (
        "/containerd.services.content.v1.Content/Read",
        "server_stream",
    ),
    (
        "/containerd.services.content.v1.Content/Write",
        "bidi_stream",
    ),
    (
        "/containerd.services.events.v1.Events/Subscribe",
        "server_stream",
    ),
    (
        "/containerd.services.snapshots.v1.Snapshots/List",
        "server_stream",
    ),
    (
        "/runtime.v1.RuntimeService/GetContainerEvents",
        "server_stream",
    ),
];

/// Labels of the started counter and the histogram (alphabetical, as client_golang prints).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_method: String,
    grpc_service: String,
    grpc_type: &'static str,
}

/// Labels of the handled counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_code: &'static str,
    grpc_method: String,
    grpc_service: String,
    grpc_type: &'static str,
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

fn handling_histogram() -> Histogram {
    Histogram::new(HANDLING_BUCKETS)
}

/// The gRPC series of the daemon.
#[derive(Debug)]
pub struct RpcMetrics {
    /// The series of each path seen, made on its first call.
    methods: RwLock<HashMap<Box<str>, Arc<MethodSeries>>>,
    started: Family<MethodLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling: Option<HistogramFamily>,
}

/// One method's series, shared by its calls.
#[derive(Debug)]
struct MethodSeries {
    labels: MethodLabels,
    started: Counter,
    /// By code number, made on the first call that ends with it.
    handled: [OnceLock<Counter>; CODE_NAMES.len()],
    handled_family: Family<HandledLabels, Counter>,
    handling: Option<Histogram>,
}

impl MethodSeries {
    fn finish(&self, code: usize, started: Option<Instant>) {
        let code = code.min(CODE_NAMES.len() - 1);
        self.handled[code]
            .get_or_init(|| {
                self.handled_family.get_or_create_owned(&HandledLabels {
                    grpc_code: CODE_NAMES[code],
                    grpc_method: self.labels.grpc_method.clone(),
                    grpc_service: self.labels.grpc_service.clone(),
                    grpc_type: self.labels.grpc_type,
                })
            })
            .inc();
        if let (Some(histogram), Some(started)) = (&self.handling, started) {
            histogram.observe(started.elapsed().as_secs_f64());
        }
    }
}

impl RpcMetrics {
    /// Registers the gRPC series in `registry`; `histogram` adds the handling-time histograms.
    pub fn register(registry: &mut Registry, histogram: bool) -> Arc<RpcMetrics> {
        let metrics = RpcMetrics {
            methods: RwLock::default(),
            started: Family::default(),
            handled: Family::default(),
            handling: histogram
                .then(|| HistogramFamily::new_with_constructor(handling_histogram as fn() -> _)),
        };
        // The encoder appends `_total` to counters.
        registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server",
            metrics.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure",
            metrics.handled.clone(),
        );
        if let Some(handling) = &metrics.handling {
            registry.register(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level \
                 handled by the server",
                handling.clone(),
            );
        }
        Arc::new(metrics)
    }

    /// The series of `path` (`/package.Service/Method`); None past [`MAX_METHODS`].
    fn series(&self, path: &str) -> Option<Arc<MethodSeries>> {
        let found = self
            .methods
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(path)
            .cloned();
        if found.is_some() {
            return found;
        }
        let mut methods = self
            .methods
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(series) = methods.get(path) {
            return Some(series.clone());
        }
        if methods.len() >= MAX_METHODS {
            return None;
        }
        let (service, method) = split_path(path);
        let labels = MethodLabels {
            grpc_method: method.to_owned(),
            grpc_service: service.to_owned(),
            grpc_type: method_type(path),
        };
        let series = Arc::new(MethodSeries {
            started: self.started.get_or_create_owned(&labels),
            handling: self
                .handling
                .as_ref()
                .map(|family| family.get_or_create_owned(&labels)),
            labels,
            handled: Default::default(),
            handled_family: self.handled.clone(),
        });
        methods.insert(path.into(), series.clone());
        Some(series)
    }

    /// Whether handling times are recorded.
    fn timed(&self) -> bool {
        self.handling.is_some()
    }
}

/// `package.Service` and `Method` of a gRPC path.
fn split_path(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').unwrap_or((path, ""))
}

/// grpc-go-prometheus's `grpc_type` of a path.
fn method_type(path: &str) -> &'static str {
    STREAMING
        .iter()
        .find(|(p, _)| *p == path)
        .map_or("unary", |(_, kind)| kind)
}

/// The tower layer counting every call ([`RpcMetrics`]).
#[derive(Debug, Clone)]
pub struct RpcLayer {
    metrics: Arc<RpcMetrics>,
}

impl RpcLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<RpcMetrics>) -> RpcLayer {
        RpcLayer { metrics }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// A service whose calls are counted.
#[derive(Debug, Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: Arc<RpcMetrics>,
}

/// The response future of [`Counted`].
pub type CountedFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Counted<S>
where
    S: tower::Service<
        http::Request<ReqBody>,
        Response = http::Response<ResBody>,
        Error = Infallible,
    >,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    // tonic's body, as the layers around expect (the span layer among them).
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = CountedFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let series = self.metrics.series(req.uri().path());
        let call = series.map(|series| {
            series.started.inc();
            Call {
                series,
                started: self.metrics.timed().then(Instant::now),
            }
        });
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = on_call_end(response.await?, move |code| {
                if let Some(call) = call {
                    call.finish(code as usize);
                }
            });
            let (parts, body) = response.into_parts();
            Ok(http::Response::from_parts(parts, Body::new(body)))
        })
    }
}

/// A call not yet counted as handled.
#[derive(Debug)]
struct Call {
    series: Arc<MethodSeries>,
    started: Option<Instant>,
}

impl Call {
    fn finish(self, code: usize) {
        self.series.finish(code, self.started);
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use http_body::Frame;
    use http_body_util::BodyExt;
    use prometheus_client::encoding::prometheus_text::encode;
    use tower::{Service, ServiceExt};

    use super::*;

    type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

    /// A service answering every call with `status`, in the headers (`trailers_only`) or the
    /// trailers.
    fn answering(
        status: &'static str,
        trailers_only: bool,
    ) -> impl tower::Service<
        http::Request<()>,
        Response = http::Response<TestBody>,
        Error = Infallible,
        Future = std::future::Ready<Result<http::Response<TestBody>, Infallible>>,
    > + Clone {
        tower::service_fn(move |_req: http::Request<()>| {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", status.parse().unwrap());
            let response = if trailers_only {
                let mut r = http::Response::new(
                    http_body_util::Empty::new()
                        .map_err(|e| match e {})
                        .boxed_unsync(),
                );
                *r.headers_mut() = trailers;
                r
            } else {
                let frames = Frames(
                    [
                        Frame::data(Bytes::from_static(b"\0\0\0\0\0")),
                        Frame::trailers(trailers),
                    ]
                    .into(),
                );
                http::Response::new(frames.boxed_unsync())
            };
            std::future::ready(Ok(response))
        })
    }

    /// A body of the given frames.
    struct Frames(std::collections::VecDeque<Frame<Bytes>>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        encode(&mut out, registry).unwrap();
        out
    }

    fn request(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).unwrap()
    }

    #[tokio::test]
    async fn calls_are_counted_by_method_and_code() {
        let mut registry = Registry::default();
        let metrics = RpcMetrics::register(&mut registry, false);
        let layer = RpcLayer::new(metrics);
        let mut ok = tower::Layer::layer(&layer, answering("0", false));
        let mut missing = tower::Layer::layer(&layer, answering("5", true));
        for _ in 0..2 {
            let r = ok
                .ready()
                .await
                .unwrap()
                .call(request("/containerd.services.version.v1.Version/Version"))
                .await
                .unwrap();
            r.into_body().collect().await.unwrap();
        }
        let r = missing
            .call(request("/containerd.services.content.v1.Content/Read"))
            .await
            .unwrap();
        r.into_body().collect().await.unwrap();
        // Dropped before its trailers: a client that went away.
        drop(
            ok.call(request("/containerd.services.events.v1.Events/Subscribe"))
                .await
                .unwrap(),
        );

        let out = text(&registry);
        for line in [
            "grpc_server_started_total{grpc_method=\"Version\",grpc_service=\"containerd.services.version.v1.Version\",grpc_type=\"unary\"} 2",
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Version\",grpc_service=\"containerd.services.version.v1.Version\",grpc_type=\"unary\"} 2",
            "grpc_server_handled_total{grpc_code=\"NotFound\",grpc_method=\"Read\",grpc_service=\"containerd.services.content.v1.Content\",grpc_type=\"server_stream\"} 1",
            "grpc_server_handled_total{grpc_code=\"Canceled\",grpc_method=\"Subscribe\",grpc_service=\"containerd.services.events.v1.Events\",grpc_type=\"server_stream\"} 1",
        ] {
            assert!(out.contains(line), "{line}\n{out}");
        }
        assert!(!out.contains("grpc_server_handling_seconds"), "{out}");
    }

    #[tokio::test]
    async fn the_histogram_is_there_when_asked_for() {
        let mut registry = Registry::default();
        let layer = RpcLayer::new(RpcMetrics::register(&mut registry, true));
        let mut svc = tower::Layer::layer(&layer, answering("0", false));
        let r = svc
            .call(request("/containerd.services.version.v1.Version/Version"))
            .await
            .unwrap();
        r.into_body().collect().await.unwrap();
        let out = text(&registry);
        assert!(
            out.contains("# TYPE grpc_server_handling_seconds histogram"),
            "{out}"
        );
        assert!(
            out.contains("grpc_server_handling_seconds_count{grpc_method=\"Version\",grpc_service=\"containerd.services.version.v1.Version\",grpc_type=\"unary\"} 1"),
            "{out}"
        );
    }

    #[test]
    fn paths_split_and_types() {
        assert_eq!(split_path("/a.b.C/M"), ("a.b.C", "M"));
        assert_eq!(split_path("nope"), ("nope", ""));
        assert_eq!(
            method_type("/containerd.services.content.v1.Content/Write"),
            "bidi_stream"
        );
        assert_eq!(
            method_type("/containerd.services.tasks.v1.Tasks/Create"),
            "unary"
        );
    }

    #[test]
    fn made_up_methods_are_bounded() {
        let mut registry = Registry::default();
        let metrics = RpcMetrics::register(&mut registry, false);
        for i in 0..MAX_METHODS {
            assert!(metrics.series(&format!("/x.Y/M{i}")).is_some());
        }
        assert!(metrics.series("/x.Y/one-too-many").is_none());
        assert!(metrics.series("/x.Y/M0").is_some());
    }
}
