//! A SPDY/3.1 connection: one reader task and one writer task over an upgraded byte stream,
//! streams multiplexed on it. As moby/spdystream (the kubelet's and client-go's SPDY layer),
//! no flow-control windows are kept: SETTINGS and WINDOW_UPDATE are read and ignored, every
//! stream's incoming data is queued for its reader, and writers are held back only by the
//! connection's bounded send queue.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, PollSender};

use super::frame::{rst, Decoder, Encoder, Frame, FLAG_FIN, MAX_DATA_CHUNK};
use super::headers::Headers;
use super::SpdyError;

/// How long a locally opened stream waits for its SYN_REPLY.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a closing connection waits for the peer to close its side.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Frames queued for the writer before senders wait.
const SEND_QUEUE: usize = 64;

enum Out {
    Frame(Frame),
    /// Flush, shut down the write side, then end the connection after a grace period.
    Finish,
}

struct Entry {
    /// Incoming data; dropped at the peer's FIN or a reset.
    data: Option<mpsc::UnboundedSender<Bytes>>,
    /// A locally opened stream's SYN_REPLY.
    reply: Option<oneshot::Sender<Result<Headers, SpdyError>>>,
    /// Set when the stream is reset or the connection ends.
    reset: Arc<AtomicBool>,
}

impl Entry {
    fn end(mut self, status: u32) {
        self.reset.store(true, Ordering::SeqCst);
        self.data = None;
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Err(SpdyError::Reset(status)));
        }
    }
}

struct Shared {
    server: bool,
    tx: mpsc::Sender<Out>,
    streams: Mutex<HashMap<u32, Entry>>,
    next_id: AtomicU32,
    last_peer_id: AtomicU32,
    going_away: AtomicBool,
    closed: CancellationToken,
    started: Instant,
    last_activity_ms: AtomicU64,
}

impl Shared {
    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        // A panic while holding the lock leaves a usable map.
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn end_all(&self) {
        let entries: Vec<Entry> = self.streams().drain().map(|(_, e)| e).collect();
        for e in entries {
            e.end(rst::CANCEL);
        }
    }
}

/// Options of a connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Close the connection when no frame went either way for this long.
    pub idle_timeout: Option<Duration>,
}

/// One SPDY connection; cheap to clone. Dropping every handle does not close it: call
/// [`Connection::close`] (or let the peer close it).
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.shared.server)
            .field("closed", &self.shared.closed.is_cancelled())
            .finish()
    }
}

/// The streams the peer opens, in order.
pub type Incoming = mpsc::UnboundedReceiver<Stream>;

impl Connection {
    /// Runs a connection over `io` (after the HTTP upgrade): `server` picks the stream id
    /// parity (the client's streams are odd). Returns the handle and the peer's new streams.
    pub fn new<T>(io: T, server: bool, options: Options) -> (Connection, Incoming)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            server,
            tx,
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(if server { 2 } else { 1 }),
            last_peer_id: AtomicU32::new(0),
            going_away: AtomicBool::new(false),
            closed: CancellationToken::new(),
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
        });
        let (read, write) = tokio::io::split(io);
        let span = tracing::debug_span!("spdy", server);
        tokio::spawn(tracing::Instrument::instrument(
            read_loop(shared.clone(), read, incoming_tx),
            span.clone(),
        ));
        tokio::spawn(tracing::Instrument::instrument(
            write_loop(shared.clone(), write, rx),
            span.clone(),
        ));
        if let Some(timeout) = options.idle_timeout {
            tokio::spawn(tracing::Instrument::instrument(
                idle_watch(shared.clone(), timeout),
                span,
            ));
        }
        (Connection { shared }, incoming)
    }

    /// Opens a stream with `headers` and waits for the peer's SYN_REPLY; `fin` opens it
    /// half-closed (nothing to send).
    pub async fn open_stream(&self, headers: Headers, fin: bool) -> Result<Stream, SpdyError> {
        if self.shared.closed.is_cancelled() || self.shared.going_away.load(Ordering::SeqCst) {
            return Err(SpdyError::Closed);
        }
        let id = self.shared.next_id.fetch_add(2, Ordering::SeqCst);
        let (data_tx, data_rx) = mpsc::unbounded_channel();
        let (reply_tx, reply_rx) = oneshot::channel();
        let reset = Arc::new(AtomicBool::new(false));
        self.shared.streams().insert(
            id,
            Entry {
                data: Some(data_tx),
                reply: Some(reply_tx),
                reset: reset.clone(),
            },
        );
        let frame = Frame::SynStream {
            stream_id: id,
            associated_id: 0,
            priority: 0,
            flags: if fin { FLAG_FIN } else { 0 },
            headers: headers.clone(),
        };
        if self.shared.tx.send(Out::Frame(frame)).await.is_err() {
            self.shared.streams().remove(&id);
            return Err(SpdyError::Closed);
        }
        let reply = tokio::select! {
            r = reply_rx => r.unwrap_or(Err(SpdyError::Closed)),
            _ = tokio::time::sleep(REPLY_TIMEOUT) => Err(SpdyError::Timeout),
        };
        if let Err(e) = reply {
            if let Some(entry) = self.shared.streams().remove(&id) {
                entry.end(rst::CANCEL);
            }
            return Err(e);
        }
        Ok(Stream::new(
            self.shared.clone(),
            id,
            headers,
            data_rx,
            reset,
            fin,
        ))
    }

    /// Sends GOAWAY after everything queued, shuts down the write side, and ends the
    /// connection once the peer closes (or after a short grace period).
    pub async fn close(&self) {
        if self.shared.closed.is_cancelled() {
            return;
        }
        let last = self.shared.last_peer_id.load(Ordering::SeqCst);
        let _ = self
            .shared
            .tx
            .send(Out::Frame(Frame::GoAway {
                last_good_stream_id: last,
                status: 0,
            }))
            .await;
        let _ = self.shared.tx.send(Out::Finish).await;
    }

    /// Ends the connection now (no GOAWAY).
    pub fn abort(&self) {
        self.shared.closed.cancel();
    }

    /// Completes when the connection has ended.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }
}

