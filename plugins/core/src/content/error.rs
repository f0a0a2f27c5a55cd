//! Errors of the content store. Messages follow containerd's local store and content service
//! (`content/local/store.go`, `writer.go`, `services/content/contentserver`) and end with the
//! errdefs class text, as containerd's wrapped errors do.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use berth_registry::{Classify, ErrorKind};

use super::digest::Digest;

/// Why a content store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// A digest string did not parse.
    #[error("invalid digest {input:?}: {reason}: invalid argument")]
    InvalidDigest {
        /// The refused text.
        input: String,
        /// What is wrong with it (go-digest's wording).
        reason: &'static str,
    },
    /// A writer was asked for with an empty ref.
    #[error("ref must not be empty: invalid argument")]
    EmptyRef,
    /// No blob has this digest.
    #[error("content {digest}: not found")]
    NotFound {
        /// The digest looked up.
        digest: Digest,
    },
    /// The blob exists already (clients treat this as success of a write).
    #[error("content {digest}: already exists")]
    AlreadyExists {
        /// The existing blob's digest.
        digest: Digest,
    },
    /// No ingest exists for this ref.
    #[error("ingest ref {reference:?}: not found")]
    IngestNotFound {
        /// The client's ref.
        reference: String,
    },
    /// Another live writer holds the ref; the client may retry.
    #[error("ref {reference} locked for {held_for:?}: unavailable")]
    Locked {
        /// The client's ref.
        reference: String,
        /// How long the current holder has had it.
        held_for: Duration,
    },
    /// A write was not at the current offset (and not at 0, which restarts).
    #[error("write @{offset} must occur at current offset {current}: out of range")]
    OffsetMismatch {
        /// The ingest's ref.
        reference: String,
        /// Where the client wanted to write.
        offset: u64,
        /// How many bytes the ingest holds.
        current: u64,
    },
    /// The ingest would grow past the total announced for it.
    #[error(
        "ref {reference:?}: {size} bytes would exceed the expected total of {total} bytes: \
         invalid argument"
    )]
    TotalExceeded {
        /// The ingest's ref.
        reference: String,
        /// The size the ingest would reach.
        size: u64,
        /// The announced total.
        total: u64,
    },
    /// Commit found a different size than the caller expected.
    #[error("unexpected commit size {size}, expected {expected}: failed precondition")]
    SizeMismatch {
        /// The ingest's ref.
        reference: String,
        /// The bytes actually written.
        size: u64,
        /// The size the caller asked for.
        expected: u64,
    },
    /// Commit found a different digest than the caller expected.
    #[error("unexpected commit digest {actual}, expected {expected}: failed precondition")]
    DigestMismatch {
        /// The ingest's ref.
        reference: String,
        /// The digest of the bytes written.
        actual: Digest,
        /// The digest the caller asked for.
        expected: Digest,
    },
    /// A read started past the end of the blob.
    #[error(
        "content {digest}: read at offset {offset} past object length {size} bytes: out of range"
    )]
    ReadOutOfRange {
        /// The blob.
        digest: Digest,
        /// The requested offset.
        offset: u64,
        /// The blob's size.
        size: u64,
    },
    /// An ingest's files contradict each other or the writer's own count.
    #[error("ingest ref {reference:?} is corrupt: {detail}: data loss")]
    CorruptIngest {
        /// The ingest's ref.
        reference: String,
        /// What does not add up.
        detail: String,
    },
    /// A filesystem call failed.
    #[error("content store: {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
}

impl Classify for ContentError {
    fn kind(&self) -> ErrorKind {
        match self {
            ContentError::InvalidDigest { .. }
            | ContentError::EmptyRef
            | ContentError::TotalExceeded { .. } => ErrorKind::InvalidArgument,
            ContentError::NotFound { .. } | ContentError::IngestNotFound { .. } => {
                ErrorKind::NotFound
            }
            ContentError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            ContentError::Locked { .. } => ErrorKind::Unavailable,
            ContentError::OffsetMismatch { .. } | ContentError::ReadOutOfRange { .. } => {
                ErrorKind::OutOfRange
            }
            ContentError::SizeMismatch { .. } | ContentError::DigestMismatch { .. } => {
                ErrorKind::FailedPrecondition
            }
            ContentError::CorruptIngest { .. } => ErrorKind::DataLoss,
            ContentError::Io { source, .. } if berth_snapshotters::space::is_no_space(source) => {
                ErrorKind::ResourceExhausted
            }
            ContentError::Io { .. } => ErrorKind::Internal,
        }
    }
}

/// Tags an I/O error with the operation and path.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> ContentError {
    let path = path.into();
    move |source| ContentError::Io { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_containerd() {
        let d = Digest::sha256_of(b"");
        assert_eq!(
            ContentError::NotFound { digest: d.clone() }.to_string(),
            format!("content {d}: not found")
        );
        assert_eq!(
            ContentError::AlreadyExists { digest: d.clone() }.to_string(),
            format!("content {d}: already exists")
        );
        let e = ContentError::SizeMismatch {
            reference: "r".into(),
            size: 3,
            expected: 4,
        };
        assert_eq!(
            e.to_string(),
            "unexpected commit size 3, expected 4: failed precondition"
        );
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
        let e = ContentError::OffsetMismatch {
            reference: "r".into(),
            offset: 7,
            current: 5,
        };
        assert_eq!(
            e.to_string(),
            "write @7 must occur at current offset 5: out of range"
        );
        assert_eq!(e.kind(), ErrorKind::OutOfRange);
    }

    #[test]
    fn every_class_is_specific() {
        let io = ContentError::Io {
            op: "open",
            path: "/x".into(),
            source: io::Error::other("boom"),
        };
        assert_eq!(io.kind(), ErrorKind::Internal);
        assert!(io.to_string().contains("open /x: boom"));
        let locked = ContentError::Locked {
            reference: "r".into(),
            held_for: Duration::from_millis(5),
        };
        assert_eq!(locked.kind(), ErrorKind::Unavailable);
        assert!(locked.to_string().ends_with(": unavailable"));
        assert_eq!(ContentError::EmptyRef.kind(), ErrorKind::InvalidArgument);
    }
}
