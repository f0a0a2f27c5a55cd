//! The daemon's own stores behind the `berth-transfer` store traits, so that a pull inside
//! `berthd` (the CRI image service's `PullImage`) runs the same code as `berth images pull`,
//! without a gRPC round trip: content over [`NamespacedContent`], snapshots over
//! [`NamespacedSnapshots`], the applier over the snapshotters' [`LayerDiffer`] (the one the
//! Diff service calls, built by [`crate::layer_content::layer_differ`]), images and leases over
//! the [`MetadataStore`]. Every blocking call runs on tokio's blocking pool through one helper.
//! The core errors travel typed, as [`StoreError::local`], keeping their errdefs class.
//!
//! Like containerd's local stores (`core/transfer/local`, and unlike the gRPC services), these
//! publish no events.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::sync::Arc;
use std::time::SystemTime;

use berth_filters::Filter;
use berth_registry::{Classify, ErrorKind};
use berth_snapshotters::apply::{LayerDescriptor, LayerDiffer};
use berth_transfer::store::{absent_as_none, already_exists_ok, label_update, StoreSet};
use berth_transfer::{
    open_ingest_retrying, Applier, BlobInfo, ContentStore, ContentWriter, Cx, Descriptor, Image,
    ImageStore, Ingest, IngestStatus, LeaseManager, Mount, SnapshotStore, StoreError,
};
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use tokio_util::io::ReaderStream;

use crate::metadata::{Descriptor as MetaDescriptor, Image as MetaImage, MetadataStore};
use crate::namespaced_content::{NamespacedContent, NamespacedWriter};
use crate::namespaced_snapshots::NamespacedSnapshots;

/// The read size of [`LocalContent::reader`] chunks.
const READ_CHUNK: usize = 1 << 20;

/// What the local stores fail with beside the core stores' own errors.
#[derive(Debug, thiserror::Error)]
pub enum LocalStoreError {
    /// The blocking task running a store call panicked or was cancelled.
    #[error("blocking task failed: {0}")]
    Blocking(#[source] tokio::task::JoinError),
    /// A content writer failed in a call that moved it to the blocking pool and is gone.
    #[error("content writer for {digest} lost after a failed call")]
    WriterLost {
        /// The blob being written.
        digest: String,
    },
    /// The store's offset after a write is not where the data ends.
    #[error("short write to {digest}: offset {offset} after writing up to {expected}")]
    ShortWrite {
        /// The blob being written.
        digest: String,
        /// The offset the store reached.
        offset: u64,
        /// Where the data written ends.
        expected: u64,
    },
    /// Reading a blob's bytes failed.
    #[error("read {digest}: {source}")]
    Read {
        /// The blob.
        digest: String,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
}

impl Classify for LocalStoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Blocking(_) | Self::WriterLost { .. } | Self::Read { .. } => ErrorKind::Internal,
            Self::ShortWrite { .. } => ErrorKind::DataLoss,
        }
    }
}

/// A core error as a store error, typed and of the same errdefs class.
fn store_err<E: Classify + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::local(e)
}

/// Runs `f` on the blocking pool; a failed task is an `Internal` store error.
async fn run<T, F>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| store_err(LocalStoreError::Blocking(e)))
}

fn to_meta_descriptor(d: &Descriptor) -> MetaDescriptor {
    MetaDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: i64::try_from(d.size).unwrap_or(i64::MAX),
        annotations: d.annotations.clone(),
    }
}

fn from_meta_image(image: MetaImage) -> Image {
    Image {
        name: image.name,
        target: Descriptor {
            media_type: image.target.media_type,
            digest: image.target.digest,
            size: u64::try_from(image.target.size).unwrap_or(0),
            annotations: image.target.annotations,
            platform: None,
        },
        labels: image.labels,
    }
}

fn to_meta_image(image: &Image) -> MetaImage {
    let now = SystemTime::now();
    MetaImage {
        name: image.name.clone(),
        labels: image.labels.clone(),
        target: to_meta_descriptor(&image.target),
        created_at: now,
        updated_at: now,
    }
}

/// The content store of the daemon, namespaced.
#[derive(Debug, Clone)]
pub struct LocalContent {
    content: NamespacedContent,
}

