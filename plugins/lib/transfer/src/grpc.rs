//! The store traits over containerd's gRPC API v1, for clients (the `berth` CLI): the proxies
//! containerd's client uses (`content/proxy`, `snapshots/proxy`, `diff/proxy`, the image and
//! lease services). Every request carries `containerd-namespace` and, when the [`Cx`] has one,
//! `containerd-lease`.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use berth_errdefs::grpc;
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::content::v1::{
    Info as ContentInfo, InfoRequest, ReadContentRequest, StatusRequest, UpdateRequest,
    WriteAction, WriteContentRequest, WriteContentResponse,
};
use berth_proto::containerd::services::diff::v1::diff_client::DiffClient;
use berth_proto::containerd::services::diff::v1::ApplyRequest;
use berth_proto::containerd::services::images::v1::images_client::ImagesClient;
use berth_proto::containerd::services::images::v1::{
    CreateImageRequest, GetImageRequest, Image as ProtoImage, UpdateImageRequest,
};
use berth_proto::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_proto::containerd::services::leases::v1::{CreateRequest, DeleteRequest};
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::services::snapshots::v1::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use berth_proto::containerd::types::{Descriptor as ProtoDescriptor, Mount as ProtoMount};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::Streaming;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::error::StoreError;
use crate::store::{
    absent_as_none, already_exists_ok, label_update, open_ingest_retrying, Applier, ContentStore,
    ContentWriter, Cx, ImageStore, Ingest, LeaseManager, SnapshotStore, StoreSet,
};
use crate::types::{BlobInfo, Descriptor, Image, IngestStatus, Mount};

/// The gRPC metadata key with the namespace.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";
/// The gRPC metadata key with the lease.
pub const LEASE_HEADER: &str = "containerd-lease";
/// The largest `data` of one `WRITE` message (containerd's client uses 1 MiB).
pub const WRITE_CHUNK: usize = 1 << 20;
/// Maps a gRPC status to a [`StoreError`] of the matching errdefs class.
pub fn status_to_error(status: &Status) -> StoreError {
    StoreError::new(grpc::to_native(status.code()), status.message())
}

fn err(status: Status) -> StoreError {
    status_to_error(&status)
}

/// Wraps `message` in a request with the namespace and lease headers of `cx`.
fn request<T>(cx: &Cx, message: T) -> Result<Request<T>, StoreError> {
    let mut req = Request::new(message);
    let value = |v: &str| {
        v.parse::<MetadataValue<_>>()
            .map_err(|_| StoreError::InvalidHeader {
                value: v.to_owned(),
            })
    };
    req.metadata_mut()
        .insert(NAMESPACE_HEADER, value(&cx.namespace)?);
    if let Some(lease) = &cx.lease {
        req.metadata_mut().insert(LEASE_HEADER, value(lease)?);
    }
    Ok(req)
}

fn to_hash(labels: &BTreeMap<String, String>) -> HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn from_hash(labels: HashMap<String, String>) -> BTreeMap<String, String> {
    labels.into_iter().collect()
}

/// The wire form of a descriptor (the platform is not part of it, as in containerd).
pub fn to_proto_descriptor(desc: &Descriptor) -> ProtoDescriptor {
    ProtoDescriptor {
        media_type: desc.media_type.clone(),
        digest: desc.digest.clone(),
        size: i64::try_from(desc.size).unwrap_or(i64::MAX),
        annotations: to_hash(&desc.annotations),
    }
}

/// A descriptor from its wire form.
pub fn from_proto_descriptor(desc: ProtoDescriptor) -> Descriptor {
    Descriptor {
        media_type: desc.media_type,
        digest: desc.digest,
        size: u64::try_from(desc.size).unwrap_or(0),
        annotations: from_hash(desc.annotations),
        platform: None,
    }
}

/// The content store over `containerd.services.content.v1.Content`.
#[derive(Debug, Clone)]
pub struct GrpcContent {
    client: ContentClient<Channel>,
}

impl GrpcContent {
    /// A content proxy on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: ContentClient::new(channel).max_decoding_message_size(64 << 20),
        }
    }

    /// Starts a `Write` stream for `ingest_ref` with the opening `STAT`; returns the stream
    /// halves and the first status, or the status error.
    async fn open_write(
        &self,
        cx: &Cx,
        ingest_ref: &str,
        expected: &Descriptor,
    ) -> Result<GrpcWriter, StoreError> {
        let (tx, rx) = mpsc::channel::<WriteContentRequest>(2);
        let stat = WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: ingest_ref.to_owned(),
            total: i64::try_from(expected.size).unwrap_or(i64::MAX),
            expected: expected.digest.clone(),
            ..Default::default()
        };
        let closed = || StoreError::WriteStreamClosed {
            ingest_ref: ingest_ref.to_owned(),
        };
        tx.send(stat).await.map_err(|_| closed())?;
        let req = request(cx, ReceiverStream::new(rx))?;
        let mut responses = self
            .client
            .clone()
            .write(req)
            .await
            .map_err(err)?
            .into_inner();
        let first = responses.message().await.map_err(err)?.ok_or_else(closed)?;
        Ok(GrpcWriter {
            tx,
            responses,
            ingest_ref: ingest_ref.to_owned(),
            expected: expected.clone(),
            offset: u64::try_from(first.offset).unwrap_or(0),
        })
    }
}

