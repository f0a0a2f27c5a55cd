//! `containerd.services.streaming.v1.Streaming` and the stream manager behind it (containerd
//! 1.7 `services/streaming` and `plugins/streaming`): a client opens a bidirectional stream of
//! `Any` messages, names it with a first `StreamInit{id}`, is answered with a
//! `google.protobuf.Empty` once the stream is registered, and other services then find it by
//! namespace and id: the Transfer service sends progress on one and asks credentials on
//! another. A stream ends when the service using it closes it (the client sees the end of the
//! response stream) or when the client goes away (it is then unregistered).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use berth_proto::containerd::services::streaming::v1::streaming_server::{
    Streaming, StreamingServer, SERVICE_NAME,
};
use berth_proto::containerd::services::streaming::v1::StreamInit;
use berth_registry::{types, Classify, ErrorKind, Registration};
use futures::{Stream, StreamExt as _};
use prost::Message as _;
use prost_types::Any;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming as Inbound};

use crate::grpc::{GrpcService, MessageLimits};
use crate::namespace;
use crate::status::to_status;

/// The plugin type of the stream manager (containerd's `plugin.StreamingPlugin`).
pub const STREAMING_PLUGIN: &str = "io.containerd.streaming.v1";
/// The stream manager's plugin id.
pub const MANAGER_ID: &str = "manager";

/// The type URL of `StreamInit` (typeurl's name for a proto message: its full name).
pub const STREAM_INIT_TYPE: &str = "containerd.services.streaming.v1.StreamInit";
/// The type URL of the registration answer.
pub const EMPTY_TYPE: &str = "google.protobuf.Empty";

/// How many messages may wait to go out on one stream before a sender waits.
const OUTBOUND_QUEUE: usize = 64;

/// The name part of a type URL: typeurl sends the bare full name, protobuf's `Any.pack` prefixes
/// `type.googleapis.com/`; both are accepted.
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit_once('/').map_or(type_url, |(_, name)| name)
}

/// Why a stream operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// No stream of that id is registered in the namespace.
    #[error("stream {0:?} not found")]
    NotFound(String),
    /// A stream of that id is already registered in the namespace.
    #[error("stream {0:?} already exists")]
    AlreadyExists(String),
    /// The first message was not a `StreamInit`.
    #[error("the first message of a stream must be {STREAM_INIT_TYPE}, got {0:?}")]
    NotInit(String),
    /// The stream ended, on either side.
    #[error("stream {0:?} closed")]
    Closed(String),
    /// The client's side of the stream failed.
    #[error("stream {id:?}: {status}")]
    Failed {
        /// The stream id.
        id: String,
        /// What the transport said.
        status: String,
    },
}

impl Classify for StreamError {
    fn kind(&self) -> ErrorKind {
        match self {
            StreamError::NotFound(_) => ErrorKind::NotFound,
            StreamError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            StreamError::NotInit(_) => ErrorKind::InvalidArgument,
            StreamError::Closed(_) | StreamError::Failed { .. } => ErrorKind::Unavailable,
        }
    }
}

/// One registered stream: what is sent goes to the client's response stream, what is received
/// comes from the client's request stream.
#[derive(Debug)]
pub struct ManagedStream {
    namespace: String,
    id: String,
    token: u64,
    outbound: Mutex<Option<mpsc::Sender<Result<Any, Status>>>>,
    inbound: tokio::sync::Mutex<Inbound<Any>>,
    manager: Arc<StreamManager>,
}

impl ManagedStream {
    /// The stream id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sends `msg` to the client, waiting while its queue is full.
    pub async fn send(&self, msg: Any) -> Result<(), StreamError> {
        let sender = lock(&self.outbound).clone();
        let sender = sender.ok_or_else(|| StreamError::Closed(self.id.clone()))?;
        sender
            .send(Ok(msg))
            .await
            .map_err(|_| StreamError::Closed(self.id.clone()))
    }

    /// The next message from the client; `Closed` when the client ended its side.
    pub async fn recv(&self) -> Result<Any, StreamError> {
        let mut inbound = self.inbound.lock().await;
        match inbound.message().await {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(StreamError::Closed(self.id.clone())),
            Err(status) => Err(StreamError::Failed {
                id: self.id.clone(),
                status: status.message().to_owned(),
            }),
        }
    }

    /// Unregisters the stream and ends the client's response stream.
    pub fn close(&self) {
        lock(&self.outbound).take();
        self.manager
            .remove(&self.namespace, &self.id, Some(self.token));
    }
}

