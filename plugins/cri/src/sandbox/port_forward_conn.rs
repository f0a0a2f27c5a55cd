//! The connection behind a forwarded port (containerd
//! `pkg/cri/server/sandbox_portforward_linux.go`): a TCP connection to localhost:`port`
//! made inside the pod's network namespace (the host's for a host-network pod), copied both
//! ways with the client's stream.
//!
//! A socket keeps the namespace it was made in, so the connect runs on a thread of its own
//! that enters the namespace first (and ends with it); the connected socket then moves to the
//! async runtime.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sched::CloneFlags;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::error::{CriError, Result};
use crate::service::Cri;
use crate::streaming::ClientStream;

/// How long a connect to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the other direction may go on once the pod closed its side (socat's `-t`, as
/// containerd).
const LINGER: Duration = Duration::from_secs(1);

/// Connects to localhost:`port`, IPv4 first then IPv6, in the network namespace at `netns`
/// (the caller's with `None`). Blocking.
fn connect_in(netns: Option<&Path>, port: u16) -> Result<TcpStream> {
    if let Some(path) = netns {
        let ns = std::fs::File::open(path).map_err(|e| CriError::io("open netns", path, e))?;
        nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| CriError::io("enter netns", path, e.into()))?;
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    let conn = match TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(c) => c,
        Err(e4) => TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|e6| {
            let place = netns
                .map(|p| format!("inside namespace {}", p.display()))
                .unwrap_or_else(|| "in the host network".to_owned());
            CriError::Network(format!(
                "failed to connect to localhost:{port} {place}, IPv4: {e4} IPv6: {e6}"
            ))
        })?,
    };
    conn.set_nonblocking(true)
        .map_err(|e| CriError::Network(format!("connection to localhost:{port}: {e}")))?;
    Ok(conn)
}

/// [`connect_in`] on a thread of its own (its namespace dies with it).
pub async fn connect(netns: Option<PathBuf>, port: u16) -> Result<tokio::net::TcpStream> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("cri-portforward".into())
        .spawn(move || {
            let _ = tx.send(connect_in(netns.as_deref(), port));
        })
        .map_err(|e| CriError::Internal(format!("start port-forward thread: {e}")))?;
    let conn = rx
        .await
        .map_err(|_| CriError::Internal("port-forward thread ended without an answer".into()))??;
    tokio::net::TcpStream::from_std(conn)
        .map_err(|e| CriError::Network(format!("connection to localhost:{port}: {e}")))
}

/// Copies between the client and the connection: the client's end of data half-closes the
/// connection and the pod's answer still flows back; the pod's end closes the client side
/// and the client has [`LINGER`] to finish.
pub async fn splice<C, P>(client: C, pod: P) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    P: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut pod_r, mut pod_w) = tokio::io::split(pod);
    let up = async {
        let r = tokio::io::copy(&mut client_r, &mut pod_w).await;
        let _ = pod_w.shutdown().await;
        r
    };
    let down = async {
        let r = tokio::io::copy(&mut pod_r, &mut client_w).await;
        let _ = client_w.shutdown().await;
        r
    };
    tokio::pin!(up, down);
    tokio::select! {
        r = &mut up => {
            // The client is done sending; the pod's answer is still wanted.
            let d = down.await;
            r.and(d).map(|_| ())
        }
        r = &mut down => {
            let _ = tokio::time::timeout(LINGER, &mut up).await;
            r.map(|_| ())
        }
    }
}

/// PortForward's data: connects `stream` to localhost:`port` in pod `sandbox_id`.
#[tracing::instrument(skip(cri, stream))]
pub async fn port_forward(
    cri: &Cri,
    sandbox_id: &str,
    port: u16,
    stream: Box<dyn ClientStream>,
) -> Result<()> {
    let sandbox = cri.store.sandboxes.get(sandbox_id)?;
    let netns = if super::host_network(sandbox.config()) {
        None
    } else {
        Some(sandbox.netns_path().map(Path::to_path_buf).ok_or_else(|| {
            CriError::FailedPrecondition(format!(
                "sandbox {} has no network namespace",
                sandbox.id()
            ))
        })?)
    };
    if let Some(path) = &netns {
        if !crate::netns::is_pinned(path) {
            return Err(CriError::FailedPrecondition(format!(
                "network namespace of sandbox {} is closed",
                sandbox.id()
            )));
        }
    }
    let conn = connect(netns, port).await?;
    tracing::debug!("port-forward connected");
    splice(stream, conn)
        .await
        .map_err(|e| CriError::Network(format!("port-forward to port {port}: {e}")))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn forwards_both_ways_and_half_closes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(b"re: ").await.unwrap();
            s.write_all(&got).await.unwrap();
        });
        let conn = connect(None, port).await.unwrap();
        let (mut client, ours) = tokio::io::duplex(1024);
        let fwd = tokio::spawn(splice(ours, conn));
        client.write_all(b"hello").await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"re: hello");
        fwd.await.unwrap().unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_closed_port_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = connect(None, port).await.unwrap_err().to_string();
        assert!(err.contains(&format!("localhost:{port}")), "{err}");
    }

    #[tokio::test]
    async fn the_pods_close_ends_the_forward() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"bye").await.unwrap();
        });
        let conn = connect(None, port).await.unwrap();
        let (mut client, ours) = tokio::io::duplex(1024);
        let fwd = tokio::spawn(splice(ours, conn));
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"bye");
        // The client never closes: the forward still ends after the linger.
        tokio::time::timeout(Duration::from_secs(5), fwd)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
