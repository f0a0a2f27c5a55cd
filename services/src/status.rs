//! The one place where error classes become gRPC status codes (containerd errdefs
//! `ToGRPC`). Messages end with the class text, as containerd's do, so that clients print
//! `namespace "a": already exists`.

use berth_registry::{Classify, ErrorKind};
use tonic::{Code, Status};

/// The gRPC code for an error class.
pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition | ErrorKind::Conflict => Code::FailedPrecondition,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::NotImplemented => Code::Unimplemented,
        ErrorKind::OutOfRange => Code::OutOfRange,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::Canceled => Code::Cancelled,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Internal => Code::Unknown,
    }
}

/// Converts a classified error into a status whose message is the error's display chain
/// followed by the class text. Logged once here, where it becomes a status.
pub fn to_status<E: Classify + ?Sized>(err: &E) -> Status {
    let kind = err.kind();
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    let suffix = format!(": {}", kind.as_str());
    if kind != ErrorKind::Internal && !message.ends_with(&suffix) {
        message.push_str(&suffix);
    }
    if kind == ErrorKind::Internal || kind == ErrorKind::Unavailable || kind == ErrorKind::DataLoss
    {
        tracing::error!(error = %message, "request failed");
    } else {
        tracing::debug!(error = %message, "request refused");
    }
    Status::new(code(kind), message)
}

#[cfg(test)]
mod tests {
    use berth_registry::identifiers;

    use super::*;

    #[test]
    fn messages_end_with_the_class_once() {
        let err = identifiers::validate("a/b").unwrap_err();
        let s = to_status(&err);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(
            s.message().ends_with(": invalid argument"),
            "{}",
            s.message()
        );

        let err = berth_core::MetadataError::NamespaceExists("a".into());
        let s = to_status(&err);
        assert_eq!(s.code(), Code::AlreadyExists);
        assert_eq!(s.message(), "namespace \"a\": already exists");
    }

    #[test]
    fn conflict_maps_to_failed_precondition() {
        assert_eq!(code(ErrorKind::Conflict), Code::FailedPrecondition);
        assert_eq!(code(ErrorKind::Internal), Code::Unknown);
    }
}