impl LocalContent {
    /// The trait view of `content`.
    pub fn new(content: NamespacedContent) -> Self {
        Self { content }
    }

    /// Runs `f(content, namespace, key)` on the blocking pool; its error becomes a store error.
    async fn blocking<T, E, F>(&self, cx: &Cx, key: &str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&NamespacedContent, &str, &str) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Classify + Send + Sync + 'static,
    {
        let (c, ns, key) = (self.content.clone(), cx.namespace.clone(), key.to_owned());
        run(move || f(&c, &ns, &key)).await?.map_err(store_err)
    }
}

/// An open ingest of the local content store. The core writer is moved to the blocking pool
/// for each call and back.
struct LocalWriter {
    writer: Option<NamespacedWriter>,
    offset: u64,
    expected: Descriptor,
}

impl LocalWriter {
    fn take(&mut self) -> Result<NamespacedWriter, StoreError> {
        self.writer.take().ok_or_else(|| {
            store_err(LocalStoreError::WriterLost {
                digest: self.expected.digest.clone(),
            })
        })
    }

    /// `write_at(offset, data)` on the blocking pool; returns the new offset.
    async fn write_at(&mut self, offset: u64, data: Vec<u8>) -> Result<u64, StoreError> {
        let mut w = self.take()?;
        let (w, result) = run(move || {
            let r = w.write_at(offset, &data);
            (w, r)
        })
        .await?;
        self.writer = Some(w);
        let new = result.map_err(store_err)?;
        self.offset = new;
        Ok(new)
    }
}

#[async_trait::async_trait]
impl ContentWriter for LocalWriter {
    fn offset(&self) -> u64 {
        self.offset
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        if data.is_empty() {
            return Ok(());
        }
        let want = self.offset + data.len() as u64;
        let got = self.write_at(self.offset, data.to_vec()).await?;
        if got != want {
            return Err(store_err(LocalStoreError::ShortWrite {
                digest: self.expected.digest.clone(),
                offset: got,
                expected: want,
            }));
        }
        Ok(())
    }

    async fn truncate(&mut self) -> Result<(), StoreError> {
        // A write at offset 0 truncates the ingest (the core writer's rule).
        self.write_at(0, Vec::new()).await?;
        self.offset = 0;
        Ok(())
    }

    async fn commit(
        mut self: Box<Self>,
        labels: BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let w = self.take()?;
        let (size, digest) = (self.expected.size, self.expected.digest.clone());
        already_exists_ok(
            run(move || w.commit(size, Some(&digest), labels))
                .await?
                .map_err(store_err),
        )
    }
}

#[async_trait::async_trait]
impl ContentStore for LocalContent {
    async fn info(&self, cx: &Cx, digest: &str) -> Result<Option<BlobInfo>, StoreError> {
        let rec = absent_as_none(self.blocking(cx, digest, |c, ns, d| c.info(ns, d)).await)?;
        Ok(rec.map(|rec| BlobInfo {
            size: rec.size,
            labels: rec.labels,
        }))
    }

    async fn status(&self, cx: &Cx, ingest_ref: &str) -> Result<Option<IngestStatus>, StoreError> {
        let status = self.blocking(cx, ingest_ref, |c, ns, r| c.status(ns, r));
        let status = absent_as_none(status.await)?;
        Ok(status.map(|s| IngestStatus {
            offset: s.offset,
            total: s.total,
        }))
    }

    async fn writer(
        &self,
        cx: &Cx,
        ingest_ref: &str,
        expected: &Descriptor,
    ) -> Result<Ingest, StoreError> {
        open_ingest_retrying(ingest_ref, || async {
            let (c, cx2, r, e) = (
                self.content.clone(),
                cx.clone(),
                ingest_ref.to_owned(),
                expected.clone(),
            );
            let opened = run(move || {
                c.writer(
                    &cx2.namespace,
                    &r,
                    e.size,
                    Some(&e.digest),
                    cx2.lease.as_deref(),
                )
            })
            .await;
            let opened = opened.and_then(|r| r.map_err(store_err)).map(|w| {
                let offset = w.status().offset;
                Box::new(LocalWriter {
                    writer: Some(w),
                    offset,
                    expected: expected.clone(),
                }) as Box<dyn ContentWriter>
            });
            opened.into()
        })
        .await
    }

