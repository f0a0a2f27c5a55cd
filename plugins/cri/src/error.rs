//! The CRI plugin's errors, classified once so that `berth_services::status::to_status` gives
//! every RPC the code the kubelet and critest expect.

use berth_errdefs::{Classify, ErrorKind};

/// Anything a CRI call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The request is malformed; `field` names the request field.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The request field (`config.metadata.name`, `image.image`, ...).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A sandbox, container or image that does not exist.
    #[error("{what} {id:?} not found")]
    NotFound {
        /// `sandbox`, `container`, `image`.
        what: &'static str,
        /// What the caller named.
        id: String,
    },
    /// A name already reserved by another object.
    #[error("{what} name {name:?} is reserved for {id:?}")]
    AlreadyExists {
        /// `sandbox`, `container`.
        what: &'static str,
        /// The name.
        name: String,
        /// The object holding it.
        id: String,
    },
    /// The object is not in a state the call needs.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A deadline passed (ExecSync's timeout).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Not built (yet).
    #[error("{0} is not implemented")]
    NotImplemented(&'static str),
    /// A metadata store call failed.
    #[error("{op}")]
    Metadata {
        /// What was being done.
        op: String,
        /// Why it failed.
        #[source]
        source: berth_core::MetadataError,
    },
    /// A runtime (task, shim) call failed.
    #[error("{op}")]
    Runtime {
        /// What was being done.
        op: String,
        /// Why it failed.
        #[source]
        source: berth_runtime::RuntimeError,
    },
    /// A pull failed.
    #[error("{op}")]
    Transfer {
        /// What was being done.
        op: String,
        /// Why it failed.
        #[source]
        source: berth_transfer::TransferError,
    },
    /// A snapshot call failed.
    #[error("{op}")]
    Snapshot {
        /// What was being done.
        op: String,
        /// Why it failed.
        #[source]
        source: berth_core::namespaced_snapshots::NamespacedSnapshotError,
    },
    /// A file or system call failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A CNI plugin failed.
    #[error("{0}")]
    Network(String),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

impl From<berth_cni::CniError> for CriError {
    fn from(e: berth_cni::CniError) -> CriError {
        match e {
            berth_cni::CniError::Network(m) => CriError::Network(m),
            berth_cni::CniError::Io { op, path, source } => CriError::Io { op, path, source },
            berth_cni::CniError::Internal(m) => CriError::Internal(m),
        }
    }
}

impl CriError {
    /// An invalid request field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> CriError {
        CriError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An I/O failure on `path`.
    pub fn io(
        op: &'static str,
        path: impl AsRef<std::path::Path>,
        source: std::io::Error,
    ) -> CriError {
        CriError::Io {
            op,
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// A metadata failure while doing `op`.
    pub fn metadata(op: impl Into<String>, source: berth_core::MetadataError) -> CriError {
        CriError::Metadata {
            op: op.into(),
            source,
        }
    }

    /// A runtime failure while doing `op`.
    pub fn runtime(op: impl Into<String>, source: berth_runtime::RuntimeError) -> CriError {
        CriError::Runtime {
            op: op.into(),
            source,
        }
    }
}

impl Classify for CriError {
    fn kind(&self) -> ErrorKind {
        match self {
            CriError::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            CriError::NotFound { .. } => ErrorKind::NotFound,
            CriError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            CriError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            CriError::DeadlineExceeded(_) => ErrorKind::DeadlineExceeded,
            CriError::NotImplemented(_) => ErrorKind::NotImplemented,
            CriError::Metadata { source, .. } => source.kind(),
            CriError::Runtime { source, .. } => source.kind(),
            CriError::Transfer { source, .. } => source.kind(),
            CriError::Snapshot { source, .. } => source.kind(),
            CriError::Io { source, .. } => match source.raw_os_error() {
                Some(code) if code == nix::libc::ENOSPC => ErrorKind::Unavailable,
                _ if source.kind() == std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                _ => ErrorKind::Internal,
            },
            CriError::Network(_) | CriError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// The result of a CRI operation.
pub type Result<T, E = CriError> = std::result::Result<T, E>;
