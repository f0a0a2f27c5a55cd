//! The streaming HTTP server: `GET`/`POST` on `/exec/<token>`, `/attach/<token>` and
//! `/portforward/<token>` take the token's request out of the cache (404 when it is unknown,
//! used or expired), negotiate the sub-protocol (`X-Stream-Protocol-Version`), upgrade to
//! SPDY/3.1 (or WebSocket, see [`super::websocket`]) and serve the remotecommand or
//! portforward protocol on the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::runtime::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming as Body;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use super::spdy::{self, Connection, UPGRADE_PROTOCOL};
use super::tokens::{Pending, Tokens};
use super::{portforward, remotecommand, websocket, StreamRuntime};
use crate::config::CriConfig;
use crate::error::{CriError, Result};

/// The request header offering protocols, and the answer's header naming the chosen one.
pub const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
/// The refusal's header listing what the server speaks.
pub const ACCEPTED_HEADER: &str = "X-Accepted-Stream-Protocol-Versions";

/// The streaming server: its address and its token cache. Bound by [`StreamServer::bind`],
/// serving after [`StreamServer::serve`].
pub struct StreamServer {
    base_url: String,
    addr: SocketAddr,
    tokens: Arc<Tokens>,
    idle_timeout: Option<Duration>,
    listener: std::sync::Mutex<Option<std::net::TcpListener>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: CancellationToken,
}

impl std::fmt::Debug for StreamServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamServer")
            .field("base_url", &self.base_url)
            .field("tls", &self.tls.is_some())
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// The TLS acceptor of `enable_tls_streaming` with `x509_key_pair_streaming`'s PEM files.
fn tls_acceptor(config: &CriConfig) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let pair = &config.x509_key_pair_streaming;
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
    if pair.tls_cert_file.is_empty() || pair.tls_key_file.is_empty() {
        return Err(invalid(
            "enable_tls_streaming needs x509_key_pair_streaming's tls_cert_file and tls_key_file \
             (no self-signed certificate is generated)"
                .into(),
        ));
    }
    let certs = CertificateDer::pem_file_iter(&pair.tls_cert_file)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| invalid(format!("tls_cert_file {}: {e}", pair.tls_cert_file)))?;
    let key = PrivateKeyDer::from_pem_file(&pair.tls_key_file)
        .map_err(|e| invalid(format!("tls_key_file {}: {e}", pair.tls_key_file)))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let server = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(format!("x509_key_pair_streaming: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

impl StreamServer {
    /// Binds `stream_server_address:stream_server_port` ("0": any free port).
    pub fn bind(config: &CriConfig) -> std::io::Result<StreamServer> {
        let host = if config.stream_server_address.is_empty() {
            "127.0.0.1"
        } else {
            config.stream_server_address.as_str()
        };
        let port: u16 = if config.stream_server_port.is_empty() {
            0
        } else {
            config.stream_server_port.parse().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "stream_server_port {:?} is not a port",
                        config.stream_server_port
                    ),
                )
            })?
        };
        let tls = if config.enable_tls_streaming {
            Some(tls_acceptor(config)?)
        } else {
            None
        };
        let listener = std::net::TcpListener::bind((host, port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let idle_timeout = berth_registry::duration::parse_go_duration(&config.stream_idle_timeout)
            .filter(|d| !d.is_zero());
        Ok(StreamServer {
            base_url: format!("{}://{addr}", if tls.is_some() { "https" } else { "http" }),
            addr,
            tokens: Arc::new(Tokens::default()),
            idle_timeout,
            listener: std::sync::Mutex::new(Some(listener)),
            tls,
            stop: CancellationToken::new(),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts accepting connections (once; later calls do nothing), handing sessions to
    /// `runtime`. Needs a Tokio runtime.
    pub fn serve(&self, runtime: Arc<dyn StreamRuntime>) -> std::io::Result<()> {
        let Some(listener) = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(());
        };
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let state = Arc::new(State {
            tokens: self.tokens.clone(),
            idle_timeout: self.idle_timeout,
            runtime,
        });
        let stop = self.stop.clone();
        let span = tracing::info_span!("stream_server", addr = %self.addr);
        tokio::spawn(tracing::Instrument::instrument(
            accept_loop(listener, self.tls.clone(), state, stop),
            span,
        ));
        tracing::info!(url = %self.base_url, "streaming server started");
        Ok(())
    }

    /// Stops accepting connections.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    fn url(&self, request: Pending) -> Result<String> {
        let kind = request.kind();
        let token = self
            .tokens
            .insert(request)
            .map_err(|e| CriError::FailedPrecondition(e.to_string()))?;
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }

    /// The URL for an Exec (the request already validated).
    pub fn exec_url(&self, req: ExecRequest) -> Result<String> {
        self.url(Pending::Exec(req))
    }

    /// The URL for an Attach (the request already validated).
    pub fn attach_url(&self, req: AttachRequest) -> Result<String> {
        self.url(Pending::Attach(req))
    }

    /// The URL for a PortForward (the request already validated).
    pub fn port_forward_url(&self, req: PortForwardRequest) -> Result<String> {
        self.url(Pending::PortForward(req))
    }
}

impl Drop for StreamServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct State {
    tokens: Arc<Tokens>,
    idle_timeout: Option<Duration>,
    runtime: Arc<dyn StreamRuntime>,
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => serve_http(TokioIo::new(tcp), state).await,
                Some(tls) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await;
                    match handshake {
                        Ok(Ok(stream)) => serve_http(TokioIo::new(stream), state).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "streaming connection failed");
            }
        });
    }
}

