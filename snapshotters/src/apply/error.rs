//! Why applying or computing a layer failed: [`ApplyError`] for the tar work itself,
//! [`DiffError`] for a layer applied from or written into a content store.

use std::error::Error;
use std::fmt;
use std::io;
use std::path::PathBuf;

use berth_registry::{Classify, ErrorKind};

use crate::error::SnapshotError;

/// Why a layer could not be applied, computed or decompressed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An entry would write, link or remove outside the target root; nothing was done for it.
    #[error("unsafe layer entry {entry:?}: {reason}")]
    Unsafe {
        /// The entry's name as the archive spells it.
        entry: String,
        /// What makes it unsafe.
        reason: String,
    },
    /// The layer stream could not be read or is not a well-formed tar archive.
    #[error("read layer archive: {0}")]
    Read(#[source] io::Error),
    /// The archive holds an entry type Berth cannot create.
    #[error("layer entry {entry:?}: unsupported tar entry type {kind}")]
    UnsupportedEntry {
        /// The entry's name.
        entry: String,
        /// The tar type flag byte.
        kind: u8,
    },
    /// The media type names no compression Berth knows.
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    /// A filesystem operation on the target failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation (`mkdir`, `lchown`, ...).
        op: &'static str,
        /// The path it was done on.
        path: PathBuf,
        /// The host error.
        #[source]
        source: io::Error,
    },
    /// Writing the computed layer failed.
    #[error("write layer archive: {0}")]
    Write(#[source] io::Error),
}

impl ApplyError {
    /// Wraps a host error with the operation and the path.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ApplyError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// An unsafe entry, naming it.
    pub(crate) fn unsafe_entry(entry: &str, reason: impl Into<String>) -> Self {
        ApplyError::Unsafe {
            entry: entry.to_owned(),
            reason: reason.into(),
        }
    }
}

impl Classify for ApplyError {
    fn kind(&self) -> ErrorKind {
        match self {
            ApplyError::Unsafe { .. } | ApplyError::UnsupportedEntry { .. } => {
                ErrorKind::InvalidArgument
            }
            ApplyError::Read(e) if e.kind() == io::ErrorKind::InvalidData => {
                ErrorKind::InvalidArgument
            }
            ApplyError::UnsupportedMediaType(_) => ErrorKind::NotImplemented,
            ApplyError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            // The target's filesystem filled up (a write error surfaces through the tar reader
            // as a read error).
            ApplyError::Read(e) | ApplyError::Io { source: e, .. } | ApplyError::Write(e)
                if crate::space::is_no_space(e) =>
            {
                ErrorKind::ResourceExhausted
            }
            ApplyError::Read(_) | ApplyError::Io { .. } | ApplyError::Write(_) => {
                ErrorKind::Internal
            }
        }
    }
}

/// Why a layer could not be applied from a content store onto mounts, or the layer between
/// two mount sets written into one ([`LayerDiffer`](super::LayerDiffer)).
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// The descriptor's size is not the stored blob's.
    #[error("blob {digest}: descriptor size {expected} does not match stored size {actual}")]
    SizeMismatch {
        /// The blob.
        digest: String,
        /// The descriptor's size.
        expected: u64,
        /// The stored size.
        actual: u64,
    },
    /// The stored bytes are not what the digest promises.
    #[error("blob {digest}: {detail}")]
    Corrupt {
        /// The blob.
        digest: String,
        /// What was wrong.
        detail: String,
    },
    /// A layer was asked for in a media type that cannot be written.
    #[error("unsupported diff media type {0:?}")]
    UnsupportedMediaType(String),
    /// Unpacking or computing the layer failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Mounting or unmounting failed.
    #[error(transparent)]
    Mount(#[from] SnapshotError),
    /// The content store refused.
    #[error(transparent)]
    Content(#[from] ContentFailure),
    /// Compressing the layer into the content store failed.
    #[error("write layer blob: {0}")]
    Write(#[source] io::Error),
    /// The pipe between the thread that reads a layer and the one that applies it could not
    /// be made.
    #[error("create a pipe for the layer: {0}")]
    Pipe(#[source] io::Error),
    /// The thread that reads a layer could not be started.
    #[error("start the layer reader thread: {0}")]
    Thread(#[source] io::Error),
}

impl Classify for DiffError {
    fn kind(&self) -> ErrorKind {
        match self {
            DiffError::SizeMismatch { .. } => ErrorKind::FailedPrecondition,
            DiffError::Corrupt { .. } => ErrorKind::DataLoss,
            DiffError::UnsupportedMediaType(_) => ErrorKind::NotImplemented,
            DiffError::Apply(e) => e.kind(),
            DiffError::Mount(e) => e.kind(),
            DiffError::Content(e) => e.kind(),
            DiffError::Write(_) | DiffError::Pipe(_) | DiffError::Thread(_) => ErrorKind::Internal,
        }
    }
}

/// A content store's error as a [`LayerContent`](super::LayerContent) reports it: the
/// store's own error, kept whole with its class. It reads as that error (display and source
/// chain), as `#[error(transparent)]` would.
#[derive(Debug)]
pub struct ContentFailure {
    kind: ErrorKind,
    error: Box<dyn Error + Send + Sync>,
}

impl ContentFailure {
    /// Wraps a content store's error.
    pub fn new<E>(error: E) -> Self
    where
        E: Error + Classify + Send + Sync + 'static,
    {
        ContentFailure {
            kind: error.kind(),
            error: Box::new(error),
        }
    }
}

impl fmt::Display for ContentFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl Error for ContentFailure {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.error.source()
    }
}

impl Classify for ContentFailure {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}
