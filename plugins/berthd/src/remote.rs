//! The remote listener: containerd's `[grpc] tcp_address` with `tcp_tls_cert`, `tcp_tls_key`
//! and `tcp_tls_ca`. The TCP connections join the unix socket's connections in one stream, so
//! the same server (routes, authority fix, limits, spans) serves both.
//!
//! As in containerd: the listener speaks TLS (1.2 or 1.3, rustls) when a certificate and key
//! are given, and requires a client certificate signed by `tcp_tls_ca` when that is given too.
//! Unlike containerd, half a certificate pair, or a CA without one, is a start-up error rather
//! than a silently plaintext listener. A refused handshake is logged with rustls' reason.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{bail, Context as _};
use berth_registry::config::GrpcConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

/// How long a TCP client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Accepted connections waiting for the server to take them.
const ACCEPT_QUEUE: usize = 64;
/// The pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The bound TCP listener and its TLS set-up, if any.
pub struct Remote {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Remote {
    /// Reads the TLS files and binds `[grpc] tcp_address`; `None` when no address is set.
    pub async fn listen(grpc: &GrpcConfig) -> anyhow::Result<Option<Remote>> {
        let tls = tls_config(grpc)?;
        if grpc.tcp_address.is_empty() {
            if tls.is_some() {
                tracing::warn!("[grpc] tcp_tls_cert and tcp_tls_key are set without tcp_address; no TCP listener");
            }
            return Ok(None);
        }
        // Go's ":port" means every address.
        let address = match grpc.tcp_address.strip_prefix(':') {
            Some(port) => format!("[::]:{port}"),
            None => grpc.tcp_address.clone(),
        };
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("[grpc] tcp_address: listen on {}", grpc.tcp_address))?;
        let local = listener.local_addr().ok();
        tracing::info!(
            address = ?local,
            tls = tls.is_some(),
            client_certificates = !grpc.tcp_tls_ca.is_empty(),
            "serving on TCP"
        );
        Ok(Some(Remote {
            listener,
            tls: tls.map(|c| TlsAcceptor::from(Arc::new(c))),
        }))
    }
}

/// The server's TLS configuration from the `[grpc] tcp_tls_*` keys; `None` without TLS.
fn tls_config(grpc: &GrpcConfig) -> anyhow::Result<Option<ServerConfig>> {
    let (cert, key, ca) = (&grpc.tcp_tls_cert, &grpc.tcp_tls_key, &grpc.tcp_tls_ca);
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => {
            if !ca.is_empty() {
                bail!("[grpc] tcp_tls_ca is set but tcp_tls_cert and tcp_tls_key are not: client certificates need a TLS listener");
            }
            return Ok(None);
        }
        (false, true) => {
            bail!("[grpc] tcp_tls_cert is set without tcp_tls_key: give both or neither")
        }
        (true, false) => {
            bail!("[grpc] tcp_tls_key is set without tcp_tls_cert: give both or neither")
        }
        (false, false) => {}
    }
    let chain = read_certs(Path::new(cert), "tcp_tls_cert")?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("[grpc] tcp_tls_key: read a PEM private key from {key}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?;
    let builder = if ca.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for der in read_certs(Path::new(ca), "tcp_tls_ca")? {
            roots
                .add(der)
                .with_context(|| format!("[grpc] tcp_tls_ca: a certificate in {ca}"))?;
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("[grpc] tcp_tls_ca: {ca}"))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(chain, key_der)
        .with_context(|| format!("[grpc] tcp_tls_cert {cert} and tcp_tls_key {key}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(config))
}

/// Every certificate of a PEM file; none is an error naming the file.
fn read_certs(path: &Path, key: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "[grpc] {key}: read PEM certificates from {}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        bail!("[grpc] {key}: no certificate in {}", path.display());
    }
    Ok(certs)
}

/// The connections of the unix socket and, when configured, of the TCP listener, as one stream
/// for the gRPC server. TLS handshakes run in their own tasks, so a slow client holds nobody up.
pub fn incoming(
    unix: UnixListener,
    remote: Option<Remote>,
) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPT_QUEUE);
    if let Some(remote) = remote {
        tokio::spawn(accept_tcp(remote, tx));
    }
    UnixListenerStream::new(unix)
        .map(|conn| conn.map(Conn::Unix))
        .merge(ReceiverStream::new(rx).map(Ok))
}

/// Accepts TCP connections until the server stops taking them.
async fn accept_tcp(remote: Remote, tx: tokio::sync::mpsc::Sender<Conn>) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = remote.listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept a TCP connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = tx.closed() => return,
        };
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = remote.tls.clone() else {
            if tx.send(Conn::Tcp(stream)).await.is_err() {
                return;
            }
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send(Conn::Tls(Box::new(tls))).await;
                }
                Ok(Err(e)) => {
                    tracing::warn!(peer = %peer, reason = %e, "TLS handshake refused");
                }
                Err(_) => {
                    tracing::warn!(peer = %peer, reason = "timed out", "TLS handshake refused");
                }
            }
        });
    }
}

/// One client connection, from the unix socket or the TCP listener.
#[derive(Debug)]
pub enum Conn {
    /// A unix socket connection.
    Unix(UnixStream),
    /// A plain TCP connection (no `tcp_tls_cert`).
    Tcp(TcpStream),
    /// A TCP connection after its TLS handshake.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for Conn {
    /// The TCP peer; `None` on the unix socket.
    type ConnectInfo = Option<SocketAddr>;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Conn::Unix(_) => None,
            Conn::Tcp(s) => s.peer_addr().ok(),
            Conn::Tls(s) => s.get_ref().0.peer_addr().ok(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Unix(s) => s.is_write_vectored(),
            Conn::Tcp(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