async fn serve_http<I>(io: I, state: Arc<State>) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(route(state, req)) }
    });
    // A client that never finishes its request head is dropped (hyper's header read
    // timeout, 30 s, needs the timer); keep-alive stays on, as turning it off would answer
    // `Connection: close` instead of `Connection: Upgrade`.
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(io, service)
        .with_upgrades()
        .await
}

fn text(status: StatusCode, body: &str) -> Response<String> {
    let mut resp = Response::new(format!("{body}\n"));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn not_found() -> Response<String> {
    text(StatusCode::NOT_FOUND, "404 page not found")
}

fn route(state: Arc<State>, req: Request<Body>) -> Response<String> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return not_found();
    }
    let mut parts = req.uri().path().trim_start_matches('/').splitn(2, '/');
    let (Some(kind), Some(token)) = (parts.next(), parts.next()) else {
        return not_found();
    };
    if !matches!(kind, "exec" | "attach" | "portforward") || token.is_empty() || token.contains('/')
    {
        return not_found();
    }
    let Some(pending) = state.tokens.consume(token) else {
        tracing::debug!(kind, "unknown, used or expired token");
        return not_found();
    };
    if pending.kind() != kind {
        return not_found();
    }
    if is_websocket(&req) {
        return websocket_route(state, req, pending);
    }
    let offered: Vec<String> = req
        .headers()
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    let server: &[&str] = match pending {
        Pending::PortForward(_) => &[portforward::PROTOCOL],
        _ => &remotecommand::PROTOCOLS,
    };
    // The client's order wins, as httpstream.Handshake; a client offering nothing is legacy.
    let chosen = if offered.is_empty() {
        String::new()
    } else {
        match offered.iter().find(|p| server.contains(&p.as_str())) {
            Some(p) => p.clone(),
            None => {
                let mut resp = text(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {server:?}"
                    ),
                );
                for p in server {
                    resp.headers_mut()
                        .append(ACCEPTED_HEADER, header::HeaderValue::from_static(p));
                }
                return resp;
            }
        }
    };
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !connection_upgrade || !upgrade.eq_ignore_ascii_case(UPGRADE_PROTOCOL) {
        return text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request",
        );
    }

    let mut resp = Response::new(String::new());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static(UPGRADE_PROTOCOL),
    );
    if !chosen.is_empty() {
        if let Ok(v) = header::HeaderValue::from_str(&chosen) {
            h.insert(PROTOCOL_HEADER, v);
        }
    }
    let span = tracing::debug_span!("stream_session", kind, protocol = %chosen);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            let (conn, incoming) = Connection::new(
                TokioIo::new(upgraded),
                true,
                spdy::Options {
                    idle_timeout: state.idle_timeout,
                },
            );
            session(state, conn, incoming, pending, &chosen).await;
        },
        span,
    ));
    resp
}

