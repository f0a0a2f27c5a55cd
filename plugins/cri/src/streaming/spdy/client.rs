//! The client side of the upgrade, as client-go's SPDY round tripper does it: a `POST` with
//! `Connection: Upgrade`, `Upgrade: SPDY/3.1` and the `X-Stream-Protocol-Version`s offered,
//! then a SPDY client connection over the socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::conn::{Connection, Incoming, Options};
use super::{SpdyError, UPGRADE_PROTOCOL};

/// The header offering (request) and naming (response) the sub-protocol.
pub const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";

/// An upgraded client connection.
#[derive(Debug)]
pub struct Upgraded {
    /// The connection: open streams with [`Connection::open_stream`].
    pub conn: Connection,
    /// Streams the server opens (none in the kubelet's protocols).
    pub incoming: Incoming,
    /// The protocol the server chose (`X-Stream-Protocol-Version` of the answer).
    pub protocol: Option<String>,
}

/// Connects to `url` (`http://host:port/path`) and upgrades, offering `protocols` in order.
/// A refused upgrade is [`SpdyError::Refused`] with the HTTP status (404 for a bad token).
pub async fn connect(url: &str, protocols: &[&str]) -> Result<Upgraded, SpdyError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| SpdyError::Handshake(format!("only http:// URLs are supported: {url}")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let tcp = TcpStream::connect(authority).await?;
    tcp.set_nodelay(true)?;
    upgrade(tcp, authority, path, protocols).await
}

/// Upgrades an already connected byte stream (see [`connect`]).
pub async fn upgrade<T>(
    mut io: T,
    host: &str,
    path: &str,
    protocols: &[&str],
) -> Result<Upgraded, SpdyError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE_PROTOCOL}\r\nContent-Length: 0\r\n"
    );
    for p in protocols {
        req.push_str(&format!("{PROTOCOL_HEADER}: {p}\r\n"));
    }
    req.push_str("\r\n");
    io.write_all(req.as_bytes()).await?;
    io.flush().await?;

    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(SpdyError::Handshake("response head too large".into()));
        }
        let mut chunk = [0u8; 1024];
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(SpdyError::Handshake(
                "connection closed before the answer".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| SpdyError::Handshake(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == &name.to_ascii_lowercase())
            .map(|(_, v)| v.clone())
    };
    let leftover = buf[head_end..].to_vec();
    if status != 101 {
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(64 * 1024)
            .min(64 * 1024);
        let mut body = leftover;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while body.len() < len {
                let mut chunk = [0u8; 1024];
                match io.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        return Err(SpdyError::Refused {
            status,
            body: String::from_utf8_lossy(&body).trim().to_owned(),
        });
    }
    let connection_upgrade = header("connection").is_some_and(|c| {
        c.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    if !connection_upgrade
        || !header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case(UPGRADE_PROTOCOL))
    {
        return Err(SpdyError::Handshake(
            "the answer does not upgrade to SPDY/3.1".into(),
        ));
    }
    let protocol = header(PROTOCOL_HEADER);
    let (conn, incoming) = Connection::new(
        Prefixed {
            prefix: leftover,
            pos: 0,
            io,
        },
        false,
        Options::default(),
    );
    Ok(Upgraded {
        conn,
        incoming,
        protocol,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A byte stream that first yields bytes already read past the HTTP head.
struct Prefixed<T> {
    prefix: Vec<u8>,
    pos: usize,
    io: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
