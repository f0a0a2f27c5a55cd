//! The content store as one namespace sees it (containerd `metadata/content.go`): the bytes
//! live once in the [`ContentStore`], and a namespace holds a blob only through its metadata
//! record. Ingest refs are prefixed with the namespace in the backend, so two namespaces may use
//! the same ref. Writes under a lease add the ingest, then the blob, to that lease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use berth_filters::{Adaptor, Filter};
use berth_registry::identifiers::validate_namespace;
use berth_registry::{Classify, ErrorKind};

use crate::content::{ContentError, ContentStore, Digest, IngestStatus, Writer};
use crate::metadata::{BlobRecord, LeaseResource, MetadataStore};
use crate::MetadataError;

/// Why a namespaced content operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NamespacedContentError {
    /// The blob store failed or refused.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// The metadata store failed or refused.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The ref is not an ingest of this namespace.
    #[error("ref {0:?}: not found")]
    IngestNotFound(String),
    /// The ref is empty.
    #[error("ref must not be empty")]
    EmptyRef,
}

impl Classify for NamespacedContentError {
    fn kind(&self) -> ErrorKind {
        match self {
            NamespacedContentError::Content(e) => e.kind(),
            NamespacedContentError::Metadata(e) => e.kind(),
            NamespacedContentError::IngestNotFound(_) => ErrorKind::NotFound,
            NamespacedContentError::EmptyRef => ErrorKind::InvalidArgument,
        }
    }
}

type Result<T> = std::result::Result<T, NamespacedContentError>;

/// Content seen through namespaces.
#[derive(Debug, Clone)]
pub struct NamespacedContent {
    meta: Arc<MetadataStore>,
    store: Arc<ContentStore>,
    /// `shared`: a blob another namespace holds can be claimed without sending its bytes.
    shared: bool,
}

fn backend_ref(ns: &str, reference: &str) -> String {
    format!("{ns}/{reference}")
}

fn ingest_resource(reference: &str) -> LeaseResource {
    LeaseResource {
        kind: "ingests".into(),
        id: reference.to_owned(),
    }
}

fn content_resource(digest: &str) -> LeaseResource {
    LeaseResource {
        kind: "content".into(),
        id: digest.to_owned(),
    }
}

/// An ingest status as the namespace sees it (its own ref, without the prefix).
fn strip(ns: &str, mut status: IngestStatus) -> Option<IngestStatus> {
    let own = status
        .reference
        .strip_prefix(ns)?
        .strip_prefix('/')?
        .to_owned();
    status.reference = own;
    Some(status)
}

struct StatusFields<'a>(&'a IngestStatus);

impl Adaptor for StatusFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "ref" => Some(self.0.reference.clone()),
            _ => None,
        }
    }
}

impl NamespacedContent {
    /// Joins the metadata and blob stores.
    pub fn new(meta: Arc<MetadataStore>, store: Arc<ContentStore>, shared: bool) -> Self {
        NamespacedContent {
            meta,
            store,
            shared,
        }
    }

    /// The underlying blob store.
    pub fn blobs(&self) -> &ContentStore {
        &self.store
    }

    /// A blob's record in `ns`.
    pub fn info(&self, ns: &str, digest: &str) -> Result<BlobRecord> {
        Ok(self.meta.get_blob(ns, digest)?)
    }

    /// The namespace's blobs matching `filter`.
    pub fn list(&self, ns: &str, filter: &Filter) -> Result<Vec<BlobRecord>> {
        Ok(self.meta.list_blobs(ns, filter)?)
    }