async fn session(
    state: Arc<State>,
    conn: Connection,
    incoming: spdy::Incoming,
    pending: Pending,
    protocol: &str,
) {
    let runtime = state.runtime.clone();
    match pending {
        Pending::PortForward(req) => {
            portforward::serve(conn, incoming, req.pod_sandbox_id, runtime).await
        }
        Pending::Exec(req) => {
            let version =
                remotecommand::Version::from_name(protocol).unwrap_or(remotecommand::Version::V1);
            let wanted = remotecommand::Wanted {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                tty: req.tty,
            };
            let action = remotecommand::Action::Exec {
                container_id: req.container_id,
                cmd: req.cmd,
            };
            remotecommand::serve(conn, incoming, version, wanted, action, runtime).await
        }
        Pending::Attach(req) => {
            let version =
                remotecommand::Version::from_name(protocol).unwrap_or(remotecommand::Version::V1);
            let wanted = remotecommand::Wanted {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                tty: req.tty,
            };
            let action = remotecommand::Action::Attach {
                container_id: req.container_id,
            };
            remotecommand::serve(conn, incoming, version, wanted, action, runtime).await
        }
    }
}

fn header_tokens(req: &Request<Body>, name: impl header::AsHeaderName) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

fn is_websocket(req: &Request<Body>) -> bool {
    header_tokens(req, header::CONNECTION)
        .iter()
        .any(|t| t.eq_ignore_ascii_case("upgrade"))
        && header_tokens(req, header::UPGRADE)
            .iter()
            .any(|t| t.eq_ignore_ascii_case("websocket"))
}

fn websocket_route(state: Arc<State>, req: Request<Body>, pending: Pending) -> Response<String> {
    let offered = header_tokens(&req, header::SEC_WEBSOCKET_PROTOCOL);
    let server: &[&str] = match pending {
        Pending::PortForward(_) => &websocket::PORT_FORWARD_PROTOCOLS,
        _ => &websocket::EXEC_PROTOCOLS,
    };
    let chosen = if offered.is_empty() {
        String::new()
    } else {
        match offered.iter().find(|p| server.contains(&p.as_str())) {
            Some(p) => p.clone(),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {server:?}"
                    ),
                )
            }
        }
    };
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let ports: Vec<u16> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "port")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    let tunnel = chosen == websocket::TUNNEL_PROTOCOL;
    if matches!(pending, Pending::PortForward(_)) && !tunnel && ports.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "query parameter \"port\" is required",
        );
    }
    let mut resp = Response::new(String::new());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if !chosen.is_empty() {
        if let Ok(v) = header::HeaderValue::from_str(&chosen) {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
    }
    let span = tracing::debug_span!("stream_session", kind = pending.kind(), protocol = %chosen, websocket = true);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            let ws = websocket::accept(upgraded).await;
            let runtime = state.runtime.clone();
            let protocol = if chosen.is_empty() {
                "channel.k8s.io"
            } else {
                chosen.as_str()
            };
            match pending {
                Pending::PortForward(req) if tunnel => {
                    websocket::serve_tunnel(ws, req.pod_sandbox_id, state.idle_timeout, runtime)
                        .await
                }
                Pending::PortForward(req) => {
                    websocket::serve_port_forward(ws, ports, req.pod_sandbox_id, runtime).await
                }
                Pending::Exec(req) => {
                    let wanted = remotecommand::Wanted {
                        stdin: req.stdin,
                        stdout: req.stdout,
                        stderr: req.stderr,
                        tty: req.tty,
                    };
                    let action = remotecommand::Action::Exec {
                        container_id: req.container_id,
                        cmd: req.cmd,
                    };
                    websocket::serve_exec(ws, protocol, wanted, action, runtime).await
                }
                Pending::Attach(req) => {
                    let wanted = remotecommand::Wanted {
                        stdin: req.stdin,
                        stdout: req.stdout,
                        stderr: req.stderr,
                        tty: req.tty,
                    };
                    let action = remotecommand::Action::Attach {
                        container_id: req.container_id,
                    };
                    websocket::serve_exec(ws, protocol, wanted, action, runtime).await
                }
            }
        },
        span,
    ));
    resp
}