async fn idle_watch(shared: Arc<Shared>, timeout: Duration) {
    loop {
        let last = Duration::from_millis(shared.last_activity_ms.load(Ordering::Relaxed));
        let deadline = last + timeout;
        let now = shared.started.elapsed();
        if now >= deadline {
            tracing::debug!(?timeout, "idle connection closed");
            shared.closed.cancel();
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(deadline - now) => {}
            _ = shared.closed.cancelled() => return,
        }
    }
}

async fn read_loop<R: AsyncRead>(
    shared: Arc<Shared>,
    read: R,
    incoming: mpsc::UnboundedSender<Stream>,
) {
    tokio::pin!(read);
    let mut incoming = Some(incoming);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut decoder = Decoder::new();
    let result: Result<(), SpdyError> = async {
        loop {
            while let Some(frame) = decoder.decode(&mut buf)? {
                shared.touch();
                handle(&shared, frame, &mut incoming).await?;
            }
            let n = tokio::select! {
                n = read.read_buf(&mut buf) => n?,
                _ = shared.closed.cancelled() => return Ok(()),
            };
            if n == 0 {
                if !buf.is_empty() {
                    return Err(SpdyError::Protocol("connection ended inside a frame"));
                }
                return Ok(());
            }
        }
    }
    .await;
    match result {
        Ok(()) => tracing::debug!("connection ended"),
        Err(e) => tracing::debug!(error = %e, "connection failed"),
    }
    shared.closed.cancel();
    shared.end_all();
}

async fn handle(
    shared: &Arc<Shared>,
    frame: Frame,
    incoming: &mut Option<mpsc::UnboundedSender<Stream>>,
) -> Result<(), SpdyError> {
    match frame {
        Frame::SynStream {
            stream_id,
            flags,
            headers,
            ..
        } => {
            let peer_parity = if shared.server { 1 } else { 0 };
            let last = shared.last_peer_id.load(Ordering::SeqCst);
            if stream_id % 2 != peer_parity || stream_id <= last {
                return Err(SpdyError::Protocol("SYN_STREAM with a bad stream id"));
            }
            shared.last_peer_id.store(stream_id, Ordering::SeqCst);
            let refuse = shared.going_away.load(Ordering::SeqCst) || incoming.is_none();
            if refuse {
                send(
                    shared,
                    Frame::RstStream {
                        stream_id,
                        status: rst::REFUSED_STREAM,
                    },
                )
                .await;
                return Ok(());
            }
            let (data_tx, data_rx) = mpsc::unbounded_channel();
            let reset = Arc::new(AtomicBool::new(false));
            shared.streams().insert(
                stream_id,
                Entry {
                    data: (flags & FLAG_FIN == 0).then_some(data_tx),
                    reply: None,
                    reset: reset.clone(),
                },
            );
            let stream = Stream::new(shared.clone(), stream_id, headers, data_rx, reset, false);
            if let Some(tx) = incoming.as_ref() {
                if tx.send(stream).is_err() {
                    // Nobody takes new streams any more: the Stream's drop resets it.
                    *incoming = None;
                }
            }
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        } => {
            let mut streams = shared.streams();
            if let Some(entry) = streams.get_mut(&stream_id) {
                if let Some(reply) = entry.reply.take() {
                    let _ = reply.send(Ok(headers));
                }
                if flags & FLAG_FIN != 0 {
                    entry.data = None;
                }
            }
        }
        Frame::Headers {
            stream_id, flags, ..
        } => {
            if flags & FLAG_FIN != 0 {
                if let Some(entry) = shared.streams().get_mut(&stream_id) {
                    entry.data = None;
                }
            }
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            let mut streams = shared.streams();
            if let Some(entry) = streams.get_mut(&stream_id) {
                if let Some(tx) = entry.data.as_ref() {
                    if !data.is_empty() {
                        let _ = tx.send(data);
                    }
                }
                if flags & FLAG_FIN != 0 {
                    entry.data = None;
                }
            }
        }
        Frame::RstStream { stream_id, status } => {
            let entry = shared.streams().remove(&stream_id);
            if let Some(entry) = entry {
                entry.end(status);
            }
        }
        Frame::Ping { id } => {
            // The peer's pings (odd from a client, even from a server) are echoed.
            let peer_parity = if shared.server { 1 } else { 0 };
            if id % 2 == peer_parity {
                send(shared, Frame::Ping { id }).await;
            }
        }
        Frame::GoAway { .. } => {
            shared.going_away.store(true, Ordering::SeqCst);
            *incoming = None;
        }
        Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Unknown { .. } => {}
    }
    Ok(())
}

