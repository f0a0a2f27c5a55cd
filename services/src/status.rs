//! The one place where errors become gRPC statuses (containerd errdefs `ToGRPC`), through
//! the class-to-code table of `berth-errdefs`. Messages end with the class text, as
//! containerd's do, so that clients print `namespace "a": already exists`.
//!
//! It also words what the transport itself refuses (a request that does not decode, a message
//! over the size limit) as containerd's grpc-go does, and bounds every message: errors quote
//! the client's input, and a status message travels in one HTTP/2 header that clients cap
//! (16 KiB for hyper's client), so a 100 kB filter must not come back whole.

use std::borrow::Cow;

use berth_errdefs::{grpc, Classify, ErrorKind};
use tonic::{Code, Status};

/// Longest status message sent, in bytes; longer ones keep their start and their end.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// How much of the end of an over-long message is kept: where the reason and the class are.
const KEPT_TAIL: usize = 256;

/// What prost's `DecodeError` says first: tonic answers a request that does not decode with
/// Internal and this text.
const DECODE_FAILURE: &str = "failed to decode Protobuf message";

/// tonic's text for a message over its decoding limit, answered with OutOfRange.
const DECODED_TOO_LARGE: &str = "Error, decoded message length too large";

/// tonic's text for an answer over its encoding limit, answered with OutOfRange.
const ENCODED_TOO_LARGE: &str = "Error, encoded message length too large";

/// Converts a classified error into a status whose message is the error's display chain
/// followed by the class text (unless the error says its message is complete). Logged once
/// here, where it becomes a status.
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
    if kind != ErrorKind::Internal && !err.complete_message() && !message.ends_with(&suffix) {
        message.push_str(&suffix);
    }
    if let Cow::Owned(short) = bounded(&message) {
        message = short;
    }
    if kind == ErrorKind::Internal || kind == ErrorKind::Unavailable || kind == ErrorKind::DataLoss
    {
        tracing::error!(error = %message, "request failed");
    } else {
        tracing::debug!(error = %message, "request refused");
    }
    Status::new(grpc::to_grpc(kind), message)
}

/// `message` if it is at most [`MAX_MESSAGE_LEN`] bytes; otherwise its start and its last
/// [`KEPT_TAIL`] bytes (cut at character boundaries) around a note of how much was left out.
pub fn bounded(message: &str) -> Cow<'_, str> {
    if message.len() <= MAX_MESSAGE_LEN {
        return Cow::Borrowed(message);
    }
    // The note is at most 40 bytes; the head takes what remains of the budget.
    let head_end = floor_char_boundary(message, MAX_MESSAGE_LEN - KEPT_TAIL - 40);
    let tail_start = ceil_char_boundary(message, message.len() - KEPT_TAIL);
    let left_out = tail_start - head_end;
    Cow::Owned(format!(
        "{}... ({left_out} bytes left out) ...{}",
        &message[..head_end],
        &message[tail_start..]
    ))
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// The status a client should see instead of `status`, when it differs: every message
/// [`bounded`], and what tonic answers itself for a request it could not take put the way
/// containerd's grpc-go does:
///
/// - a request that does not decode (a string that is not UTF-8, a malformed message) is the
///   client's error: InvalidArgument, where tonic says Internal. (grpc-go says Internal too,
///   but containerd 1.6's gogo/protobuf never checks UTF-8, so it takes such strings.)
/// - a message over the size limit is ResourceExhausted, as in grpc-go, where tonic says
///   OutOfRange.
///
/// Handlers never answer Internal with prost's text (their internal errors are Unknown, see
/// [`grpc::to_grpc`]), so only the transport's refusals match.
pub fn from_transport(status: &Status) -> Option<Status> {
    let message = status.message();
    let (code, message) = match status.code() {
        Code::Internal if message.starts_with(DECODE_FAILURE) => (
            Code::InvalidArgument,
            Cow::Owned(format!(
                "{}: {}",
                bounded(message),
                ErrorKind::InvalidArgument.as_str()
            )),
        ),
        Code::OutOfRange
            if message.starts_with(DECODED_TOO_LARGE) || message.starts_with(ENCODED_TOO_LARGE) =>
        {
            (Code::ResourceExhausted, bounded(message))
        }
        code if message.len() > MAX_MESSAGE_LEN => (code, bounded(message)),
        _ => return None,
    };
    tracing::debug!(code = ?code, error = %message, "request refused by the transport");
    Some(Status::new(code, message.into_owned()))
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
    fn long_messages_keep_their_start_and_end() {
        let input = format!("filters: parse error: [{}]: reason", "é".repeat(50_000));
        let short = bounded(&input);
        assert!(short.len() <= MAX_MESSAGE_LEN, "{}", short.len());
        assert!(short.starts_with("filters: parse error: [éé"));
        assert!(short.ends_with("éé]: reason"));
        assert!(short.contains("bytes left out"));
        assert_eq!(bounded("short"), "short");

        let err = berth_core::MetadataError::NamespaceExists(input);
        let s = to_status(&err);
        assert!(s.message().len() <= MAX_MESSAGE_LEN);
        assert!(
            s.message().ends_with("]: reason\": already exists"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn transport_refusals_as_grpc_go_words_them() {
        let s = Status::internal(
            "failed to decode Protobuf message: Namespace.name: invalid string value: data is \
             not UTF-8 encoded",
        );
        let s = from_transport(&s).expect("rewritten");
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().ends_with("UTF-8 encoded: invalid argument"));

        let s = Status::out_of_range(
            "Error, decoded message length too large: found 5 bytes, the limit is: 4 bytes",
        );
        assert_eq!(
            from_transport(&s).expect("rewritten").code(),
            Code::ResourceExhausted
        );

        let s = Status::internal("blocking task failed: panicked");
        assert!(from_transport(&s).is_none());
        let s = Status::not_found("x".repeat(5000));
        let s = from_transport(&s).expect("bounded");
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().len() <= MAX_MESSAGE_LEN);
    }

    #[test]
    fn conflict_maps_to_failed_precondition() {
        assert_eq!(grpc::to_grpc(ErrorKind::Conflict), Code::FailedPrecondition);
        assert_eq!(grpc::to_grpc(ErrorKind::Internal), Code::Unknown);
    }
}
