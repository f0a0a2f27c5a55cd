//! The one error enum of the snapshotters, with containerd's messages and error classes
//! (`snapshots/storage/bolt.go`, `snapshots/overlay/overlay.go`).

use std::path::PathBuf;

use berth_registry::{Classify, ErrorKind, IdentifierError};

/// Why a snapshotter operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No snapshot has this key or name.
    #[error("snapshot {key} does not exist: not found")]
    NotFound {
        /// The key or name asked for.
        key: String,
    },
    /// The key or name is taken.
    #[error("snapshot {key}: already exists")]
    AlreadyExists {
        /// The key or name.
        key: String,
    },
    /// The parent named by a prepare or view does not exist.
    #[error("parent snapshot {parent} does not exist: not found")]
    ParentNotFound {
        /// The parent's name.
        parent: String,
    },
    /// The parent named by a prepare or view is not committed.
    #[error("parent {parent:?} is not committed snapshot: invalid argument")]
    ParentNotCommitted {
        /// The parent's name.
        parent: String,
    },
    /// The snapshot is the parent of another snapshot.
    #[error("cannot remove snapshot with child: failed precondition")]
    HasChildren {
        /// The snapshot asked to be removed.
        key: String,
    },
    /// Commit was asked of a snapshot that is not active.
    #[error("snapshot {key:?} is not active: failed precondition")]
    NotActive {
        /// The key.
        key: String,
    },
    /// Mounts were asked of a committed snapshot.
    #[error("requested snapshot {key} not active or view: failed precondition")]
    NotActiveOrView {
        /// The key.
        key: String,
    },
    /// Update named a field other than `labels` or `labels.<key>`.
    #[error("cannot update {field:?} field on snapshot {key:?}: invalid argument")]
    BadFieldPath {
        /// The snapshot.
        key: String,
        /// The field path.
        field: String,
    },
    /// Only active snapshots and views can be created.
    #[error("snapshot type {kind} invalid; only snapshots of type Active or View can be created: invalid argument")]
    InvalidKind {
        /// The kind asked for.
        kind: crate::snapshotter::Kind,
    },
    /// A key, name or parent was empty.
    #[error("{what} must not be empty: invalid argument")]
    EmptyName {
        /// Which argument (`key`, `name`).
        what: &'static str,
    },
    /// A label was refused.
    #[error(transparent)]
    Label(#[from] IdentifierError),
    /// The metadata database failed.
    #[error("snapshot metadata {op}: {source}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// The database error.
        #[source]
        source: sled::Error,
    },
    /// A write refused before the database was touched: the filesystem is full.
    #[error(transparent)]
    NoSpace(#[from] crate::space::NoSpace),
    /// A stored record did not decode.
    #[error("snapshot metadata record {key:?} is corrupt: {source}: data loss")]
    Corrupt {
        /// The record's key.
        key: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`create`, `rename`, `remove`, ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A system call on a path failed (mount, unmount, ioctl).
    #[error("{op} {path}: {source}")]
    Sys {
        /// What was being done (`mount overlay`, `unmount`, `btrfs subvolume create`, ...).
        op: String,
        /// The path it was done to.
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// The mount options do not fit the kernel's one-page limit even after compaction.
    #[error("mount options is too long ({len} bytes) for {target}: invalid argument")]
    OptionsTooLong {
        /// The mount point.
        target: PathBuf,
        /// The length of the data string.
        len: usize,
    },
    /// A mount's type or options cannot be handled here.
    #[error("unsupported mount {what}: not implemented")]
    UnsupportedMount {
        /// What was refused.
        what: String,
    },
    /// A remote (proxy) snapshotter answered with an error; `kind` is its class.
    #[error("remote snapshotter {op}: {message}")]
    Remote {
        /// The call.
        op: &'static str,
        /// The error class the remote's status code maps to.
        kind: ErrorKind,
        /// The remote's message.
        message: String,
    },
    /// A device-mapper (or loop device) operation failed; classed by its errno.
    #[error(transparent)]
    DeviceMapper(#[from] crate::devmapper::dm::DmError),
    /// The host cannot run this snapshotter at this root.
    #[error("{reason}: failed precondition")]
    Unsupported {
        /// Why, naming the path.
        reason: String,
    },
}

impl SnapshotError {
    /// An I/O error on a path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SnapshotError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A failed system call on a path.
    pub fn sys(op: impl Into<String>, path: impl Into<PathBuf>, source: nix::Error) -> Self {
        SnapshotError::Sys {
            op: op.into(),
            path: path.into(),
            source,
        }
    }

    /// A database error.
    pub fn db(op: &'static str, source: sled::Error) -> Self {
        SnapshotError::Db { op, source }
    }

    /// The errdefs class, as a free function for callers that do not import [`Classify`].
    pub fn kind(&self) -> ErrorKind {
        Classify::kind(self)
    }
}

impl Classify for SnapshotError {
    fn kind(&self) -> ErrorKind {
        match self {
            SnapshotError::NotFound { .. } | SnapshotError::ParentNotFound { .. } => {
                ErrorKind::NotFound
            }
            SnapshotError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            SnapshotError::ParentNotCommitted { .. }
            | SnapshotError::BadFieldPath { .. }
            | SnapshotError::EmptyName { .. }
            | SnapshotError::InvalidKind { .. }
            | SnapshotError::OptionsTooLong { .. } => ErrorKind::InvalidArgument,
            SnapshotError::Label(e) => e.kind(),
            SnapshotError::HasChildren { .. }
            | SnapshotError::NotActive { .. }
            | SnapshotError::NotActiveOrView { .. }
            | SnapshotError::Unsupported { .. } => ErrorKind::FailedPrecondition,
            SnapshotError::Corrupt { .. } => ErrorKind::DataLoss,
            SnapshotError::Remote { kind, .. } => *kind,
            SnapshotError::DeviceMapper(e) => e.kind(),
            SnapshotError::UnsupportedMount { .. } => ErrorKind::NotImplemented,
            SnapshotError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            SnapshotError::NoSpace(_) => ErrorKind::ResourceExhausted,
            SnapshotError::Db { source, .. } if crate::space::sled_no_space(source) => {
                ErrorKind::ResourceExhausted
            }
            SnapshotError::Io { source, .. } if crate::space::is_no_space(source) => {
                ErrorKind::ResourceExhausted
            }
            SnapshotError::Sys {
                source: nix::Error::ENOSPC | nix::Error::EDQUOT,
                ..
            } => ErrorKind::ResourceExhausted,
            SnapshotError::Db { .. } | SnapshotError::Io { .. } | SnapshotError::Sys { .. } => {
                ErrorKind::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_kinds_follow_containerd() {
        let e = SnapshotError::NotFound { key: "k".into() };
        assert_eq!(e.to_string(), "snapshot k does not exist: not found");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let e = SnapshotError::AlreadyExists { key: "k".into() };
        assert_eq!(e.to_string(), "snapshot k: already exists");
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        let e = SnapshotError::HasChildren { key: "k".into() };
        assert_eq!(
            e.to_string(),
            "cannot remove snapshot with child: failed precondition"
        );
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
        let e = SnapshotError::ParentNotFound { parent: "p".into() };
        assert_eq!(e.to_string(), "parent snapshot p does not exist: not found");
    }
}
