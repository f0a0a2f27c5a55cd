//! The classes themselves and the trait every error enum implements to name its class.

use std::fmt;

/// The class of an error, as containerd's `errdefs` defines them. Each crate's error enum
/// answers `kind()` with one of these where the error is born.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller sent something malformed.
    InvalidArgument,
    /// The object does not exist.
    NotFound,
    /// The object exists already.
    AlreadyExists,
    /// The system is not in the state the operation needs.
    FailedPrecondition,
    /// Two operations collided (FailedPrecondition on the wire, as containerd does).
    Conflict,
    /// The resource is busy or temporarily unreachable; the client may retry.
    Unavailable,
    /// The operation is not implemented.
    NotImplemented,
    /// A position or size is out of range.
    OutOfRange,
    /// The host ran out of something the operation needs (disk space, quota).
    ResourceExhausted,
    /// Stored data is corrupt or was lost.
    DataLoss,
    /// The caller went away.
    Canceled,
    /// A deadline passed.
    DeadlineExceeded,
    /// Anything else: a bug or an unexpected host failure.
    Internal,
}

impl ErrorKind {
    /// The text containerd appends to messages of this class (clients strip it again).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::FailedPrecondition => "failed precondition",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::NotImplemented => "not implemented",
            ErrorKind::OutOfRange => "out of range",
            ErrorKind::ResourceExhausted => "resource exhausted",
            ErrorKind::DataLoss => "data loss",
            ErrorKind::Canceled => "context canceled",
            ErrorKind::DeadlineExceeded => "context deadline exceeded",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every crate's error enum so that the service layer can map it to a status
/// without knowing the crate.
pub trait Classify: std::error::Error {
    /// The errdefs class of this error.
    fn kind(&self) -> ErrorKind;

    /// True when the display is already the whole status message and takes no `: <class>`
    /// suffix: containerd answers some refusals in plain words (`task x not found`,
    /// `first message must have a reference`), and so does Berth.
    fn complete_message(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Gone;

    impl fmt::Display for Gone {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("gone")
        }
    }

    impl std::error::Error for Gone {}

    impl Classify for Gone {
        fn kind(&self) -> ErrorKind {
            ErrorKind::NotFound
        }
    }

    #[test]
    fn class_texts_are_containerds() {
        assert_eq!(ErrorKind::NotFound.to_string(), "not found");
        assert_eq!(ErrorKind::Canceled.as_str(), "context canceled");
        assert_eq!(ErrorKind::Conflict.as_str(), "conflict");
    }

    #[test]
    fn messages_take_the_class_by_default() {
        assert_eq!(Gone.kind(), ErrorKind::NotFound);
        assert!(!Gone.complete_message());
    }
}
