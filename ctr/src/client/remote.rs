//! The TCP side of [`super::Client::connect`]: `tcp://host:port`, over TLS when `--tlscacert`
//! is given (berthd's `[grpc] tcp_tls_*`), presenting `--tlscert`/`--tlskey` when given.

use std::io;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

use crate::cli::GlobalOpts;

/// The TLS set-up the options ask for; `None` for plain TCP (no TLS flag given).
pub(super) fn tls_connector(opts: &GlobalOpts) -> Result<Option<TlsConnector>> {
    let (ca, cert, key) = (&opts.tlscacert, &opts.tlscert, &opts.tlskey);
    if ca.is_none() && cert.is_none() && key.is_none() {
        return Ok(None);
    }
    let Some(ca) = ca else {
        bail!("--tlscert and --tlskey need --tlscacert to verify berthd's certificate");
    };
    let mut roots = RootCertStore::empty();
    for der in read_certs(ca, "--tlscacert")? {
        roots
            .add(der)
            .with_context(|| format!("--tlscacert: a certificate in {}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let mut config = match (cert, key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "--tlscert")?;
            let key_der = PrivateKeyDer::from_pem_file(key).with_context(|| {
                format!("--tlskey: read a PEM private key from {}", key.display())
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .with_context(|| {
                    format!(
                        "--tlscert {} and --tlskey {}",
                        cert.display(),
                        key.display()
                    )
                })?
        }
        (Some(_), None) => bail!("--tlscert is given without --tlskey: give both"),
        (None, Some(_)) => bail!("--tlskey is given without --tlscert: give both"),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(TlsConnector::from(Arc::new(config))))
}

/// Every certificate of a PEM file; none is an error naming the file.
fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("{flag}: read PEM certificates from {}", path.display()))?;
    if certs.is_empty() {
        bail!("{flag}: no certificate in {}", path.display());
    }
    Ok(certs)
}

/// Dials `host:port` and, with a connector, makes the TLS handshake naming `host`.
pub(super) async fn connect(
    host_port: String,
    tls: Option<TlsConnector>,
) -> io::Result<TokioIo<Stream>> {
    let tcp = TcpStream::connect(&host_port).await?;
    tcp.set_nodelay(true)?;
    let Some(tls) = tls else {
        return Ok(TokioIo::new(Either::Left(tcp)));
    };
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port.as_str(), |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
    let stream = tls.connect(name, tcp).await?;
    Ok(TokioIo::new(Either::Right(stream)))
}

/// A TCP connection to berthd, plain or under TLS.
pub(super) type Stream = Either<TcpStream, TlsStream<TcpStream>>;
