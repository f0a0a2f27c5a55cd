//! Multiplexed ttrpc client: many concurrent calls share one connection; a writer task owns the
//! write half, a reader task dispatches responses to callers by stream id.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::wire::{self, Frame, KeyValue, Request, Response};
use crate::{code, status, TtrpcError};

/// Per-call options: a deadline (sent as `timeout_nano` and enforced locally) and metadata.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    pub timeout: Option<Duration>,
    pub metadata: Vec<(String, String)>,
}

type Waiter = oneshot::Sender<Result<Response, TtrpcError>>;

/// State shared by the handle and the reader/writer tasks.
struct Shared {
    /// Pending calls by stream id; `None` once the connection is closed.
    pending: Mutex<Option<HashMap<u32, Waiter>>>,
    closed: AtomicBool,
    /// Woken once when the connection closes (see [`Client::closed`]).
    on_close: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<HashMap<u32, Waiter>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the connection broken and fails every pending call with `Closed`.
    fn close(&self) {
        let drained = {
            let mut guard = self.lock();
            self.closed.store(true, Ordering::SeqCst);
            guard.take()
        };
        for (_, waiter) in drained.into_iter().flatten() {
            let _ = waiter.send(Err(TtrpcError::Closed));
        }
        self.on_close.notify_waiters();
    }

    fn remove(&self, id: u32) -> Option<Waiter> {
        self.lock().as_mut().and_then(|m| m.remove(&id))
    }
}

/// Removes the pending entry if the call future is dropped or times out.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.remove(self.id);
    }
}

struct Inner {
    shared: Arc<Shared>,
    frames: mpsc::UnboundedSender<Vec<u8>>,
    next_id: AtomicU32,
}

/// A ttrpc client over one unix-socket connection; cheap to clone, clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the unix socket at `path`.
    pub async fn connect(path: &Path) -> Result<Client, TtrpcError> {
        let stream = UnixStream::connect(path).await?;
        Ok(Client::from_stream(stream))
    }

    /// Connects to `unix:///path` or a plain path. An address (after an optional `unix://`) that
    /// starts with `@` or `\0` names a Linux abstract socket.
    pub async fn connect_address(address: &str) -> Result<Client, TtrpcError> {
        let rest = address.strip_prefix("unix://").unwrap_or(address);
        if let Some(name) = rest.strip_prefix('@').or_else(|| rest.strip_prefix('\0')) {
            let name = name.as_bytes().to_vec();
            let std_stream = tokio::task::spawn_blocking(move || {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name)?;
                let s = std::os::unix::net::UnixStream::connect_addr(&addr)?;
                s.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(s)
            })
            .await
            .map_err(std::io::Error::other)??;
            return Ok(Client::from_stream(UnixStream::from_std(std_stream)?));
        }
        if rest.is_empty() {
            return Err(TtrpcError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid ttrpc address {address:?}"),
            )));
        }
        Client::connect(Path::new(rest)).await
    }

    /// Wraps an already-connected stream; must be called within a tokio runtime.
    pub fn from_stream(stream: UnixStream) -> Client {
        let (rd, wr) = stream.into_split();
        let shared = Arc::new(Shared {
            pending: Mutex::new(Some(HashMap::new())),
            closed: AtomicBool::new(false),
            on_close: Notify::new(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(wr, rx, shared.clone()));
        tokio::spawn(read_loop(rd, shared.clone()));
        Client {
            inner: Arc::new(Inner {
                shared,
                frames: tx,
                next_id: AtomicU32::new(1),
            }),
        }
    }

    /// True once the connection broke (EOF, I/O error).
    pub fn is_closed(&self) -> bool {
        self.inner.shared.closed.load(Ordering::SeqCst)
    }

    /// Completes once the connection broke (at once if it already has): a watcher waits here
    /// instead of polling [`Client::is_closed`].
    pub async fn closed(&self) {
        let shared = &self.inner.shared;
        let notified = shared.on_close.notified();
        tokio::pin!(notified);
        // Registered before the flag is read, so a close in between is not missed.
        notified.as_mut().enable();
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }

    /// Calls `service/method` with `req` and decodes the response payload.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        opts: CallOptions,
    ) -> Result<Resp, TtrpcError> {
        let payload = req.encode_to_vec();
        if payload.len() > wire::MAX_MESSAGE_LEN {
            return Err(TtrpcError::TooLarge(payload.len()));
        }
        let envelope = Request {
            service: service.to_owned(),
            method: method.to_owned(),
            payload,
            timeout_nano: opts
                .timeout
                .map(|t| i64::try_from(t.as_nanos()).unwrap_or(i64::MAX).max(1))
                .unwrap_or(0),
            metadata: opts
                .metadata
                .into_iter()
                .map(|(key, value)| KeyValue { key, value })
                .collect(),
        };
        let body = envelope.encode_to_vec();
        if body.len() > wire::MAX_MESSAGE_LEN {
            return Err(TtrpcError::TooLarge(body.len()));
        }

        let shared = &self.inner.shared;
        let id = self.inner.next_id.fetch_add(2, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut guard = shared.lock();
            match guard.as_mut() {
                Some(map) => {
                    map.insert(id, tx);
                }
                None => return Err(TtrpcError::Closed),
            }
        }
        let _guard = PendingGuard { shared, id };
        if self
            .inner
            .frames
            .send(wire::encode_frame(id, wire::TYPE_REQUEST, &body))
            .is_err()
        {
            return Err(TtrpcError::Closed);
        }

        let received = match opts.timeout {
            Some(t) => match tokio::time::timeout(t, rx).await {
                Ok(r) => r,
                Err(_) => return Err(TtrpcError::Timeout),
            },
            None => rx.await,
        };
        let response = received.map_err(|_| TtrpcError::Closed)??;
        if let Some(st) = response.status {
            if st.code != code::OK {
                return Err(TtrpcError::Status(st));
            }
        }
        Resp::decode(&response.payload[..]).map_err(TtrpcError::Decode)
    }
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    while let Some(frame) = rx.recv().await {
        if let Err(e) = wr.write_all(&frame).await {
            tracing::debug!(error = %e, "ttrpc client: write failed");
            shared.close();
            return;
        }
    }
    // Every client handle is gone: half-close so the server sees EOF.
    let _ = wr.shutdown().await;
}

async fn read_loop(mut rd: OwnedReadHalf, shared: Arc<Shared>) {
    loop {
        match wire::read_frame(&mut rd).await {
            Ok(Some(Frame::Message(header, payload))) => {
                if header.kind != wire::TYPE_RESPONSE {
                    continue;
                }
                let result = Response::decode(&payload[..]).map_err(TtrpcError::Decode);
                if let Some(waiter) = shared.remove(header.stream_id) {
                    let _ = waiter.send(result);
                }
            }
            Ok(Some(Frame::Oversized(header))) => {
                if let Some(waiter) = shared.remove(header.stream_id) {
                    let st = status(
                        code::RESOURCE_EXHAUSTED,
                        wire::oversized_message(header.length as usize),
                    );
                    let _ = waiter.send(Err(TtrpcError::Status(st)));
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "ttrpc client: read failed");
                break;
            }
        }
    }
    shared.close();
}
