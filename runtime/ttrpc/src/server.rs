//! ttrpc server: accepts unix-socket connections, checks peer credentials, and runs every
//! request concurrently; responses go out through one writer task per connection.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedReadHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::wire::{self, Frame, Request, Response};
use crate::{code, status, Context, RpcStatus, Service};

/// How long in-flight requests may run after shutdown was requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

type Services = Arc<HashMap<String, Arc<dyn Service>>>;

/// A ttrpc server. Register services with [`Server::add_service`], then [`Server::serve`].
pub struct Server {
    services: HashMap<String, Arc<dyn Service>>,
    require_same_user: bool,
}

impl Default for Server {
    fn default() -> Server {
        Server {
            services: HashMap::new(),
            require_same_user: true,
        }
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.services.keys().collect();
        names.sort();
        f.debug_struct("Server")
            .field("services", &names)
            .field("require_same_user", &self.require_same_user)
            .finish()
    }
}

impl Server {
    pub fn new() -> Server {
        Server::default()
    }

    /// Whether to close connections whose peer effective uid/gid (SO_PEERCRED) differ from this
    /// process's (containerd's `UnixSocketRequireSameUser`). Default: true.
    pub fn require_same_user(mut self, yes: bool) -> Server {
        self.require_same_user = yes;
        self
    }

    /// Registers `svc` under `svc.name()`, replacing any service of the same name.
    pub fn add_service(&mut self, svc: Arc<dyn Service>) {
        self.services.insert(svc.name().to_owned(), svc);
    }

    /// Serves connections from `listener` until `shutdown` completes; then stops accepting, lets
    /// in-flight requests finish (at most 5 s) and closes every connection.
    pub async fn serve(
        self,
        listener: UnixListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let services: Services = Arc::new(self.services);
        let own = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let require_same_user = self.require_same_user;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut result = Ok(());

        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) if is_transient_accept_error(&e) => {
                            tracing::warn!(error = %e, "ttrpc: accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    };
                    if require_same_user {
                        match stream.peer_cred() {
                            Ok(cred) if (cred.uid(), cred.gid()) == own => {}
                            Ok(cred) => {
                                tracing::warn!(
                                    uid = cred.uid(),
                                    gid = cred.gid(),
                                    "ttrpc: rejecting connection: invalid credentials"
                                );
                                continue;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "ttrpc: rejecting connection: no peer credentials");
                                continue;
                            }
                        }
                    }
                    conns.spawn(serve_conn(stream, services.clone(), stop_rx.clone()));
                }
            }
        }

        drop(listener);
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            conns.abort_all();
        }
        result
    }
}

fn is_transient_accept_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOBUFS | nix::libc::ENOMEM)
    )
}

/// One connection: a reader loop spawning a task per request, plus a writer task.
async fn serve_conn(stream: UnixStream, services: Services, mut stop: watch::Receiver<bool>) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<(u32, Response)>();
    let writer = tokio::spawn(async move {
        while let Some((id, resp)) = rx.recv().await {
            let mut body = resp.encode_to_vec();
            if body.len() > wire::MAX_MESSAGE_LEN {
                body = Response {
                    status: Some(status(
                        code::RESOURCE_EXHAUSTED,
                        wire::oversized_message(body.len()),
                    )),
                    payload: Vec::new(),
                }
                .encode_to_vec();
            }
            let frame = wire::encode_frame(id, wire::TYPE_RESPONSE, &body);
            if let Err(e) = wr.write_all(&frame).await {
                tracing::debug!(error = %e, "ttrpc: write response failed");
                return;
            }
        }
    });

    let mut handlers = JoinSet::new();
    // Only cancel-safe branches besides the read: cancelling `read_request` loses the
    // connection's framing, which is acceptable only when we are stopping anyway.
    let stopped = loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break true,
            frame = read_request(&mut rd) => match frame {
                Ok(Some(Incoming::Request(id, req))) => {
                    let tx = tx.clone();
                    let services = services.clone();
                    handlers.spawn(async move {
                        let resp = dispatch(&services, req).await;
                        let _ = tx.send((id, resp));
                    });
                    while handlers.try_join_next().is_some() {}
                }
                Ok(Some(Incoming::Reject(id, st))) => {
                    let _ = tx.send((id, Response { status: Some(st), payload: Vec::new() }));
                }
                Ok(Some(Incoming::Ignore)) => {}
                Ok(None) => break false,
                Err(e) => {
                    tracing::debug!(error = %e, "ttrpc: read request failed");
                    break false;
                }
            },
        }
    };
    drop(tx);

    if stopped {
        // Let in-flight requests finish (bounded), then flush their responses and close.
        let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while handlers.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            handlers.abort_all();
            while handlers.join_next().await.is_some() {}
        }
    } else {
        // The peer went away: nobody will read the answers, but let handlers run to completion.
        handlers.detach_all();
    }
    let _ = writer.await;
}

enum Incoming {
    Request(u32, Request),
    /// Answer this stream id with a status without dispatching.
    Reject(u32, RpcStatus),
    Ignore,
}

async fn read_request(rd: &mut OwnedReadHalf) -> std::io::Result<Option<Incoming>> {
    let Some(frame) = wire::read_frame(rd).await? else {
        return Ok(None);
    };
    Ok(Some(match frame {
        Frame::Oversized(h) => Incoming::Reject(
            h.stream_id,
            status(
                code::RESOURCE_EXHAUSTED,
                wire::oversized_message(h.length as usize),
            ),
        ),
        Frame::Message(h, _) if h.kind != wire::TYPE_REQUEST => Incoming::Ignore,
        Frame::Message(h, payload) => match Request::decode(&payload[..]) {
            Err(e) => Incoming::Reject(
                h.stream_id,
                status(
                    code::INVALID_ARGUMENT,
                    format!("unmarshal request error: {e}"),
                ),
            ),
            Ok(_) if h.stream_id % 2 != 1 => Incoming::Reject(
                h.stream_id,
                status(
                    code::INVALID_ARGUMENT,
                    "StreamID must be odd for client initiated streams",
                ),
            ),
            Ok(req) => Incoming::Request(h.stream_id, req),
        },
    }))
}

async fn dispatch(services: &Services, req: Request) -> Response {
    let Some(svc) = services.get(&req.service) else {
        return error_response(status(
            code::UNIMPLEMENTED,
            format!("service {}", req.service),
        ));
    };
    let timeout =
        (req.timeout_nano > 0).then(|| Duration::from_nanos(req.timeout_nano.unsigned_abs()));
    let ctx = Context {
        metadata: req
            .metadata
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect(),
        timeout,
    };
    let fut = svc.call(&req.method, ctx, req.payload);
    let result = match timeout {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => Err(status(code::DEADLINE_EXCEEDED, "context deadline exceeded")),
        },
        None => fut.await,
    };
    match result {
        Ok(payload) => Response {
            status: None,
            payload,
        },
        Err(st) => error_response(st),
    }
}

fn error_response(st: RpcStatus) -> Response {
    Response {
        status: Some(st),
        payload: Vec::new(),
    }
}