async fn send(shared: &Shared, frame: Frame) {
    let _ = shared.tx.send(Out::Frame(frame)).await;
}

async fn write_loop<W: AsyncWrite>(shared: Arc<Shared>, write: W, mut rx: mpsc::Receiver<Out>) {
    tokio::pin!(write);
    let mut encoder = Encoder::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut finish = false;
    loop {
        let first = tokio::select! {
            out = rx.recv() => out,
            _ = shared.closed.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut next = Some(first);
        // Batch whatever else is queued into one write.
        while let Some(out) = next.take() {
            match out {
                Out::Frame(frame) => {
                    if let Err(e) = encoder.encode(&frame, &mut buf) {
                        tracing::debug!(error = %e, "cannot encode a frame");
                    }
                }
                Out::Finish => {
                    finish = true;
                    break;
                }
            }
            if buf.len() < 256 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            shared.touch();
            let written = tokio::select! {
                r = write.write_all(&buf) => r,
                _ = shared.closed.cancelled() => break,
            };
            buf.clear();
            if let Err(e) = written {
                tracing::debug!(error = %e, "write failed");
                shared.closed.cancel();
                break;
            }
        }
        if finish {
            break;
        }
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, write.shutdown()).await;
    if finish {
        // Give the peer a moment to read what was sent and close its side.
        tokio::select! {
            _ = tokio::time::sleep(CLOSE_GRACE) => {}
            _ = shared.closed.cancelled() => {}
        }
    }
    shared.closed.cancel();
    shared.end_all();
}

/// One stream: read what the peer sends, write to the peer. Shutting down the write side
/// sends FIN; dropping the stream sends FIN when that was not done (a stream the server never
/// replied to is reset instead).
pub struct Stream {
    id: u32,
    headers: Headers,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Bytes>,
    pending: Bytes,
    tx: PollSender<Out>,
    reset: Arc<AtomicBool>,
    write_closed: bool,
    /// A peer-opened stream not yet replied to.
    unreplied: bool,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("headers", &self.headers)
            .finish()
    }
}

impl Stream {
    fn new(
        shared: Arc<Shared>,
        id: u32,
        headers: Headers,
        rx: mpsc::UnboundedReceiver<Bytes>,
        reset: Arc<AtomicBool>,
        write_closed: bool,
    ) -> Stream {
        let local = id.is_multiple_of(2) == shared.server;
        Stream {
            id,
            headers,
            tx: PollSender::new(shared.tx.clone()),
            shared,
            rx,
            pending: Bytes::new(),
            reset,
            write_closed,
            unreplied: !local,
        }
    }

    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers it was opened with.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Accepts a stream the peer opened (SYN_REPLY, no headers).
    pub async fn reply(&mut self) -> Result<(), SpdyError> {
        self.unreplied = false;
        self.shared
            .tx
            .send(Out::Frame(Frame::SynReply {
                stream_id: self.id,
                flags: 0,
                headers: Headers::new(),
            }))
            .await
            .map_err(|_| SpdyError::Closed)
    }

    /// Resets the stream (RST_STREAM with `status`).
    pub async fn reset(mut self, status: u32) {
        self.write_closed = true;
        self.unreplied = false;
        self.reset.store(true, Ordering::SeqCst);
        let entry = self.shared.streams().remove(&self.id);
        drop(entry);
        send(
            &self.shared,
            Frame::RstStream {
                stream_id: self.id,
                status,
            },
        )
        .await;
    }

