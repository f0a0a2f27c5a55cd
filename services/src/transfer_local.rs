//! The daemon's own stores behind the `berth-transfer` store traits, so that a pull inside
//! `berthd` (the CRI image service's `PullImage`) runs the same code as `berth images pull`,
//! without a gRPC round trip: content over [`NamespacedContent`], snapshots over
//! [`NamespacedSnapshots`], the applier over the Diff service's [`LayerDiffer`], images
//! and leases over the [`MetadataStore`]. Every blocking call runs through [`blocking::run`].
//!
//! Like containerd's local stores (and unlike the gRPC services), these publish no events.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read as _;
use std::sync::Arc;
use std::time::SystemTime;

use berth_core::namespaced_content::{NamespacedContent, NamespacedWriter};
use berth_core::namespaced_snapshots::NamespacedSnapshots;
use berth_core::Descriptor as MetaDescriptor;
use berth_core::{Image as MetaImage, MetadataStore};
use berth_filters::Filter;
use berth_registry::{Classify, ErrorKind};
use berth_snapshotters::apply::{LayerDescriptor, LayerDiffer};
use berth_snapshotters::Mount as SnapshotMount;
use berth_transfer::grpc::status_to_error;
use berth_transfer::{
    open_ingest_retrying, Applier, BlobInfo, ContentStore, ContentWriter, Cx, Descriptor, Image,
    ImageStore, Ingest, IngestStatus, LeaseManager, Mount, OpenAttempt, SnapshotStore, StoreError,
    Stores,
};
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use tokio_util::io::ReaderStream;

use crate::blocking;

/// The read size of [`LocalContent::reader`] chunks.
const READ_CHUNK: usize = 1 << 20;

/// A core error as a store error of the same errdefs class.
fn store_err<E: Classify + fmt::Display>(e: E) -> StoreError {
    StoreError::new(e.kind(), e.to_string())
}

/// Runs `f` on the blocking pool; a failed task is an `Internal` store error.
async fn run<T, F>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    blocking::run(f).await.map_err(|s| status_to_error(&s))
}

fn to_mount(m: SnapshotMount) -> Mount {
    Mount {
        kind: m.mount_type,
        source: m.source,
        target: m.target,
        options: m.options,
    }
}

fn from_mount(m: &Mount) -> SnapshotMount {
    SnapshotMount {
        mount_type: m.kind.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        options: m.options.clone(),
    }
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
            StoreError::new(
                ErrorKind::Internal,
                format!(
                    "content writer for {} lost after a failed call",
                    self.expected.digest
                ),
            )
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

#[tonic::async_trait]
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
            return Err(StoreError::new(
                ErrorKind::DataLoss,
                format!(
                    "short write to {}: offset {got} after writing up to {want}",
                    self.expected.digest
                ),
            ));
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
        match run(move || w.commit(size, Some(&digest), labels)).await? {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(store_err(e)),
        }
    }
}