    async fn read(&self, cx: &Cx, digest: &str) -> Result<Vec<u8>, StoreError> {
        let (c, ns, digest) = (
            self.content.clone(),
            cx.namespace.clone(),
            digest.to_owned(),
        );
        run(move || {
            let (mut file, size) = c.open(&ns, &digest).map_err(store_err)?;
            let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            file.read_to_end(&mut out).map_err(|source| {
                store_err(LocalStoreError::Read {
                    digest: digest.clone(),
                    source,
                })
            })?;
            Ok(out)
        })
        .await?
    }

    async fn reader(
        &self,
        cx: &Cx,
        digest: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        let (file, _) = self.blocking(cx, digest, |c, ns, d| c.open(ns, d)).await?;
        let digest = digest.to_owned();
        let stream = ReaderStream::with_capacity(tokio::fs::File::from_std(file), READ_CHUNK).map(
            move |r| {
                r.map_err(|source| {
                    store_err(LocalStoreError::Read {
                        digest: digest.clone(),
                        source,
                    })
                })
            },
        );
        Ok(stream.boxed())
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
        self.blocking(cx, digest, move |c, ns, d| c.update(ns, d, set, &paths))
            .await
            .map(|_| ())
    }
}

/// One snapshotter of the daemon, namespaced.
#[derive(Debug, Clone)]
pub struct LocalSnapshots {
    snapshots: NamespacedSnapshots,
    name: String,
}

impl LocalSnapshots {
    /// The trait view of the snapshotter `name` of `snapshots`.
    pub fn new(snapshots: NamespacedSnapshots, name: &str) -> Self {
        Self {
            snapshots,
            name: name.to_owned(),
        }
    }

    /// Runs `f(snapshots, cx, snapshotter)` on the blocking pool; its error becomes a store
    /// error.
    async fn blocking<T, E, F>(&self, cx: &Cx, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&NamespacedSnapshots, &Cx, &str) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Classify + Send + Sync + 'static,
    {
        let (s, cx, sn) = (self.snapshots.clone(), cx.clone(), self.name.clone());
        run(move || f(&s, &cx, &sn)).await?.map_err(store_err)
    }
}

#[async_trait::async_trait]
impl SnapshotStore for LocalSnapshots {
    fn snapshotter(&self) -> &str {
        &self.name
    }

    async fn exists(&self, cx: &Cx, key: &str) -> Result<bool, StoreError> {
        let key = key.to_owned();
        let stat = self.blocking(cx, move |s, cx, sn| s.stat(&cx.namespace, sn, &key));
        Ok(absent_as_none(stat.await)?.is_some())
    }