    /// Writes `data` and, when `fin`, closes the write side.
    pub async fn send(&mut self, data: &[u8], fin: bool) -> Result<(), SpdyError> {
        if self.write_closed || self.reset.load(Ordering::SeqCst) {
            return Err(SpdyError::Closed);
        }
        let mut chunks = data.chunks(MAX_DATA_CHUNK).peekable();
        if data.is_empty() && fin {
            self.write_closed = true;
            return self.data_frame(Bytes::new(), true).await;
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            if fin && last {
                self.write_closed = true;
            }
            self.data_frame(Bytes::copy_from_slice(chunk), fin && last)
                .await?;
        }
        Ok(())
    }

    async fn data_frame(&self, data: Bytes, fin: bool) -> Result<(), SpdyError> {
        self.shared
            .tx
            .send(Out::Frame(Frame::Data {
                stream_id: self.id,
                flags: if fin { FLAG_FIN } else { 0 },
                data,
            }))
            .await
            .map_err(|_| SpdyError::Closed)
    }

    /// Reads everything until the peer's FIN.
    pub async fn read_to_end_vec(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_to_end(&mut out).await?;
        Ok(out)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let entry = self.shared.streams().remove(&self.id);
        drop(entry);
        if self.shared.closed.is_cancelled() || self.reset.load(Ordering::SeqCst) {
            return;
        }
        let frame = if self.unreplied {
            Frame::RstStream {
                stream_id: self.id,
                status: rst::REFUSED_STREAM,
            }
        } else if !self.write_closed {
            Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            }
        } else {
            return;
        };
        match self.shared.tx.try_send(Out::Frame(frame)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(out)) => {
                let tx = self.shared.tx.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = tx.send(out).await;
                    });
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                let chunk = self.pending.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(data)) => self.pending = data,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.write_closed || self.reset.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match self.tx.poll_reserve(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Poll::Ready(Ok(())) => {}
        }
        let n = buf.len().min(MAX_DATA_CHUNK);
        let frame = Frame::Data {
            stream_id: self.id,
            flags: 0,
            data: Bytes::copy_from_slice(&buf[..n]),
        };
        match self.tx.send_item(Out::Frame(frame)) {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_closed || self.reset.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        match self.tx.poll_reserve(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
            Poll::Ready(Ok(())) => {}
        }
        let frame = Frame::Data {
            stream_id: self.id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        };
        self.write_closed = true;
        let _ = self.tx.send_item(Out::Frame(frame));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> ((Connection, Incoming), (Connection, Incoming)) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        (
            Connection::new(a, false, Options::default()),
            Connection::new(b, true, Options::default()),
        )
    }

    #[tokio::test]
    async fn a_client_stream_is_replied_and_carries_data_both_ways() {
        let ((client, _ci), (server, mut si)) = pair();
        let srv = tokio::spawn(async move {
            let mut s = si.recv().await.unwrap();
            assert_eq!(s.headers().get("streamType"), Some("stdin"));
            s.reply().await.unwrap();
            let got = s.read_to_end_vec().await.unwrap();
            s.send(&got, true).await.unwrap();
            server
        });
        let mut h = Headers::new();
        h.add("streamType", "stdin");
        let mut s = client.open_stream(h, false).await.unwrap();
        assert_eq!(s.id(), 1);
        s.write_all(b"ping").await.unwrap();
        s.shutdown().await.unwrap();
        assert_eq!(s.read_to_end_vec().await.unwrap(), b"ping");
        let server = srv.await.unwrap();
        server.close().await;
        tokio::time::timeout(Duration::from_secs(2), client.closed())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_stream_dropped_unreplied_is_refused() {
        let ((client, _ci), (_server, mut si)) = pair();
        tokio::spawn(async move {
            let s = si.recv().await.unwrap();
            drop(s);
        });
        let err = client.open_stream(Headers::new(), false).await.unwrap_err();
        assert!(
            matches!(err, SpdyError::Reset(rst::REFUSED_STREAM)),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_malformed_frame_ends_the_connection() {
        let (mut raw, b) = tokio::io::duplex(1024);
        let (server, _si) = Connection::new(b, true, Options::default());
        raw.write_all(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1])
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(2), server.closed())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn pings_are_echoed_and_idle_connections_close() {
        let (mut raw, b) = tokio::io::duplex(1024);
        let (server, _si) = Connection::new(
            b,
            true,
            Options {
                idle_timeout: Some(Duration::from_millis(300)),
            },
        );
        raw.write_all(&[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1])
            .await
            .unwrap();
        let mut echo = [0u8; 12];
        raw.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]);
        tokio::time::timeout(Duration::from_secs(2), server.closed())
            .await
            .unwrap();
    }
}
