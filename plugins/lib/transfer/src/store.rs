//! The stores pull and push work over. Each trait has two implementations: gRPC proxies for
//! clients ([`crate::grpc`], as containerd's `content/proxy` and `snapshots/proxy` do) and the
//! daemon's local stores (`berth_core::transfer_local`), so that the CLI's pull and the
//! daemon-side pull the CRI image service needs run the same code.
//!
//! The traits are object-safe (`async_trait`), so [`Stores`] holds `&dyn` references and any
//! mix of implementations works. Every method takes a [`Cx`], the Rust form of the Go `context`
//! containerd threads through: the namespace and the lease new resources must be added to.
//!
//! # What a local implementation must do
//!
//! * [`ContentStore`]: `info` returns `Ok(None)` for an unknown digest. `writer` must take the
//!   ingest `ref` lock (a second writer on the same ref is `Unavailable`, which callers retry),
//!   answer [`Ingest::Present`] when the expected digest is already committed (in this namespace,
//!   or shared from another with the same size, as the `shared` policy does), and otherwise
//!   resume an existing ingest from its current offset. [`ContentWriter::commit`] verifies size
//!   and digest (mismatch = `FailedPrecondition`) and sets the labels; `AlreadyExists` at commit
//!   is success. Every blob and ingest written with `cx.lease` set is added to that lease.
//!   `update_labels` sets each given label, and deletes those whose value is empty (mask
//!   `labels.<k>`).
//! * [`SnapshotStore`]: `prepare` with an existing key is `AlreadyExists`, with a missing parent
//!   `NotFound`; snapshots made under a lease are added to it.
//! * [`Applier`]: decompresses the layer blob from the content store onto the mounts and returns
//!   the descriptor of the uncompressed tar (its digest is the diffID).
//! * [`ImageStore`]: `create` of an existing name is `AlreadyExists`; `update` changes only the
//!   field paths given (`target`, `labels.<k>`).
//! * [`LeaseManager`]: `create` of an existing id is `AlreadyExists`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use berth_errdefs::ErrorKind;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::StoreError;
use crate::types::{BlobInfo, Descriptor, Image, IngestStatus, Mount};

/// The request context of a store call: the namespace and the lease new resources join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cx {
    /// The containerd namespace (`containerd-namespace`).
    pub namespace: String,
    /// The lease, if any (`containerd-lease`).
    pub lease: Option<String>,
}

impl Cx {
    /// A context in `namespace` without a lease.
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            lease: None,
        }
    }

    /// The same namespace with `lease`.
    pub fn with_lease(&self, lease: &str) -> Self {
        Self {
            namespace: self.namespace.clone(),
            lease: Some(lease.to_owned()),
        }
    }
}

/// The result of opening an ingest.
pub enum Ingest {
    /// The content is already committed: nothing to write.
    Present,
    /// A writer positioned at [`ContentWriter::offset`] (non-zero when resuming).
    Writer(Box<dyn ContentWriter>),
}

/// One attempt of a store to open an ingest writer, for [`open_ingest_retrying`].
#[derive(Debug)]
pub enum OpenAttempt {
    /// Opened, or already present.
    Done(Ingest),
    /// The ref is locked by another writer (gRPC `Unavailable`); the error is returned once
    /// retrying is over.
    Locked(StoreError),
    /// Any other failure.
    Failed(StoreError),
}

/// How long a locked ingest ref is retried before giving up.
pub const LOCKED_RETRY_FOR: Duration = Duration::from_secs(60);