/// One `Content.Write` stream.
struct GrpcWriter {
    tx: mpsc::Sender<WriteContentRequest>,
    responses: Streaming<WriteContentResponse>,
    ingest_ref: String,
    expected: Descriptor,
    offset: u64,
}

impl GrpcWriter {
    async fn round_trip(
        &mut self,
        msg: WriteContentRequest,
    ) -> Result<WriteContentResponse, StoreError> {
        let closed = || StoreError::WriteStreamClosed {
            ingest_ref: self.ingest_ref.clone(),
        };
        if self.tx.send(msg).await.is_err() {
            // The server ended the stream: its status says why.
            return match self.responses.message().await {
                Err(status) => Err(err(status)),
                Ok(_) => Err(closed()),
            };
        }
        match self.responses.message().await {
            Ok(Some(resp)) => Ok(resp),
            Ok(None) => Err(closed()),
            Err(status) => Err(err(status)),
        }
    }
}

#[async_trait]
impl ContentWriter for GrpcWriter {
    fn offset(&self) -> u64 {
        self.offset
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        for chunk in data.chunks(WRITE_CHUNK) {
            let msg = WriteContentRequest {
                action: WriteAction::Write as i32,
                offset: i64::try_from(self.offset).unwrap_or(i64::MAX),
                data: chunk.to_vec(),
                ..Default::default()
            };
            let resp = self.round_trip(msg).await?;
            let want = self.offset + chunk.len() as u64;
            if u64::try_from(resp.offset).ok() != Some(want) {
                return Err(StoreError::ShortWrite {
                    ingest_ref: self.ingest_ref.clone(),
                    offset: resp.offset,
                    expected: want,
                });
            }
            self.offset = want;
        }
        Ok(())
    }

    async fn truncate(&mut self) -> Result<(), StoreError> {
        // A WRITE at offset 0 truncates the ingest (containerd's writer does the same).
        self.offset = 0;
        let msg = WriteContentRequest {
            action: WriteAction::Write as i32,
            offset: 0,
            ..Default::default()
        };
        self.round_trip(msg).await?;
        Ok(())
    }

    async fn commit(
        mut self: Box<Self>,
        labels: BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let msg = WriteContentRequest {
            action: WriteAction::Commit as i32,
            total: i64::try_from(self.expected.size).unwrap_or(i64::MAX),
            offset: i64::try_from(self.offset).unwrap_or(i64::MAX),
            expected: self.expected.digest.clone(),
            labels: to_hash(&labels),
            ..Default::default()
        };
        already_exists_ok(self.round_trip(msg).await)
    }
}

#[async_trait]
impl ContentStore for GrpcContent {
    async fn info(&self, cx: &Cx, digest: &str) -> Result<Option<BlobInfo>, StoreError> {
        let req = request(
            cx,
            InfoRequest {
                digest: digest.to_owned(),
            },
        )?;
        let resp = absent_as_none(self.client.clone().info(req).await.map_err(err))?;
        Ok(resp.and_then(|r| r.into_inner().info).map(|i| BlobInfo {
            size: u64::try_from(i.size).unwrap_or(0),
            labels: from_hash(i.labels),
        }))
    }

    async fn status(&self, cx: &Cx, ingest_ref: &str) -> Result<Option<IngestStatus>, StoreError> {
        let req = request(
            cx,
            StatusRequest {
                r#ref: ingest_ref.to_owned(),
            },
        )?;
        let resp = absent_as_none(self.client.clone().status(req).await.map_err(err))?;
        Ok(resp
            .and_then(|r| r.into_inner().status)
            .map(|s| IngestStatus {
                offset: u64::try_from(s.offset).unwrap_or(0),
                total: u64::try_from(s.total).unwrap_or(0),
            }))
    }

    async fn writer(
        &self,
        cx: &Cx,
        ingest_ref: &str,
        expected: &Descriptor,
    ) -> Result<Ingest, StoreError> {
        open_ingest_retrying(ingest_ref, || async {
            let opened = self.open_write(cx, ingest_ref, expected).await;
            opened.map(|w| Box::new(w) as Box<dyn ContentWriter>).into()
        })
        .await
    }