/// The registered streams, by namespace and id (containerd's `streaming.StreamManager`).
#[derive(Debug, Default)]
pub struct StreamManager {
    streams: Mutex<HashMap<(String, String), Arc<ManagedStream>>>,
    next_token: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl StreamManager {
    /// An empty manager.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The stream `id` of `namespace`.
    pub fn get(&self, namespace: &str, id: &str) -> Result<Arc<ManagedStream>, StreamError> {
        lock(&self.streams)
            .get(&(namespace.to_owned(), id.to_owned()))
            .cloned()
            .ok_or_else(|| StreamError::NotFound(id.to_owned()))
    }

    /// How many streams are registered (all namespaces).
    pub fn len(&self) -> usize {
        lock(&self.streams).len()
    }

    /// Whether no stream is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn register(
        self: &Arc<Self>,
        namespace: &str,
        id: &str,
        inbound: Inbound<Any>,
        outbound: mpsc::Sender<Result<Any, Status>>,
    ) -> Result<Arc<ManagedStream>, StreamError> {
        let key = (namespace.to_owned(), id.to_owned());
        let mut streams = lock(&self.streams);
        if streams.contains_key(&key) {
            return Err(StreamError::AlreadyExists(id.to_owned()));
        }
        let stream = Arc::new(ManagedStream {
            namespace: key.0.clone(),
            id: key.1.clone(),
            token: self.next_token.fetch_add(1, Ordering::Relaxed),
            outbound: Mutex::new(Some(outbound)),
            inbound: tokio::sync::Mutex::new(inbound),
            manager: self.clone(),
        });
        streams.insert(key, stream.clone());
        Ok(stream)
    }

    /// Removes the stream `id` of `namespace` (only the registration `token` when given).
    fn remove(&self, namespace: &str, id: &str, token: Option<u64>) {
        let key = (namespace.to_owned(), id.to_owned());
        let mut streams = lock(&self.streams);
        if streams
            .get(&key)
            .is_some_and(|s| token.is_none_or(|t| s.token == t))
        {
            streams.remove(&key);
        }
    }
}

/// Unregisters a stream when the client's response stream is dropped (the client went away).
struct Unregister {
    manager: Arc<StreamManager>,
    namespace: String,
    id: String,
    token: u64,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        self.manager
            .remove(&self.namespace, &self.id, Some(self.token));
    }
}

/// The Streaming service.
#[derive(Debug, Clone)]
pub struct StreamingService {
    manager: Arc<StreamManager>,
}

impl StreamingService {
    /// A service registering streams in `manager`.
    pub fn new(manager: Arc<StreamManager>) -> Self {
        Self { manager }
    }
}

/// The response stream of a Streaming call.
pub type OutboundStream = Pin<Box<dyn Stream<Item = Result<Any, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Streaming for StreamingService {
    type StreamStream = OutboundStream;

    #[tracing::instrument(skip_all, fields(namespace, stream))]
    async fn stream(
        &self,
        req: Request<Inbound<Any>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let ns = namespace::from_request(&req)?;
        let span = tracing::Span::current();
        span.record("namespace", ns.as_str());
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("stream ended before its StreamInit"))?;
        if type_name(&first.type_url) != STREAM_INIT_TYPE {
            return Err(to_status(&StreamError::NotInit(first.type_url)));
        }
        let init = StreamInit::decode(first.value.as_slice())
            .map_err(|e| Status::invalid_argument(format!("StreamInit does not decode: {e}")))?;
        if init.id.is_empty() {
            return Err(Status::invalid_argument("StreamInit.id is required"));
        }
        span.record("stream", init.id.as_str());
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let stream = self
            .manager
            .register(&ns, &init.id, inbound, tx)
            .map_err(|e| to_status(&e))?;
        tracing::debug!("stream registered");
        let guard = Unregister {
            manager: self.manager.clone(),
            namespace: ns,
            id: init.id,
            token: stream.token,
        };
        drop(stream);
        let ack = Any {
            type_url: EMPTY_TYPE.to_owned(),
            value: Vec::new(),
        };
        let out = futures::stream::once(async move { Ok(ack) })
            .chain(tokio_stream::wrappers::ReceiverStream::new(rx))
            .map(move |msg| {
                let _registered = &guard;
                msg
            });
        Ok(Response::new(Box::pin(out)))
    }
}

impl<T> MessageLimits for StreamingServer<T> {
    fn with_message_limits(self, max: usize) -> Self {
        self.max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }
}

/// The `io.containerd.streaming.v1.manager` plugin: the streams the Streaming service
/// registers and other services use.
pub fn manager_registration() -> Registration {
    Registration::new(STREAMING_PLUGIN, MANAGER_ID).init(|_ctx| Ok(StreamManager::new()))
}

/// The `io.containerd.grpc.v1.streaming` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "streaming")
        .serves(&[SERVICE_NAME])
        .requires(&[STREAMING_PLUGIN])
        .init(|ctx| {
            let manager: Arc<StreamManager> = ctx.get_by_id(STREAMING_PLUGIN, MANAGER_ID)?;
            Ok(Arc::new(GrpcService::new(StreamingServer::new(
                StreamingService::new(manager),
            ))))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_with_and_without_prefix() {
        assert_eq!(
            type_name("type.googleapis.com/containerd.types.transfer.Progress"),
            "containerd.types.transfer.Progress"
        );
        assert_eq!(type_name(STREAM_INIT_TYPE), STREAM_INIT_TYPE);
    }

    #[test]
    fn missing_streams_are_not_found() {
        let m = StreamManager::new();
        let err = m.get("default", "progress-1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("progress-1"), "{err}");
        assert!(m.is_empty());
    }
}