#[tonic::async_trait]
impl ContentStore for LocalContent {
    async fn info(&self, cx: &Cx, digest: &str) -> Result<Option<BlobInfo>, StoreError> {
        let (c, ns, digest) = (
            self.content.clone(),
            cx.namespace.clone(),
            digest.to_owned(),
        );
        match run(move || c.info(&ns, &digest)).await? {
            Ok(rec) => Ok(Some(BlobInfo {
                size: rec.size,
                labels: rec.labels,
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(store_err(e)),
        }
    }

    async fn status(&self, cx: &Cx, ingest_ref: &str) -> Result<Option<IngestStatus>, StoreError> {
        let (c, ns, r) = (
            self.content.clone(),
            cx.namespace.clone(),
            ingest_ref.to_owned(),
        );
        match run(move || c.status(&ns, &r)).await? {
            Ok(s) => Ok(Some(IngestStatus {
                offset: s.offset,
                total: s.total,
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(store_err(e)),
        }
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
            match opened {
                Err(e) => OpenAttempt::Failed(e),
                Ok(Ok(w)) => {
                    let offset = w.status().offset;
                    OpenAttempt::Done(Ingest::Writer(Box::new(LocalWriter {
                        writer: Some(w),
                        offset,
                        expected: expected.clone(),
                    })))
                }
                Ok(Err(e)) if e.kind() == ErrorKind::AlreadyExists => {
                    OpenAttempt::Done(Ingest::Present)
                }
                Ok(Err(e)) if e.kind() == ErrorKind::Unavailable => {
                    OpenAttempt::Locked(store_err(e))
                }
                Ok(Err(e)) => OpenAttempt::Failed(store_err(e)),
            }
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
            file.read_to_end(&mut out)
                .map_err(|e| StoreError::new(ErrorKind::Internal, format!("read {digest}: {e}")))?;
            Ok(out)
        })
        .await?
    }

    async fn reader(
        &self,
        cx: &Cx,
        digest: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        let (c, ns, d) = (
            self.content.clone(),
            cx.namespace.clone(),
            digest.to_owned(),
        );
        let (file, _) = run(move || c.open(&ns, &d)).await?.map_err(store_err)?;
        let digest = digest.to_owned();
        let stream = ReaderStream::with_capacity(tokio::fs::File::from_std(file), READ_CHUNK).map(
            move |r| {
                r.map_err(|e| StoreError::new(ErrorKind::Internal, format!("read {digest}: {e}")))
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
        if labels.is_empty() {
            return Ok(());
        }
        let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
        let set: BTreeMap<String, String> = labels
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (c, ns, digest) = (
            self.content.clone(),
            cx.namespace.clone(),
            digest.to_owned(),
        );
        run(move || c.update(&ns, &digest, set, &paths))
            .await?
            .map(|_| ())
            .map_err(store_err)
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
}

#[tonic::async_trait]
impl SnapshotStore for LocalSnapshots {
    fn snapshotter(&self) -> &str {
        &self.name
    }

    async fn exists(&self, cx: &Cx, key: &str) -> Result<bool, StoreError> {
        let (s, ns, sn, key) = (
            self.snapshots.clone(),
            cx.namespace.clone(),
            self.name.clone(),
            key.to_owned(),
        );
        match run(move || s.stat(&ns, &sn, &key)).await? {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(store_err(e)),
        }
    }

    async fn prepare(
        &self,
        cx: &Cx,
        key: &str,
        parent: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, StoreError> {
        let (s, cx, sn, key, parent, labels) = (
            self.snapshots.clone(),
            cx.clone(),
            self.name.clone(),
            key.to_owned(),
            parent.to_owned(),
            labels.clone(),
        );
        let mounts = run(move || {
            let parent = (!parent.is_empty()).then_some(parent.as_str());
            s.prepare(
                &cx.namespace,
                &sn,
                &key,
                parent,
                labels,
                cx.lease.as_deref(),
            )
        })
        .await?
        .map_err(store_err)?;
        Ok(mounts.into_iter().map(to_mount).collect())
    }

    async fn commit(
        &self,
        cx: &Cx,
        name: &str,
        key: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let (s, cx, sn, name, key, labels) = (
            self.snapshots.clone(),
            cx.clone(),
            self.name.clone(),
            name.to_owned(),
            key.to_owned(),
            labels.clone(),
        );
        run(move || s.commit(&cx.namespace, &sn, &name, &key, labels, cx.lease.as_deref()))
            .await?
            .map_err(store_err)
    }

    async fn remove(&self, cx: &Cx, key: &str) -> Result<(), StoreError> {
        let (s, ns, sn, key) = (
            self.snapshots.clone(),
            cx.namespace.clone(),
            self.name.clone(),
            key.to_owned(),
        );
        run(move || s.remove(&ns, &sn, &key))
            .await?
            .map_err(store_err)
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

#[tonic::async_trait]
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
        let mounts: Vec<SnapshotMount> = mounts.iter().map(from_mount).collect();
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

#[tonic::async_trait]
impl ImageStore for LocalImages {
    async fn get(&self, cx: &Cx, name: &str) -> Result<Option<Image>, StoreError> {
        let (m, ns, name) = (self.meta.clone(), cx.namespace.clone(), name.to_owned());
        match run(move || m.get_image(&ns, &name)).await? {
            Ok(image) => Ok(Some(from_meta_image(image))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(store_err(e)),
        }
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

#[tonic::async_trait]
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
/// `berth_transfer::grpc::GrpcStores`).
#[derive(Debug, Clone)]
pub struct LocalStores {
    /// Content.
    pub content: LocalContent,
    /// The snapshotter layers are unpacked into.
    pub snapshots: LocalSnapshots,
    /// The diff applier.
    pub applier: LocalApplier,
    /// Images.
    pub images: LocalImages,
    /// Leases.
    pub leases: LocalLeases,
}

impl LocalStores {
    /// The daemon's stores: `differ` must apply from the same content store as `content`
    /// ([`crate::diff::layer_differ`] over it).
    pub fn new(
        meta: Arc<MetadataStore>,
        content: NamespacedContent,
        snapshots: NamespacedSnapshots,
        snapshotter: &str,
        differ: LayerDiffer,
    ) -> Self {
        Self {
            content: LocalContent::new(content),
            snapshots: LocalSnapshots::new(snapshots, snapshotter),
            applier: LocalApplier::new(differ),
            images: LocalImages::new(meta.clone()),
            leases: LocalLeases::new(meta),
        }
    }

    /// The [`Stores`] view of these stores in `namespace`.
    pub fn stores<'a>(&'a self, namespace: &'a str) -> Stores<'a> {
        Stores {
            namespace,
            content: &self.content,
            snapshots: &self.snapshots,
            applier: &self.applier,
            images: &self.images,
            leases: &self.leases,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use berth_core::content::ContentStore as Blobs;
    use berth_integration::image::{build_busybox_image, TestImage, HELLO, MEDIA_TYPE_MANIFEST};
    use berth_integration::registry::{require_registry, Registry};
    use berth_integration::require_root;
    use berth_snapshotters::native::NativeSnapshotter;
    use berth_snapshotters::Snapshotter;
    use berth_transfer::types::chain_ids;
    use berth_transfer::{pull, push, Platform, PullOptions, PushOptions, RegistryOptions};

    use super::*;

    const NS: &str = "default";
    const SNAPSHOTTER: &str = "native";
    const IMAGE: &str = "docker.io/library/bb:latest";

    /// A daemon's stores on a temporary root, without the daemon.
    struct Env {
        _dir: tempfile::TempDir,
        meta: Arc<MetadataStore>,
        content: NamespacedContent,
        snapshots: NamespacedSnapshots,
        stores: LocalStores,
    }

    fn env() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(MetadataStore::open(&dir.path().join("meta")).unwrap());
        let blobs = Arc::new(Blobs::open(&dir.path().join("content")).unwrap());
        let content = NamespacedContent::new(meta.clone(), blobs, true);
        let native: Arc<dyn Snapshotter> =
            Arc::new(NativeSnapshotter::new(&dir.path().join("native")).unwrap());
        let snapshots = NamespacedSnapshots::new(
            meta.clone(),
            BTreeMap::from([(SNAPSHOTTER.to_owned(), native)]),
        );
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let differ = crate::diff::layer_differ(content.clone(), tmp);
        let stores = LocalStores::new(
            meta.clone(),
            content.clone(),
            snapshots.clone(),
            SNAPSHOTTER,
            differ,
        );
        Env {
            _dir: dir,
            meta,
            content,
            snapshots,
            stores,
        }
    }

    impl Env {
        /// Writes the blobs of `img` and its image record, as an import would.
        fn seed(&self, img: &TestImage) {
            for (digest, data) in &img.blobs {
                let reference = format!("seed-{digest}");
                let size = data.len() as u64;
                let mut w = self
                    .content
                    .writer(NS, &reference, size, Some(digest), None)
                    .unwrap();
                w.write_at(0, data).unwrap();
                w.commit(size, Some(digest), BTreeMap::new()).unwrap();
            }
            let now = SystemTime::now();
            self.meta
                .create_image(
                    NS,
                    MetaImage {
                        name: img.name.clone(),
                        labels: BTreeMap::new(),
                        target: MetaDescriptor {
                            media_type: MEDIA_TYPE_MANIFEST.to_owned(),
                            digest: img.manifest_digest.clone(),
                            size: img.manifest_size as i64,
                            annotations: BTreeMap::new(),
                        },
                        created_at: now,
                        updated_at: now,
                    },
                )
                .unwrap();
        }
    }

    fn plain() -> RegistryOptions {
        RegistryOptions {
            plain_http: true,
            ..RegistryOptions::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transfer_local_push_then_pull_through_local_stores() {
        // The native snapshotter's bind mounts need root to apply layers.
        if !require_root() || !require_registry() {
            return;
        }
        let registry = Registry::start_plain();
        let source = env();
        let work = tempfile::tempdir().unwrap();
        let img = build_busybox_image(work.path(), IMAGE);
        source.seed(&img);
        let reference = format!("{}/local/bb:v1", registry.host());

        let push_opts = PushOptions {
            registry: plain(),
            ..PushOptions::default()
        };
        let pushed = push(IMAGE, &reference, &push_opts, &source.stores.stores(NS))
            .await
            .unwrap();
        assert_eq!(pushed.digest, img.manifest_digest);

        let dest = env();
        let pull_opts = PullOptions {
            registry: plain(),
            platform: Some(Platform::new("linux", "amd64")),
            ..PullOptions::default()
        };
        let image = pull(&reference, &pull_opts, &dest.stores.stores(NS))
            .await
            .unwrap();
        assert_eq!(image.name, reference);
        assert_eq!(image.target.digest, img.manifest_digest);

        // The image record.
        let record = dest.meta.get_image(NS, &reference).unwrap();
        assert_eq!(record.target.digest, img.manifest_digest);
        assert_eq!(record.target.size, img.manifest_size as i64);

        // The blobs, with the labels a pull sets.
        let manifest = dest.content.info(NS, &img.manifest_digest).unwrap();
        assert_eq!(
            manifest.labels["containerd.io/gc.ref.content.config"],
            img.config_digest
        );
        for (i, layer) in img.layers.iter().enumerate() {
            assert_eq!(
                manifest.labels[&format!("containerd.io/gc.ref.content.l.{i}")],
                layer.digest
            );
            let info = dest.content.info(NS, &layer.digest).unwrap();
            assert_eq!(info.size, layer.size);
            assert_eq!(info.labels["containerd.io/uncompressed"], layer.diff_id);
            assert_eq!(
                info.labels["containerd.io/distribution.source.127.0.0.1"],
                "local/bb"
            );
        }

        // The committed snapshots, and the config's reference to the top one.
        let diff_ids: Vec<String> = img.layers.iter().map(|l| l.diff_id.clone()).collect();
        let chain = chain_ids(&diff_ids);
        for id in &chain {
            let rec = dest.snapshots.stat(NS, SNAPSHOTTER, id).unwrap();
            assert_eq!(rec.kind, "committed", "{id}");
        }
        let top = chain.last().unwrap();
        let config = dest.content.info(NS, &img.config_digest).unwrap();
        assert_eq!(
            config.labels[&format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}")],
            *top
        );
        let view = dest
            .snapshots
            .view(NS, SNAPSHOTTER, "check", Some(top), BTreeMap::new(), None)
            .unwrap();
        let hello = std::fs::read(Path::new(&view[0].source).join("etc/hello")).unwrap();
        assert_eq!(hello, HELLO);
        dest.snapshots.remove(NS, SNAPSHOTTER, "check").unwrap();

        // The pull lease is gone.
        assert!(dest.stores.leases.ids(NS).await.unwrap().is_empty());

        // Pulling again fetches no blob.
        let gets = || -> usize {
            img.layers
                .iter()
                .map(|l| registry.blob_gets("local/bb", &l.digest).len())
                .sum()
        };
        assert_eq!(gets(), 2, "{}", registry.log_text());
        let again = pull(&reference, &pull_opts, &dest.stores.stores(NS))
            .await
            .unwrap();
        assert_eq!(again.target, image.target);
        assert_eq!(gets(), 2);
    }

    #[tokio::test]
    async fn transfer_local_content_round_trip() {
        use berth_transfer::ContentStore as _;
        let e = env();
        let cx = Cx::new(NS);
        let data = b"hello, local store".to_vec();
        let digest = berth_transfer::types::sha256_digest(&data);
        let desc = Descriptor::new("application/octet-stream", &digest, data.len() as u64);
        let content = &e.stores.content;
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
    }
}
