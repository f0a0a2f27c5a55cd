//! Why applying or computing a layer failed.

use std::io;
use std::path::PathBuf;

use berth_registry::{Classify, ErrorKind};

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
            ApplyError::Read(_) | ApplyError::Io { .. } | ApplyError::Write(_) => {
                ErrorKind::Internal
            }
        }
    }
}