/// Runs `attempt` until it opens the ingest or fails otherwise than on a locked ref, which is
/// retried with backoff (50 ms doubling to 2 s) for [`LOCKED_RETRY_FOR`]: the ref may still be
/// held by a writer that is going away, e.g. an interrupted pull (containerd's
/// `content.OpenWriter` does the same).
pub async fn open_ingest_retrying<F, Fut>(
    ingest_ref: &str,
    mut attempt: F,
) -> Result<Ingest, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = OpenAttempt>,
{
    let deadline = tokio::time::Instant::now() + LOCKED_RETRY_FOR;
    let mut wait = Duration::from_millis(50);
    loop {
        match attempt().await {
            OpenAttempt::Done(ingest) => return Ok(ingest),
            OpenAttempt::Locked(_) if tokio::time::Instant::now() + wait < deadline => {
                tracing::debug!(ingest_ref, "content ref locked, retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            OpenAttempt::Failed(e) | OpenAttempt::Locked(e) => return Err(e),
        }
    }
}

impl From<Result<Box<dyn ContentWriter>, StoreError>> for OpenAttempt {
    /// Classifies the outcome of opening a writer by the store's rule: `AlreadyExists` means
    /// the blob is present, `Unavailable` a locked ref, any other error a failure.
    fn from(opened: Result<Box<dyn ContentWriter>, StoreError>) -> Self {
        match opened {
            Ok(w) => Self::Done(Ingest::Writer(w)),
            Err(e) if e.is_already_exists() => Self::Done(Ingest::Present),
            Err(e) if e.kind() == ErrorKind::Unavailable => Self::Locked(e),
            Err(e) => Self::Failed(e),
        }
    }
}

/// A store answer where `NotFound` means absent: `Ok(None)` for it, other errors unchanged.
pub fn absent_as_none<T>(found: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
    match found {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// A commit's answer where `AlreadyExists` (committed by another writer meanwhile) is success.
pub fn already_exists_ok<T>(committed: Result<T, StoreError>) -> Result<(), StoreError> {
    match committed {
        Err(e) if !e.is_already_exists() => Err(e),
        _ => Ok(()),
    }
}

/// What [`ContentStore::update_labels`] asks of a store: the labels to set (those with a
/// non-empty value) and the field paths `labels.<k>` of every given key, so that a key given
/// with an empty value is deleted. `None` when no label is given (nothing to update).
pub fn label_update(
    labels: &BTreeMap<String, String>,
) -> Option<(BTreeMap<String, String>, Vec<String>)> {
    if labels.is_empty() {
        return None;
    }
    let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
    let set = labels
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Some((set, paths))
}

impl fmt::Debug for Ingest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ingest::Present => f.write_str("Present"),
            Ingest::Writer(w) => write!(f, "Writer(offset {})", w.offset()),
        }
    }
}

/// An open ingest of one blob.
#[async_trait]
pub trait ContentWriter: Send {
    /// Bytes already written; the next [`ContentWriter::write`] appends here.
    fn offset(&self) -> u64;

    /// Appends `data` at [`ContentWriter::offset`].
    async fn write(&mut self, data: &[u8]) -> Result<(), StoreError>;

    /// Discards what was written, so that the next write starts at offset 0 (used when a
    /// resumed download restarts from the beginning).
    async fn truncate(&mut self) -> Result<(), StoreError>;

    /// Commits the blob under the expected digest with `labels`. `AlreadyExists` is success.
    async fn commit(self: Box<Self>, labels: BTreeMap<String, String>) -> Result<(), StoreError>;
}

/// A content store (`content.Store`).
#[async_trait]
pub trait ContentStore: Send + Sync {
    /// The size and labels of a committed blob; `None` when absent.
    async fn info(&self, cx: &Cx, digest: &str) -> Result<Option<BlobInfo>, StoreError>;

    /// The status of the ingest `ingest_ref`; `None` when there is none.
    async fn status(&self, cx: &Cx, ingest_ref: &str) -> Result<Option<IngestStatus>, StoreError>;

    /// Opens (or resumes) the ingest `ingest_ref` for the blob `expected`.
    async fn writer(
        &self,
        cx: &Cx,
        ingest_ref: &str,
        expected: &Descriptor,
    ) -> Result<Ingest, StoreError>;

    /// The whole blob (for manifests and configs).
    async fn read(&self, cx: &Cx, digest: &str) -> Result<Vec<u8>, StoreError>;

    /// The blob as a stream of chunks (for pushing layers).
    async fn reader(
        &self,
        cx: &Cx,
        digest: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, StoreError>;

    /// Sets `labels` on the blob; an empty value deletes the label.
    async fn update_labels(
        &self,
        cx: &Cx,
        digest: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), StoreError>;
}

/// The snapshotter an unpack writes into.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// The snapshotter's name (for the `gc.ref.snapshot.<name>` label).
    fn snapshotter(&self) -> &str;

    /// Does the snapshot `key` exist?
    async fn exists(&self, cx: &Cx, key: &str) -> Result<bool, StoreError>;

    /// Prepares an active snapshot `key` on `parent` (empty: none) and returns its mounts.
    async fn prepare(
        &self,
        cx: &Cx,
        key: &str,
        parent: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, StoreError>;

    /// Commits the active snapshot `key` as `name`.
    async fn commit(
        &self,
        cx: &Cx,
        name: &str,
        key: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), StoreError>;

    /// Removes the snapshot `key`.
    async fn remove(&self, cx: &Cx, key: &str) -> Result<(), StoreError>;
}

/// The diff applier (`diff.Applier`).
#[async_trait]
pub trait Applier: Send + Sync {
    /// Applies the layer blob `layer` onto `mounts`; returns the uncompressed descriptor.
    async fn apply(
        &self,
        cx: &Cx,
        layer: &Descriptor,
        mounts: &[Mount],
    ) -> Result<Descriptor, StoreError>;
}

/// The image store (`images.Store`).
#[async_trait]
pub trait ImageStore: Send + Sync {
    /// The image `name`; `None` when absent.
    async fn get(&self, cx: &Cx, name: &str) -> Result<Option<Image>, StoreError>;

    /// Creates `image`; `AlreadyExists` when the name is taken.
    async fn create(&self, cx: &Cx, image: &Image) -> Result<Image, StoreError>;

    /// Updates the fields `paths` (`target`, `labels.<k>`) of the image named `image.name`.
    async fn update(&self, cx: &Cx, image: &Image, paths: &[String]) -> Result<Image, StoreError>;
}

/// The lease manager (`leases.Manager`).
#[async_trait]
pub trait LeaseManager: Send + Sync {
    /// Creates the lease `id` with `labels`.
    async fn create(
        &self,
        cx: &Cx,
        id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), StoreError>;

    /// Deletes the lease `id`.
    async fn delete(&self, cx: &Cx, id: &str) -> Result<(), StoreError>;
}

/// How long a transfer lease lives if the transfer never deletes it (containerd clients use
/// 24 h).
pub const LEASE_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// The stores a transfer uses, in one namespace.
#[derive(Clone, Copy)]
pub struct Stores<'a> {
    /// The namespace every call is made in.
    pub namespace: &'a str,
    /// Blobs.
    pub content: &'a dyn ContentStore,
    /// The snapshotter layers are unpacked into.
    pub snapshots: &'a dyn SnapshotStore,
    /// Applies layers.
    pub applier: &'a dyn Applier,
    /// Image records.
    pub images: &'a dyn ImageStore,
    /// Leases protecting the transfer from garbage collection.
    pub leases: &'a dyn LeaseManager,
}

impl fmt::Debug for Stores<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stores")
            .field("namespace", &self.namespace)
            .field("snapshotter", &self.snapshots.snapshotter())
            .finish_non_exhaustive()
    }
}

