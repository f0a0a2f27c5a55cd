//! Errors of the core plugins.

use berth_registry::{Classify, ErrorKind, IdentifierError};

/// Why a metadata operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// A client-supplied name or label was refused.
    #[error(transparent)]
    Identifier(#[from] IdentifierError),
    /// The namespace exists already.
    #[error("namespace {0:?}: already exists")]
    NamespaceExists(String),
    /// The namespace does not exist.
    #[error("namespace {0:?}: not found")]
    NamespaceNotFound(String),
    /// The namespace still holds objects.
    #[error("namespace {name:?} must be empty, but it still has {what}")]
    NamespaceNotEmpty {
        /// The namespace.
        name: String,
        /// What is left, e.g. `images, blobs`.
        what: String,
    },
    /// The image does not exist.
    #[error("image {0:?}: not found")]
    ImageNotFound(String),
    /// The image name is taken.
    #[error("image {0:?}: already exists")]
    ImageExists(String),
    /// The image record is not valid.
    #[error("image {name:?}: {reason}")]
    InvalidImage {
        /// The image name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The blob is not in this namespace.
    #[error("content {0}: not found")]
    ContentNotFound(String),
    /// The blob is in this namespace already.
    #[error("content {0}: already exists")]
    ContentExists(String),
    /// The snapshot does not exist in this namespace.
    #[error("snapshot {0} does not exist")]
    SnapshotNotFound(String),
    /// The snapshot key is taken.
    #[error("snapshot {0:?}")]
    SnapshotExists(String),
    /// The snapshot is the parent of another.
    #[error("cannot remove snapshot {0:?} with child")]
    SnapshotHasChildren(String),
    /// The container does not exist.
    #[error("container {0:?}: not found")]
    ContainerNotFound(String),
    /// The container id is taken.
    #[error("container {0:?}: already exists")]
    ContainerExists(String),
    /// The container record is not valid.
    #[error("container {id:?}: {reason}")]
    InvalidContainer {
        /// The container id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A digest string is malformed.
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    /// An update named a field that cannot be updated.
    #[error("cannot update {0:?} field")]
    BadFieldPath(String),
    /// The lease named by a lease call does not exist in the namespace.
    #[error("lease {0:?}: not found")]
    LeaseNotFound(String),
    /// A lease with this id exists already in the namespace.
    #[error("lease {0:?}: already exists")]
    LeaseExists(String),
    /// The lease a request works under (the `containerd-lease` header) does not exist; the
    /// text is containerd's (`metadata/leases.go` `addContentLease`).
    #[error("lease does not exist")]
    LeaseMissing(String),
    /// A lease resource type is malformed (`content/x`, `snapshots` without a snapshotter).
    #[error("invalid resource type {0}")]
    InvalidResourceType(String),
    /// A `content` lease resource does not name a valid digest.
    #[error("invalid content resource id {0}")]
    InvalidContentResource(String),
    /// A lease resource type other than `content`, `ingests` and `snapshots/<snapshotter>`.
    #[error("resource type {0} not supported yet")]
    UnsupportedResourceType(String),
    /// A write refused before the database was touched: the filesystem is full.
    #[error("metadata database {0}")]
    NoSpace(#[from] berth_snapshotters::space::NoSpace),
    /// The database failed.
    #[error("metadata database {op}: {source}")]
    Storage {
        /// What was being done.
        op: &'static str,
        /// sled's error.
        source: sled::Error,
    },
    /// A stored record did not decode.
    #[error("metadata record {key:?} is corrupt: {source}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// The decoder's error.
        source: serde_json::Error,
    },
}

impl Classify for MetadataError {
    fn kind(&self) -> ErrorKind {
        match self {
            MetadataError::Identifier(e) => e.kind(),
            MetadataError::NamespaceExists(_)
            | MetadataError::ImageExists(_)
            | MetadataError::ContentExists(_)
            | MetadataError::SnapshotExists(_)
            | MetadataError::ContainerExists(_) => ErrorKind::AlreadyExists,
            MetadataError::ContainerNotFound(_) => ErrorKind::NotFound,
            MetadataError::InvalidContainer { .. } => ErrorKind::InvalidArgument,
            MetadataError::SnapshotNotFound(_) => ErrorKind::NotFound,
            MetadataError::SnapshotHasChildren(_) => ErrorKind::FailedPrecondition,
            MetadataError::NamespaceNotFound(_)
            | MetadataError::ImageNotFound(_)
            | MetadataError::ContentNotFound(_) => ErrorKind::NotFound,
            MetadataError::InvalidImage { .. } | MetadataError::InvalidDigest(_) => {
                ErrorKind::InvalidArgument
            }
            MetadataError::NamespaceNotEmpty { .. } => ErrorKind::FailedPrecondition,
            MetadataError::BadFieldPath(_) => ErrorKind::InvalidArgument,
            MetadataError::LeaseNotFound(_) | MetadataError::LeaseMissing(_) => ErrorKind::NotFound,
            MetadataError::LeaseExists(_) => ErrorKind::AlreadyExists,
            MetadataError::InvalidResourceType(_) | MetadataError::InvalidContentResource(_) => {
                ErrorKind::InvalidArgument
            }
            MetadataError::UnsupportedResourceType(_) => ErrorKind::NotImplemented,
            MetadataError::NoSpace(_) => ErrorKind::ResourceExhausted,
            MetadataError::Storage { source, .. }
                if berth_snapshotters::space::sled_no_space(source) =>
            {
                ErrorKind::ResourceExhausted
            }
            MetadataError::Storage { .. } => ErrorKind::Unavailable,
            MetadataError::Corrupt { .. } => ErrorKind::DataLoss,
        }
    }
}

/// Tags a sled error with the operation.
pub(crate) fn storage(op: &'static str) -> impl FnOnce(sled::Error) -> MetadataError {
    move |source| MetadataError::Storage { op, source }
}