    async fn read(&self, cx: &Cx, digest: &str) -> Result<Vec<u8>, StoreError> {
        let mut stream = self.reader(cx, digest).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    async fn reader(
        &self,
        cx: &Cx,
        digest: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        let req = request(
            cx,
            ReadContentRequest {
                digest: digest.to_owned(),
                offset: 0,
                size: 0,
            },
        )?;
        let stream = self
            .client
            .clone()
            .read(req)
            .await
            .map_err(err)?
            .into_inner();
        Ok(stream
            .map(|r| r.map(|m| Bytes::from(m.data)).map_err(err))
            .boxed())
    }

    async fn update_labels(
        &self,
        cx: &Cx,
        digest: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let Some((set, paths)) = label_update(labels) else {
            return Ok(());
        };
        let req = request(
            cx,
            UpdateRequest {
                info: Some(ContentInfo {
                    digest: digest.to_owned(),
                    labels: to_hash(&set),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            },
        )?;
        self.client.clone().update(req).await.map_err(err)?;
        Ok(())
    }
}

/// The snapshotter `name` over `containerd.services.snapshots.v1.Snapshots`.
#[derive(Debug, Clone)]
pub struct GrpcSnapshots {
    client: SnapshotsClient<Channel>,
    name: String,
}

impl GrpcSnapshots {
    /// A proxy for the snapshotter `name` (say `overlayfs`) on `channel`.
    pub fn new(channel: Channel, name: &str) -> Self {
        Self {
            client: SnapshotsClient::new(channel),
            name: name.to_owned(),
        }
    }
}

#[async_trait]
impl SnapshotStore for GrpcSnapshots {
    fn snapshotter(&self) -> &str {
        &self.name
    }

    async fn exists(&self, cx: &Cx, key: &str) -> Result<bool, StoreError> {
        let req = request(
            cx,
            StatSnapshotRequest {
                snapshotter: self.name.clone(),
                key: key.to_owned(),
            },
        )?;
        let stat = self.client.clone().stat(req).await.map_err(err);
        Ok(absent_as_none(stat)?.is_some())
    }

    async fn prepare(
        &self,
        cx: &Cx,
        key: &str,
        parent: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, StoreError> {
        let req = request(
            cx,
            PrepareSnapshotRequest {
                snapshotter: self.name.clone(),
                key: key.to_owned(),
                parent: parent.to_owned(),
                labels: to_hash(labels),
            },
        )?;
        let resp = self.client.clone().prepare(req).await.map_err(err)?;
        Ok(resp
            .into_inner()
            .mounts
            .into_iter()
            .map(Mount::from)
            .collect())
    }

    async fn commit(
        &self,
        cx: &Cx,
        name: &str,
        key: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let req = request(
            cx,
            CommitSnapshotRequest {
                snapshotter: self.name.clone(),
                name: name.to_owned(),
                key: key.to_owned(),
                labels: to_hash(labels),
            },
        )?;
        self.client.clone().commit(req).await.map_err(err)?;
        Ok(())
    }

    async fn remove(&self, cx: &Cx, key: &str) -> Result<(), StoreError> {
        let req = request(
            cx,
            RemoveSnapshotRequest {
                snapshotter: self.name.clone(),
                key: key.to_owned(),
            },
        )?;
        self.client.clone().remove(req).await.map_err(err)?;
        Ok(())
    }
}

/// The applier over `containerd.services.diff.v1.Diff`.
#[derive(Debug, Clone)]
pub struct GrpcApplier {
    client: DiffClient<Channel>,
}

impl GrpcApplier {
    /// A diff proxy on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: DiffClient::new(channel),
        }
    }
}

#[async_trait]
impl Applier for GrpcApplier {
    async fn apply(
        &self,
        cx: &Cx,
        layer: &Descriptor,
        mounts: &[Mount],
    ) -> Result<Descriptor, StoreError> {
        let req = request(
            cx,
            ApplyRequest {
                diff: Some(to_proto_descriptor(layer)),
                mounts: mounts.iter().map(ProtoMount::from).collect(),
                payloads: HashMap::new(),
            },
        )?;
        let resp = self.client.clone().apply(req).await.map_err(err)?;
        resp.into_inner()
            .applied
            .map(from_proto_descriptor)
            .ok_or(StoreError::IncompleteReply {
                call: "Diff.Apply",
                part: "descriptor",
            })
    }
}

/// The image store over `containerd.services.images.v1.Images`.
#[derive(Debug, Clone)]
pub struct GrpcImages {
    client: ImagesClient<Channel>,
}

impl GrpcImages {
    /// An images proxy on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: ImagesClient::new(channel),
        }
    }
}

