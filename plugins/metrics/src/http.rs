//! The `/v1/metrics` listener: HTTP/1.1 on TCP, the path containerd serves its metrics on.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

use crate::error::MetricsError;
use crate::Exporter;

/// The path of the metrics (containerd's `/v1/metrics`).
pub const METRICS_PATH: &str = "/v1/metrics";

/// The bound metrics socket, bound before the daemon starts anything else so that an address
/// in use or unparsable stops start-up.
#[derive(Debug)]
pub struct Listener {
    inner: std::net::TcpListener,
    local: SocketAddr,
}

impl Listener {
    /// Binds `address` (`host:port`, as `[metrics] address` gives it).
    pub fn bind(address: &str) -> Result<Listener, MetricsError> {
        let bind_err = |source| MetricsError::Bind {
            address: address.to_owned(),
            source,
        };
        let inner = std::net::TcpListener::bind(address).map_err(bind_err)?;
        inner.set_nonblocking(true).map_err(bind_err)?;
        let local = inner.local_addr().map_err(bind_err)?;
        Ok(Listener { inner, local })
    }

    /// The address bound (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// Serves `exporter`'s metrics on `listener` until `stop` resolves. Runs on the daemon's
/// runtime; each connection is a task of its own.
pub async fn serve(
    listener: Listener,
    exporter: Arc<Exporter>,
    stop: impl Future<Output = ()>,
) -> Result<(), MetricsError> {
    let address = listener.local;
    let listener =
        tokio::net::TcpListener::from_std(listener.inner).map_err(|source| MetricsError::Bind {
            address: address.to_string(),
            source,
        })?;
    tracing::info!(address = %address, path = METRICS_PATH, "serving metrics");
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "metrics: accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => return Ok(()),
        };
        let exporter = exporter.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(exporter.clone(), req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics: connection");
            }
        });
    }
}

type Response = http::Response<Full<Bytes>>;

fn plain(status: http::StatusCode, text: &'static str) -> Response {
    let mut r = http::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Answers one request: the metrics on `GET /v1/metrics`, what Go's `net/http` answers
/// otherwise.
#[tracing::instrument(name = "metrics", skip_all, fields(method = %req.method(), path = %req.uri().path()))]
async fn handle(
    exporter: Arc<Exporter>,
    req: http::Request<Incoming>,
) -> Result<Response, Infallible> {
    if req.uri().path() != METRICS_PATH {
        return Ok(plain(http::StatusCode::NOT_FOUND, "404 page not found\n"));
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        let mut r = plain(http::StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        r.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
        return Ok(r);
    }
    match exporter.scrape().await {
        Ok(text) => {
            let mut r = http::Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(CONTENT_TYPE),
            );
            Ok(r)
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics: scrape");
            Ok(plain(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "the metrics could not be gathered; see the daemon's log\n",
            ))
        }
    }
}
