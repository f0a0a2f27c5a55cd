//! Errors of the garbage collector.

use berth_registry::{Classify, ErrorKind};

use crate::content::ContentError;
use crate::error::MetadataError;

/// Why a collection failed. Nothing is half-swept by a failure: each removal is its own
/// transaction, and the next collection starts over from the roots.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// Reading or changing the metadata store failed.
    #[error("gc: {op}: {source}")]
    Metadata {
        /// What the collector was doing.
        op: &'static str,
        /// The store's error.
        source: MetadataError,
    },
    /// Walking or removing from the content store failed.
    #[error("gc: {op}: {source}")]
    Content {
        /// What the collector was doing.
        op: &'static str,
        /// The store's error.
        source: ContentError,
    },
    /// A snapshotter's part of the collection failed.
    #[error("gc: snapshotter {snapshotter}: {source}")]
    Snapshots {
        /// The snapshotter.
        snapshotter: String,
        /// Its error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The blocking collection task panicked or was cancelled.
    #[error("gc: collection task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Classify for GcError {
    fn kind(&self) -> ErrorKind {
        match self {
            GcError::Metadata { source, .. } => source.kind(),
            GcError::Content { source, .. } => source.kind(),
            GcError::Snapshots { .. } | GcError::Task(_) => ErrorKind::Internal,
        }
    }
}

/// Tags a metadata error with what the collector was doing.
pub(crate) fn meta(op: &'static str) -> impl FnOnce(MetadataError) -> GcError {
    move |source| GcError::Metadata { op, source }
}

/// Tags a content store error with what the collector was doing.
pub(crate) fn content(op: &'static str) -> impl FnOnce(ContentError) -> GcError {
    move |source| GcError::Content { op, source }
}
