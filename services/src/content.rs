//! `containerd.services.content.v1.Content`: blobs per namespace, streamed reads, and the
//! resumable bidirectional Write protocol that ctr uses for imports and pulls.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;

use berth_core::content::IngestStatus;
use berth_core::events::Exchange;
use berth_core::gc::GcScheduler;
use berth_core::metadata::plugin::content_view;
use berth_core::namespaced_content::{NamespacedContent, NamespacedWriter};
use berth_core::BlobRecord;
use berth_proto::containerd::events::ContentDelete;
use berth_proto::containerd::services::content::v1::content_server::{
    Content, ContentServer, SERVICE_NAME,
};
use berth_proto::containerd::services::content::v1::{
    AbortRequest, DeleteContentRequest, Info, InfoRequest, InfoResponse, ListContentRequest,
    ListContentResponse, ListStatusesRequest, ListStatusesResponse, ReadContentRequest,
    ReadContentResponse, Status as ProtoStatus, StatusRequest, StatusResponse, UpdateRequest,
    UpdateResponse, WriteAction, WriteContentRequest, WriteContentResponse,
};
use berth_registry::{types, Classify, ErrorKind, Registration};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::convert::timestamp;
use crate::grpc::GrpcService;
use crate::status::to_status;
use crate::{blocking, namespace, rpc_span};

/// Largest chunk of one Read response, as containerd's.
const READ_CHUNK: usize = 1 << 20;
/// Infos per List response message, as containerd's.
const LIST_BATCH: usize = 100;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The Content service.
#[derive(Debug, Clone)]
pub struct ContentService {
    content: NamespacedContent,
    events: Arc<Exchange>,
    gc: Option<Arc<GcScheduler>>,
}

fn info_to_proto(r: BlobRecord) -> Info {
    Info {
        digest: r.digest,
        size: r.size as i64,
        created_at: timestamp(r.created_at),
        updated_at: timestamp(r.updated_at),
        labels: r.labels.into_iter().collect(),
    }
}

fn status_to_proto(s: IngestStatus) -> ProtoStatus {
    ProtoStatus {
        started_at: timestamp(s.started_at),
        updated_at: timestamp(s.updated_at),
        r#ref: s.reference,
        offset: s.offset as i64,
        total: s.total as i64,
        expected: s.expected.map(|d| d.to_string()).unwrap_or_default(),
    }
}

/// A Read or Write the service refuses itself, before or after the store had its say. The
/// messages are complete as they stand (containerd's content service words its own refusals
/// without a class suffix).
#[derive(Debug, thiserror::Error)]
enum ContentRequestError {
    /// An offset, size or total below zero.
    #[error("{what} must not be negative: {value}")]
    Negative {
        /// The field: `offset`, `size` or `total`.
        what: &'static str,
        /// What the client sent.
        value: i64,
    },
    /// A Read starting past the end of the blob.
    #[error("read at offset {offset} past object length {size}: out of range")]
    ReadPastEnd {
        /// The requested offset.
        offset: u64,
        /// The blob's length.
        size: u64,
    },
    /// Reading the blob's file failed midway.
    #[error("read blob at {offset}")]
    ReadBlob {
        /// Where the failed read started.
        offset: u64,
        /// The file system's error.
        source: std::io::Error,
    },
    /// The Write stream closed before its first message.
    #[error("write stream ended before its first message")]
    NoFirstMessage,
    /// The first Write message names no ingest.
    #[error("first message must have a reference")]
    NoReference,
    /// A Write message after the commit.
    #[error("write session already committed")]
    Committed,
    /// A Write action outside the enum.
    #[error("unknown write action {0}")]
    UnknownAction(i32),
}

impl Classify for ContentRequestError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Negative { .. }
            | Self::NoFirstMessage
            | Self::NoReference
            | Self::UnknownAction(_) => ErrorKind::InvalidArgument,
            Self::ReadPastEnd { .. } => ErrorKind::OutOfRange,
            Self::ReadBlob { .. } => ErrorKind::DataLoss,
            Self::Committed => ErrorKind::FailedPrecondition,
        }
    }

    fn complete_message(&self) -> bool {
        true
    }
}