    async fn prepare(
        &self,
        cx: &Cx,
        key: &str,
        parent: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, StoreError> {
        let (key, parent, labels) = (key.to_owned(), parent.to_owned(), labels.clone());
        self.blocking(cx, move |s, cx, sn| {
            let parent = (!parent.is_empty()).then_some(parent.as_str());
            let lease = cx.lease.as_deref();
            s.prepare(&cx.namespace, sn, &key, parent, labels, lease)
        })
        .await
    }

    async fn commit(
        &self,
        cx: &Cx,
        name: &str,
        key: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let (name, key, labels) = (name.to_owned(), key.to_owned(), labels.clone());
        self.blocking(cx, move |s, cx, sn| {
            let lease = cx.lease.as_deref();
            s.commit(&cx.namespace, sn, &name, &key, labels, lease)
        })
        .await
    }

    async fn remove(&self, cx: &Cx, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.blocking(cx, move |s, cx, sn| s.remove(&cx.namespace, sn, &key))
            .await
    }
}

/// The diff applier of the daemon: the Diff service's [`LayerDiffer`], called directly.
#[derive(Debug, Clone)]
pub struct LocalApplier {
    differ: LayerDiffer,
}

impl LocalApplier {
    /// The trait view of `differ`.
    pub fn new(differ: LayerDiffer) -> Self {
        Self { differ }
    }
}

#[async_trait::async_trait]
impl Applier for LocalApplier {
    async fn apply(
        &self,
        cx: &Cx,
        layer: &Descriptor,
        mounts: &[Mount],
    ) -> Result<Descriptor, StoreError> {
        let (differ, ns) = (self.differ.clone(), cx.namespace.clone());
        let layer = LayerDescriptor {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: layer.size,
        };
        let mounts = mounts.to_vec();
        let applied = run(move || differ.apply(&ns, &layer, &mounts))
            .await?
            .map_err(store_err)?;
        Ok(Descriptor {
            media_type: applied.media_type,
            digest: applied.digest,
            size: applied.size,
            annotations: BTreeMap::new(),
            platform: None,
        })
    }
}

/// The image store of the daemon.
#[derive(Debug, Clone)]
pub struct LocalImages {
    meta: Arc<MetadataStore>,
}

impl LocalImages {
    /// The trait view of the images in `meta`.
    pub fn new(meta: Arc<MetadataStore>) -> Self {
        Self { meta }
    }
}

#[async_trait::async_trait]
impl ImageStore for LocalImages {
    async fn get(&self, cx: &Cx, name: &str) -> Result<Option<Image>, StoreError> {
        let (m, ns, name) = (self.meta.clone(), cx.namespace.clone(), name.to_owned());
        let image = run(move || m.get_image(&ns, &name))
            .await?
            .map_err(store_err);
        Ok(absent_as_none(image)?.map(from_meta_image))
    }

    async fn create(&self, cx: &Cx, image: &Image) -> Result<Image, StoreError> {
        let (m, ns, image) = (
            self.meta.clone(),
            cx.namespace.clone(),
            to_meta_image(image),
        );
        run(move || m.create_image(&ns, image))
            .await?
            .map(from_meta_image)
            .map_err(store_err)
    }

    async fn update(&self, cx: &Cx, image: &Image, paths: &[String]) -> Result<Image, StoreError> {
        let (m, ns, image, paths) = (
            self.meta.clone(),
            cx.namespace.clone(),
            to_meta_image(image),
            paths.to_vec(),
        );
        run(move || m.update_image(&ns, image, &paths))
            .await?
            .map(from_meta_image)
            .map_err(store_err)
    }
}

/// The lease manager of the daemon.
#[derive(Debug, Clone)]
pub struct LocalLeases {
    meta: Arc<MetadataStore>,
}

impl LocalLeases {
    /// The trait view of the leases in `meta`.
    pub fn new(meta: Arc<MetadataStore>) -> Self {
        Self { meta }
    }

    /// The ids of the leases of `namespace` (for tests and diagnostics).
    pub async fn ids(&self, namespace: &str) -> Result<Vec<String>, StoreError> {
        let (m, ns) = (self.meta.clone(), namespace.to_owned());
        let leases = run(move || m.list_leases(&ns, &Filter::default()))
            .await?
            .map_err(store_err)?;
        Ok(leases.into_iter().map(|l| l.id).collect())
    }
}

#[async_trait::async_trait]
impl LeaseManager for LocalLeases {
    async fn create(
        &self,
        cx: &Cx,
        id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let (m, ns, id, labels) = (
            self.meta.clone(),
            cx.namespace.clone(),
            id.to_owned(),
            labels.clone(),
        );
        run(move || m.create_lease(&ns, &id, labels))
            .await?
            .map(|_| ())
            .map_err(store_err)
    }

