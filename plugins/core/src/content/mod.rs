//! The local content store, `io.containerd.content.v1.content` (containerd `content/local`):
//! immutable blobs addressed by digest and resumable, ref-keyed ingests that become blobs once
//! their size and digest check out. A plain blocking library; the gRPC service calls it through
//! `spawn_blocking` and keeps labels and namespaces in the metadata store.
//!
//! # Layout
//!
//! ```text
//! <root>/blobs/<alg>/<hex>     committed blobs, mode 0444, never rewritten
//! <root>/ingest/<sha256(ref)>/ unfinished writes (see the ingest module for the files)
//! ```
//!
//! A blob appears under `blobs/` only by an atomic rename of fully written, fsynced and verified
//! data, so a crash never leaves a partial blob; `ContentStore::open` sweeps what a crash left
//! in `ingest/`.

mod digest;
mod error;
mod ingest;
mod locks;
pub mod plugin;
mod store;
#[cfg(test)]
mod testsuite;
mod writer;

pub use digest::{Algorithm, Digest, Digester};
pub use error::ContentError;
pub use ingest::IngestStatus;
pub use store::{BlobInfo, ContentStore};
pub use writer::Writer;