fn non_negative(value: i64, what: &'static str) -> Result<u64, Status> {
    u64::try_from(value).map_err(|_| to_status(&ContentRequestError::Negative { what, value }))
}

impl ContentService {
    /// A service over the namespaced content store.
    pub fn new(
        content: NamespacedContent,
        events: Arc<Exchange>,
        gc: Option<Arc<GcScheduler>>,
    ) -> Self {
        ContentService {
            content,
            events,
            gc,
        }
    }

    async fn with_content<T, F>(&self, f: F) -> Result<T, Status>
    where
        F: FnOnce(
                &NamespacedContent,
            ) -> Result<T, berth_core::namespaced_content::NamespacedContentError>
            + Send
            + 'static,
        T: Send + 'static,
    {
        blocking::call(&self.content, move |s| f(s)).await
    }
}

/// One Write session: the writer moves to the blocking pool for each operation and back.
struct WriteSession {
    writer: Option<NamespacedWriter>,
    total: u64,
    expected: Option<String>,
}

#[tonic::async_trait]
impl Content for ContentService {
    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        rpc_span::record("digest", &req.get_ref().digest);
        let ns = namespace::from_request(&req)?;
        let digest = req.into_inner().digest;
        let rec = self.with_content(move |c| c.info(&ns, &digest)).await?;
        Ok(Response::new(InfoResponse {
            info: Some(info_to_proto(rec)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        let ns = namespace::from_request(&req)?;
        let req = req.into_inner();
        let info = req.info.unwrap_or_default();
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let span = tracing::Span::current();
        span.record("digest", info.digest.as_str());
        let labels: BTreeMap<_, _> = info.labels.into_iter().collect();
        let rec = self
            .with_content(move |c| c.update(&ns, &info.digest, labels, &paths))
            .await?;
        Ok(Response::new(UpdateResponse {
            info: Some(info_to_proto(rec)),
        }))
    }

    type ListStream = BoxStream<ListContentResponse>;

    async fn list(
        &self,
        req: Request<ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace::from_request(&req)?;
        let filter = berth_filters::parse_any(&req.get_ref().filters).map_err(|e| to_status(&e))?;
        let all = self.with_content(move |c| c.list(&ns, &filter)).await?;
        let batches: Vec<Result<ListContentResponse, Status>> = all
            .chunks(LIST_BATCH)
            .map(|chunk| {
                Ok(ListContentResponse {
                    info: chunk.iter().cloned().map(info_to_proto).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn delete(&self, req: Request<DeleteContentRequest>) -> Result<Response<()>, Status> {
        rpc_span::record("digest", &req.get_ref().digest);
        let ns = namespace::from_request(&req)?;
        let digest = req.into_inner().digest;
        let (ns2, d2) = (ns.clone(), digest.clone());
        self.with_content(move |c| c.delete(&ns2, &d2)).await?;
        crate::events::publish_committed(&self.events, &ns, &ContentDelete { digest });
        if let Some(gc) = &self.gc {
            gc.trigger();
        }
        Ok(Response::new(()))
    }

    type ReadStream = BoxStream<ReadContentResponse>;

    async fn read(
        &self,
        req: Request<ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        rpc_span::record("digest", &req.get_ref().digest);
        let ns = namespace::from_request(&req)?;
        let ReadContentRequest {
            digest,
            offset,
            size,
        } = req.into_inner();
        let offset = non_negative(offset, "offset")?;
        let size = non_negative(size, "size")?;
        let (file, blob_size) = self.with_content(move |c| c.open(&ns, &digest)).await?;
        if offset > blob_size {
            return Err(to_status(&ContentRequestError::ReadPastEnd {
                offset,
                size: blob_size,
            }));
        }
        let end = if size == 0 {
            blob_size
        } else {
            blob_size.min(offset.saturating_add(size))
        };
        // A bounded channel: the reader thread waits while the client is slow.
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut pos = offset;
            while pos < end {
                let len = (end - pos).min(READ_CHUNK as u64) as usize;
                let mut buf = vec![0u8; len];
                let msg = match file.read_exact_at(&mut buf, pos) {
                    Ok(()) => Ok(ReadContentResponse {
                        offset: pos as i64,
                        data: buf,
                    }),
                    Err(source) => Err(to_status(&ContentRequestError::ReadBlob {
                        offset: pos,
                        source,
                    })),
                };
                let failed = msg.is_err();
                if tx.blocking_send(msg).is_err() || failed {
                    return;
                }
                pos += len as u64;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        rpc_span::record("ref", &req.get_ref().r#ref);
        let ns = namespace::from_request(&req)?;
        let reference = req.into_inner().r#ref;
        let s = self
            .with_content(move |c| c.status(&ns, &reference))
            .await?;
        Ok(Response::new(StatusResponse {
            status: Some(status_to_proto(s)),
        }))
    }

    async fn list_statuses(
        &self,
        req: Request<ListStatusesRequest>,
    ) -> Result<Response<ListStatusesResponse>, Status> {
        let ns = namespace::from_request(&req)?;
        let filter = berth_filters::parse_any(&req.get_ref().filters).map_err(|e| to_status(&e))?;
        let all = self.with_content(move |c| c.statuses(&ns, &filter)).await?;
        Ok(Response::new(ListStatusesResponse {
            statuses: all.into_iter().map(status_to_proto).collect(),
        }))
    }

    type WriteStream = BoxStream<WriteContentResponse>;

    async fn write(
        &self,
        req: Request<Streaming<WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let ns = namespace::from_request(&req)?;
        let lease = namespace::lease_from_request(&req)?;
        let mut inbound = req.into_inner();
        let first = match inbound.next().await {
            Some(msg) => msg?,
            None => return Err(to_status(&ContentRequestError::NoFirstMessage)),
        };
        if first.r#ref.is_empty() {
            return Err(to_status(&ContentRequestError::NoReference));
        }
        tracing::Span::current().record("ref", first.r#ref.as_str());
        let total = non_negative(first.total, "total")?;
        let expected = (!first.expected.is_empty()).then(|| first.expected.clone());
        let writer = {
            let (ns, reference, expected, lease) = (
                ns.clone(),
                first.r#ref.clone(),
                expected.clone(),
                lease.clone(),
            );
            self.with_content(move |c| {
                c.writer(
                    &ns,
                    &reference,
                    total,
                    expected.as_deref(),
                    lease.as_deref(),
                )
            })
            .await?
        };
        let (tx, rx) = mpsc::channel(4);
        let session = WriteSession {
            writer: Some(writer),
            total,
            expected,
        };
        tokio::spawn(run_write_session(session, first, inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn abort(&self, req: Request<AbortRequest>) -> Result<Response<()>, Status> {
        rpc_span::record("ref", &req.get_ref().r#ref);
        let ns = namespace::from_request(&req)?;
        let reference = req.into_inner().r#ref;
        self.with_content(move |c| c.abort(&ns, &reference)).await?;
        Ok(Response::new(()))
    }
}

/// Drives one Write stream to its end. A client that disconnects mid-write leaves the ingest
/// in place (resumable by ref); dropping the writer releases the ref's lock.
async fn run_write_session(
    mut session: WriteSession,
    first: WriteContentRequest,
    mut inbound: Streaming<WriteContentRequest>,
    tx: mpsc::Sender<Result<WriteContentResponse, Status>>,
) {
    let mut req = first;
    loop {
        let action = req.action;
        let result = handle_write_message(&mut session, req).await;
        let done = action == WriteAction::Commit as i32 || result.is_err();
        if tx.send(result).await.is_err() || done {
            return;
        }
        req = match inbound.next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                // A message that could not be taken (over the size limit, not decodable) ends
                // the call with its status, as containerd returns its `Recv` error; a client
                // that went away does not read it.
                tracing::debug!(error = %e, "write stream broke; ingest kept for resumption");
                let _ = tx.send(Err(e)).await;
                return;
            }
            None => return,
        };
    }
}

async fn handle_write_message(
    session: &mut WriteSession,
    req: WriteContentRequest,
) -> Result<WriteContentResponse, Status> {
    let Some(writer) = session.writer.take() else {
        return Err(to_status(&ContentRequestError::Committed));
    };
    if !req.expected.is_empty() {
        session.expected = Some(req.expected.clone());
    }
    if req.total > 0 {
        session.total = non_negative(req.total, "total")?;
    }
    let action = WriteAction::try_from(req.action)
        .map_err(|_| to_status(&ContentRequestError::UnknownAction(req.action)))?;
    let offset = non_negative(req.offset, "offset")?;
    let (total, expected) = (session.total, session.expected.clone());
    let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
    let data = req.data;
    let (writer, outcome) = blocking::run(move || {
        let mut writer = writer;
        let step = write_step(&mut writer, action, offset, &data, total);
        match step {
            Ok(mut resp) if action == WriteAction::Commit => {
                // Commit consumes the writer whatever its outcome.
                match writer.commit(total, expected.as_deref(), labels) {
                    Ok(digest) => {
                        resp.digest = digest.to_string();
                        (None, Ok(resp))
                    }
                    Err(e) => (None, Err(e)),
                }
            }
            other => (Some(writer), other),
        }
    })
    .await?;
    session.writer = writer;
    outcome.map_err(|e| to_status(&e))
}

/// Applies one STAT or WRITE (or the write half of COMMIT) and reports progress. containerd's
/// rules: a write at a non-zero offset must be at the current offset; offset 0 restarts.
fn write_step(
    writer: &mut NamespacedWriter,
    action: WriteAction,
    offset: u64,
    data: &[u8],
    total: u64,
) -> Result<WriteContentResponse, berth_core::namespaced_content::NamespacedContentError> {
    if action != WriteAction::Stat {
        writer.write_at(offset, data)?;
    }
    let status = writer.status();
    Ok(WriteContentResponse {
        action: action as i32,
        started_at: timestamp(status.started_at),
        updated_at: timestamp(status.updated_at),
        offset: status.offset as i64,
        total: total.max(writer.total()) as i64,
        digest: writer.digest().to_string(),
    })
}

/// The `io.containerd.grpc.v1.content` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "content")
        .serves(&[SERVICE_NAME])
        .reloadable()
        .requires(&[types::METADATA, types::CONTENT, types::EVENT, types::GC])
        .init(|ctx| {
            let content = content_view(ctx)?;
            let events: Arc<Exchange> = ctx.get_single(types::EVENT)?;
            let gc: Option<Arc<GcScheduler>> = ctx.get_single(types::GC).ok();
            let svc = ContentService::new(content, events, gc);
            Ok(Arc::new(GrpcService::new(ContentServer::new(svc))))
        })
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn own_refusals_keep_their_words_and_codes() {
        let s = non_negative(-1, "offset").unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "offset must not be negative: -1");
        assert_eq!(non_negative(7, "size").unwrap(), 7);

        let s = to_status(&ContentRequestError::ReadPastEnd { offset: 9, size: 4 });
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(
            s.message(),
            "read at offset 9 past object length 4: out of range"
        );

        let s = to_status(&ContentRequestError::ReadBlob {
            offset: 3,
            source: std::io::Error::from_raw_os_error(5),
        });
        assert_eq!(s.code(), Code::DataLoss);
        assert_eq!(
            s.message(),
            "read blob at 3: Input/output error (os error 5)"
        );

        let s = to_status(&ContentRequestError::NoReference);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "first message must have a reference");
        let s = to_status(&ContentRequestError::Committed);
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(s.message(), "write session already committed");
        let s = to_status(&ContentRequestError::UnknownAction(9));
        assert_eq!(s.message(), "unknown write action 9");
    }
}