fn to_proto_image(image: &Image) -> ProtoImage {
    ProtoImage {
        name: image.name.clone(),
        labels: to_hash(&image.labels),
        target: Some(to_proto_descriptor(&image.target)),
        created_at: None,
        updated_at: None,
    }
}

fn from_proto_image(image: ProtoImage) -> Image {
    Image {
        name: image.name,
        target: image.target.map(from_proto_descriptor).unwrap_or_default(),
        labels: from_hash(image.labels),
    }
}

#[async_trait]
impl ImageStore for GrpcImages {
    async fn get(&self, cx: &Cx, name: &str) -> Result<Option<Image>, StoreError> {
        let req = request(
            cx,
            GetImageRequest {
                name: name.to_owned(),
            },
        )?;
        let resp = absent_as_none(self.client.clone().get(req).await.map_err(err))?;
        Ok(resp
            .and_then(|r| r.into_inner().image)
            .map(from_proto_image))
    }

    async fn create(&self, cx: &Cx, image: &Image) -> Result<Image, StoreError> {
        let req = request(
            cx,
            CreateImageRequest {
                image: Some(to_proto_image(image)),
            },
        )?;
        let resp = self.client.clone().create(req).await.map_err(err)?;
        Ok(resp
            .into_inner()
            .image
            .map(from_proto_image)
            .unwrap_or_else(|| image.clone()))
    }

    async fn update(&self, cx: &Cx, image: &Image, paths: &[String]) -> Result<Image, StoreError> {
        let req = request(
            cx,
            UpdateImageRequest {
                image: Some(to_proto_image(image)),
                update_mask: Some(prost_types::FieldMask {
                    paths: paths.to_vec(),
                }),
            },
        )?;
        let resp = self.client.clone().update(req).await.map_err(err)?;
        Ok(resp
            .into_inner()
            .image
            .map(from_proto_image)
            .unwrap_or_else(|| image.clone()))
    }
}

/// The lease manager over `containerd.services.leases.v1.Leases`.
#[derive(Debug, Clone)]
pub struct GrpcLeases {
    client: LeasesClient<Channel>,
}

impl GrpcLeases {
    /// A leases proxy on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: LeasesClient::new(channel),
        }
    }
}

#[async_trait]
impl LeaseManager for GrpcLeases {
    async fn create(
        &self,
        cx: &Cx,
        id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let req = request(
            cx,
            CreateRequest {
                id: id.to_owned(),
                labels: to_hash(labels),
            },
        )?;
        self.client.clone().create(req).await.map_err(err)?;
        Ok(())
    }

    async fn delete(&self, cx: &Cx, id: &str) -> Result<(), StoreError> {
        let req = request(
            cx,
            DeleteRequest {
                id: id.to_owned(),
                sync: false,
            },
        )?;
        self.client.clone().delete(req).await.map_err(err)?;
        Ok(())
    }
}

/// All five proxies on one channel.
pub type GrpcStores = StoreSet<GrpcContent, GrpcSnapshots, GrpcApplier, GrpcImages, GrpcLeases>;

impl GrpcStores {
    /// Proxies on `channel`, unpacking into the snapshotter `snapshotter`.
    pub fn new(channel: Channel, snapshotter: &str) -> Self {
        Self {
            content: GrpcContent::new(channel.clone()),
            snapshots: GrpcSnapshots::new(channel.clone(), snapshotter),
            applier: GrpcApplier::new(channel.clone()),
            images: GrpcImages::new(channel.clone()),
            leases: GrpcLeases::new(channel),
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_errdefs::ErrorKind;

    use super::*;

    #[test]
    fn statuses_map_to_error_classes() {
        assert_eq!(
            status_to_error(&Status::not_found("x")).kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            status_to_error(&Status::unavailable("locked")).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            status_to_error(&Status::unknown("?")).kind(),
            ErrorKind::Internal
        );
    }

    #[test]
    fn requests_carry_namespace_and_lease() {
        let cx = Cx::new("ns").with_lease("l1");
        let req = request(&cx, ()).unwrap();
        assert_eq!(req.metadata().get(NAMESPACE_HEADER).unwrap(), "ns");
        assert_eq!(req.metadata().get(LEASE_HEADER).unwrap(), "l1");
        let req = request(&Cx::new("ns"), ()).unwrap();
        assert!(req.metadata().get(LEASE_HEADER).is_none());
    }

    #[test]
    fn descriptors_round_trip() {
        let mut d = Descriptor::new("m", "sha256:00", 5);
        d.annotations.insert("a".into(), "b".into());
        assert_eq!(from_proto_descriptor(to_proto_descriptor(&d)), d);
    }
}