    async fn delete(&self, cx: &Cx, id: &str) -> Result<(), StoreError> {
        let (m, ns, id) = (self.meta.clone(), cx.namespace.clone(), id.to_owned());
        run(move || m.delete_lease(&ns, &id))
            .await?
            .map_err(store_err)
    }
}

/// All five local stores, unpacking into one snapshotter (the local twin of
/// `berth_transfer::grpc::GrpcStores`); [`StoreSet::stores`] gives their [`Stores`] view.
///
/// [`Stores`]: berth_transfer::Stores
#[derive(Debug, Clone)]
pub struct LocalStores(
    StoreSet<LocalContent, LocalSnapshots, LocalApplier, LocalImages, LocalLeases>,
);

impl LocalStores {
    /// The daemon's stores: `differ` must apply from the same content store as `content`
    /// ([`crate::layer_content::layer_differ`] over it).
    pub fn new(
        meta: Arc<MetadataStore>,
        content: NamespacedContent,
        snapshots: NamespacedSnapshots,
        snapshotter: &str,
        differ: LayerDiffer,
    ) -> Self {
        Self(StoreSet {
            content: LocalContent::new(content),
            snapshots: LocalSnapshots::new(snapshots, snapshotter),
            applier: LocalApplier::new(differ),
            images: LocalImages::new(meta.clone()),
            leases: LocalLeases::new(meta),
        })
    }
}

impl std::ops::Deref for LocalStores {
    type Target = StoreSet<LocalContent, LocalSnapshots, LocalApplier, LocalImages, LocalLeases>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use crate::content::ContentStore as Blobs;

    use super::*;

    const NS: &str = "default";

    /// The local content store on a temporary root.
    fn content(dir: &std::path::Path) -> LocalContent {
        let meta = Arc::new(MetadataStore::open(&dir.join("meta")).unwrap());
        let blobs = Arc::new(Blobs::open(&dir.join("content")).unwrap());
        LocalContent::new(NamespacedContent::new(meta, blobs, true))
    }

    #[tokio::test]
    async fn transfer_local_content_round_trip() {
        use berth_transfer::ContentStore as _;
        let dir = tempfile::tempdir().unwrap();
        let local = content(dir.path());
        let cx = Cx::new(NS);
        let data = b"hello, local store".to_vec();
        let digest = berth_transfer::types::sha256_digest(&data);
        let desc = Descriptor::new("application/octet-stream", &digest, data.len() as u64);
        let content = &local;
        assert!(content.info(&cx, &digest).await.unwrap().is_none());

        // A partial write, abandoned, then resumed from its offset.
        let Ingest::Writer(mut w) = content.writer(&cx, "ref-1", &desc).await.unwrap() else {
            panic!("nothing is present yet");
        };
        w.write(&data[..5]).await.unwrap();
        drop(w);
        let status = content.status(&cx, "ref-1").await.unwrap().unwrap();
        assert_eq!(status.offset, 5);
        let Ingest::Writer(mut w) = content.writer(&cx, "ref-1", &desc).await.unwrap() else {
            panic!("nothing is present yet");
        };
        assert_eq!(w.offset(), 5);
        w.write(&data[5..]).await.unwrap();
        w.commit(BTreeMap::from([("a".to_owned(), "1".to_owned())]))
            .await
            .unwrap();

        let info = content.info(&cx, &digest).await.unwrap().unwrap();
        assert_eq!(info.size, data.len() as u64);
        assert_eq!(info.labels["a"], "1");
        assert!(matches!(
            content.writer(&cx, "ref-2", &desc).await.unwrap(),
            Ingest::Present
        ));
        assert_eq!(content.read(&cx, &digest).await.unwrap(), data);
        let streamed: Vec<u8> = content
            .reader(&cx, &digest)
            .await
            .unwrap()
            .map(|c| c.unwrap().to_vec())
            .concat()
            .await;
        assert_eq!(streamed, data);

        content
            .update_labels(
                &cx,
                &digest,
                &BTreeMap::from([
                    ("a".to_owned(), String::new()),
                    ("b".to_owned(), "2".to_owned()),
                ]),
            )
            .await
            .unwrap();
        let info = content.info(&cx, &digest).await.unwrap().unwrap();
        assert_eq!(
            info.labels,
            BTreeMap::from([("b".to_owned(), "2".to_owned())])
        );

        // A wrong digest fails the commit with FailedPrecondition.
        let bad = Descriptor::new(
            "application/octet-stream",
            &berth_transfer::types::sha256_digest(b"other"),
            data.len() as u64,
        );
        let Ingest::Writer(mut w) = content.writer(&cx, "ref-3", &bad).await.unwrap() else {
            panic!("nothing is present yet");
        };
        w.write(&data).await.unwrap();
        let err = w.commit(BTreeMap::new()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        // The core error travels as itself, not as text.
        assert!(matches!(err, StoreError::Local { .. }), "{err:?}");
    }
}