    /// Updates a blob's labels.
    pub fn update(
        &self,
        ns: &str,
        digest: &str,
        labels: BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<BlobRecord> {
        Ok(self.meta.update_blob(ns, digest, labels, paths)?)
    }

    /// Removes the namespace's hold on a blob; the bytes go at the next collection.
    pub fn delete(&self, ns: &str, digest: &str) -> Result<()> {
        Ok(self.meta.delete_blob(ns, digest)?)
    }

    /// Opens a blob of `ns` for reading at offsets, with its size.
    pub fn open(&self, ns: &str, digest: &str) -> Result<(std::fs::File, u64)> {
        let rec = self.meta.get_blob(ns, digest)?;
        let d: Digest = digest.parse()?;
        Ok((self.store.open_blob(&d)?, rec.size))
    }

    /// The status of one of the namespace's ingests.
    pub fn status(&self, ns: &str, reference: &str) -> Result<IngestStatus> {
        validate_namespace(ns).map_err(MetadataError::from)?;
        match self.store.status(&backend_ref(ns, reference)) {
            Ok(s) => {
                strip(ns, s).ok_or_else(|| NamespacedContentError::IngestNotFound(reference.into()))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(NamespacedContentError::IngestNotFound(reference.into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The namespace's ingests matching `filter` (field `ref`).
    pub fn statuses(&self, ns: &str, filter: &Filter) -> Result<Vec<IngestStatus>> {
        validate_namespace(ns).map_err(MetadataError::from)?;
        Ok(self
            .store
            .list_statuses()?
            .into_iter()
            .filter_map(|s| strip(ns, s))
            .filter(|s| filter.matches(&StatusFields(s)))
            .collect())
    }

    /// Abandons one of the namespace's ingests.
    pub fn abort(&self, ns: &str, reference: &str) -> Result<()> {
        validate_namespace(ns).map_err(MetadataError::from)?;
        match self.store.abort(&backend_ref(ns, reference)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(NamespacedContentError::IngestNotFound(reference.into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Opens (or resumes) an ingest. AlreadyExists when `expected` is already in `ns`; with the
    /// shared policy, a blob held by another namespace is claimed without its bytes.
    pub fn writer(
        &self,
        ns: &str,
        reference: &str,
        total: u64,
        expected: Option<&str>,
        lease: Option<&str>,
    ) -> Result<NamespacedWriter> {
        validate_namespace(ns).map_err(MetadataError::from)?;
        if reference.is_empty() {
            return Err(NamespacedContentError::EmptyRef);
        }
        if let Some(lease) = lease {
            // Also checks that the lease exists before anything is written.
            self.meta
                .add_lease_resource(ns, lease, &ingest_resource(reference))?;
        }
        let mut shared = None;
        if let Some(expected) = expected {
            let d: Digest = expected.parse()?;
            // "Recorded, so hold it and answer AlreadyExists" must not straddle a collection's
            // mark and sweep, or the client skips a blob the sweep then removes.
            let _claim = self.meta.content_commit_guard();
            if self.meta.get_blob(ns, expected).is_ok() {
                if let Some(lease) = lease {
                    self.meta
                        .add_lease_resource(ns, lease, &content_resource(expected))?;
                }
                return Err(MetadataError::ContentExists(expected.to_owned()).into());
            }
            if self.shared {
                if let Ok(info) = self.store.info(&d) {
                    if total == 0 || total == info.size {
                        // The client will send no bytes: its lease holds these from now on,
                        // or a sweep before its commit could take them (bytes nobody records
                        // are garbage, e.g. left by an import killed between its commit and
                        // its record).
                        if let Some(lease) = lease {
                            self.meta
                                .add_lease_resource(ns, lease, &content_resource(expected))?;
                        }
                        shared = Some((d, info.size));
                    }
                }
            }
        }
        let inner = match shared {
            Some((digest, size)) => Inner::Shared {
                digest,
                size,
                started_at: SystemTime::now(),
            },
            None => {
                let writer = self
                    .store
                    .writer(&backend_ref(ns, reference), total, None)?;
                writer.set_leased(lease.is_some())?;
                Inner::Data(Box::new(writer))
            }
        };
        Ok(NamespacedWriter {
            content: self.clone(),
            ns: ns.to_owned(),
            reference: reference.to_owned(),
            lease: lease.map(str::to_owned),
            total,
            inner,
        })
    }
}

#[derive(Debug)]
enum Inner {
    /// Bytes arrive and are written to the backend ingest.
    Data(Box<Writer>),
    /// The blob is in the store already (another namespace); nothing needs to be sent.
    Shared {
        digest: Digest,
        size: u64,
        started_at: SystemTime,
    },
}

/// An open ingest of one namespace.
#[derive(Debug)]
pub struct NamespacedWriter {
    content: NamespacedContent,
    ns: String,
    reference: String,
    lease: Option<String>,
    total: u64,
    inner: Inner,
}

impl NamespacedWriter {
    /// Progress, as the namespace sees it.
    pub fn status(&self) -> IngestStatus {
        match &self.inner {
            Inner::Data(w) => {
                let mut s = w.status();
                s.reference = self.reference.clone();
                s
            }
            Inner::Shared {
                digest,
                size,
                started_at,
            } => IngestStatus {
                reference: self.reference.clone(),
                offset: *size,
                total: *size,
                expected: Some(digest.clone()),
                started_at: *started_at,
                updated_at: *started_at,
            },
        }
    }

    /// The size the writer expects (0 = unknown).
    pub fn total(&self) -> u64 {
        match &self.inner {
            Inner::Data(_) => self.total,
            Inner::Shared { size, .. } => *size,
        }
    }

    /// Digest of what was written so far.
    pub fn digest(&self) -> Digest {
        match &self.inner {
            Inner::Data(w) => w.digest(),
            Inner::Shared { digest, .. } => digest.clone(),
        }
    }

    /// Writes at `offset` (see [`Writer::write_at`]); returns the new offset.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<u64> {
        match &mut self.inner {
            Inner::Data(w) => Ok(w.write_at(offset, data)?),
            Inner::Shared { size, .. } if data.is_empty() => Ok(*size),
            Inner::Shared { digest, .. } => Err(ContentError::AlreadyExists {
                digest: digest.clone(),
            }
            .into()),
        }
    }

    /// Verifies and commits, then records the blob in the namespace with `labels`. Returns
    /// AlreadyExists when the namespace held it already (clients count that as success).
    pub fn commit(
        self,
        size: u64,
        expected: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Digest> {
        let expected: Option<Digest> = expected.map(str::parse).transpose()?;
        // Bytes and record land under one guard, so the collector never sees one without
        // the other.
        let meta = self.content.meta.clone();
        let _commit = meta.content_commit_guard();
        let (digest, size) = match self.inner {
            Inner::Data(w) => {
                let written = w.offset();
                let w = *w;
                let digest = match w.commit(size, expected.as_ref()) {
                    Ok(d) => d,
                    // The bytes are there already (another writer won); the record below is
                    // what this namespace needs.
                    Err(ContentError::AlreadyExists { digest }) => digest,
                    Err(e) => return Err(e.into()),
                };
                (digest, written)
            }
            Inner::Shared {
                digest, size: have, ..
            } => {
                if size != 0 && size != have {
                    return Err(ContentError::SizeMismatch {
                        reference: self.reference.clone(),
                        size: have,
                        expected: size,
                    }
                    .into());
                }
                if expected.as_ref().is_some_and(|e| *e != digest) {
                    return Err(ContentError::DigestMismatch {
                        reference: self.reference.clone(),
                        expected: expected.clone().unwrap_or_else(|| digest.clone()),
                        actual: digest.clone(),
                    }
                    .into());
                }
                // Without a lease nothing held the bytes since the writer opened: never record
                // a blob whose bytes a sweep took meanwhile.
                self.content.store.info(&digest)?;
                (digest, have)
            }
        };
        if let Some(lease) = &self.lease {
            meta.add_lease_resource(&self.ns, lease, &content_resource(&digest.to_string()))?;
            meta.delete_lease_resource(&self.ns, lease, &ingest_resource(&self.reference))?;
        }
        meta.add_blob(&self.ns, &digest.to_string(), size, labels)?;
        Ok(digest)
    }
}