/// One implementation of each store, owned: the gRPC proxies
/// ([`crate::grpc::GrpcStores`]) or the daemon's local stores (`berth_core::transfer_local`).
#[derive(Debug, Clone)]
pub struct StoreSet<C, S, A, I, L> {
    /// Blobs.
    pub content: C,
    /// The snapshotter layers are unpacked into.
    pub snapshots: S,
    /// Applies layers.
    pub applier: A,
    /// Image records.
    pub images: I,
    /// Leases.
    pub leases: L,
}

impl<C, S, A, I, L> StoreSet<C, S, A, I, L>
where
    C: ContentStore,
    S: SnapshotStore,
    A: Applier,
    I: ImageStore,
    L: LeaseManager,
{
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn locked() -> StoreError {
        StoreError::new(ErrorKind::Unavailable, "ref x locked")
    }

    #[tokio::test]
    async fn a_locked_ref_is_retried_until_it_opens() {
        let attempts = AtomicUsize::new(0);
        let ingest = open_ingest_retrying("x", || async {
            if attempts.fetch_add(1, Ordering::SeqCst) < 2 {
                OpenAttempt::Locked(locked())
            } else {
                OpenAttempt::Done(Ingest::Present)
            }
        })
        .await
        .unwrap();
        assert!(matches!(ingest, Ingest::Present));
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn other_failures_are_not_retried() {
        let attempts = AtomicUsize::new(0);
        let err = open_ingest_retrying("x", || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            OpenAttempt::Failed(StoreError::new(ErrorKind::NotFound, "no such namespace"))
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }
}
