//! The content store as the layer differ sees it (containerd `content.Provider` and
//! `content.Ingester`): blobs read by digest and ingests written at offsets, in a namespace.
//! The daemon's namespaced store implements it; this crate knows no store.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

use super::ContentFailure;

/// A layer blob or an unpacked layer: what a layer is known by.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LayerDescriptor {
    /// The blob's media type: it says how the layer is compressed.
    pub media_type: String,
    /// `sha256:<hex>` of the blob's bytes (of the uncompressed tar for an applied layer: the
    /// diffID).
    pub digest: String,
    /// The blob's size in bytes; 0 when the caller does not know it.
    pub size: u64,
}

/// A blob being read: its bytes from the start.
pub type BlobReader = Box<dyn Read + Send>;

/// The content store in which layers are read and written, each call in a namespace.
pub trait LayerContent: Send + Sync + fmt::Debug {
    /// Opens the blob `digest` of namespace `ns` for reading from its start, with its size.
    fn open(&self, ns: &str, digest: &str) -> Result<(BlobReader, u64), ContentFailure>;

    /// Opens (or resumes) the ingest `reference` of `ns`, held by `lease` when given.
    fn writer(
        &self,
        ns: &str,
        reference: &str,
        lease: Option<&str>,
    ) -> Result<Box<dyn LayerWriter>, ContentFailure>;

    /// Drops the ingest `reference` of `ns` and what it holds.
    fn abort(&self, ns: &str, reference: &str) -> Result<(), ContentFailure>;

    /// Sets `labels` on the blob `digest` of `ns`, leaving its other labels alone.
    fn set_labels(
        &self,
        ns: &str,
        digest: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), ContentFailure>;
}

/// An open ingest.
pub trait LayerWriter: Send {
    /// Writes `data` at `offset`; returns the offset after it.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<u64, ContentFailure>;

    /// `sha256:<hex>` of what has been written so far.
    fn digest(&self) -> String;

    /// Commits the `size` bytes written as a blob of the namespace, labelled with `labels`;
    /// AlreadyExists when the namespace holds that blob already.
    fn commit(
        self: Box<Self>,
        size: u64,
        labels: BTreeMap<String, String>,
    ) -> Result<(), ContentFailure>;
}
