//! The one table between error classes and status codes, both ways, by code number: gRPC and
//! ttrpc number their codes alike, so the daemon's services, the shim's answers and every client
//! read it here. [`crate::grpc`] puts tonic's `Code` on the same table.

use crate::ErrorKind;

// The gRPC code numbers (google.golang.org/grpc/codes) that classes travel as.
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;
const INVALID_ARGUMENT: i32 = 3;
const DEADLINE_EXCEEDED: i32 = 4;
const NOT_FOUND: i32 = 5;
const ALREADY_EXISTS: i32 = 6;
const RESOURCE_EXHAUSTED: i32 = 8;
const FAILED_PRECONDITION: i32 = 9;
const OUT_OF_RANGE: i32 = 11;
const UNIMPLEMENTED: i32 = 12;
const UNAVAILABLE: i32 = 14;
const DATA_LOSS: i32 = 15;

/// The code a server answers for an error of class `kind` (containerd `ToGRPC`): Conflict
/// travels as FailedPrecondition, and Internal as Unknown, so that Internal (13) stays what
/// the transport itself says (a request that does not decode).
pub fn to_grpc(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::InvalidArgument => INVALID_ARGUMENT,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::AlreadyExists => ALREADY_EXISTS,
        ErrorKind::FailedPrecondition | ErrorKind::Conflict => FAILED_PRECONDITION,
        ErrorKind::Unavailable => UNAVAILABLE,
        ErrorKind::NotImplemented => UNIMPLEMENTED,
        ErrorKind::OutOfRange => OUT_OF_RANGE,
        ErrorKind::ResourceExhausted => RESOURCE_EXHAUSTED,
        ErrorKind::DataLoss => DATA_LOSS,
        ErrorKind::Canceled => CANCELLED,
        ErrorKind::DeadlineExceeded => DEADLINE_EXCEEDED,
        ErrorKind::Internal => UNKNOWN,
    }
}

/// The class a client gives a status of code `code` (containerd `ToNative`). FailedPrecondition
/// comes back as FailedPrecondition (the wire does not tell a conflict apart); codes without a
/// class of their own (Unknown, Internal, PermissionDenied, ...) are Internal.
pub fn to_native(code: i32) -> ErrorKind {
    match code {
        INVALID_ARGUMENT => ErrorKind::InvalidArgument,
        NOT_FOUND => ErrorKind::NotFound,
        ALREADY_EXISTS => ErrorKind::AlreadyExists,
        FAILED_PRECONDITION => ErrorKind::FailedPrecondition,
        UNAVAILABLE => ErrorKind::Unavailable,
        UNIMPLEMENTED => ErrorKind::NotImplemented,
        OUT_OF_RANGE => ErrorKind::OutOfRange,
        RESOURCE_EXHAUSTED => ErrorKind::ResourceExhausted,
        DATA_LOSS => ErrorKind::DataLoss,
        CANCELLED => ErrorKind::Canceled,
        DEADLINE_EXCEEDED => ErrorKind::DeadlineExceeded,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorKind; 13] = [
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::FailedPrecondition,
        ErrorKind::Conflict,
        ErrorKind::Unavailable,
        ErrorKind::NotImplemented,
        ErrorKind::OutOfRange,
        ErrorKind::ResourceExhausted,
        ErrorKind::DataLoss,
        ErrorKind::Canceled,
        ErrorKind::DeadlineExceeded,
        ErrorKind::Internal,
    ];

    #[test]
    fn every_class_survives_the_round_trip_but_conflict() {
        for kind in ALL {
            let back = to_native(to_grpc(kind));
            if kind == ErrorKind::Conflict {
                assert_eq!(back, ErrorKind::FailedPrecondition);
            } else {
                assert_eq!(back, kind, "{kind}");
            }
        }
    }

    #[test]
    fn internal_errors_are_unknown_on_the_wire() {
        assert_eq!(to_grpc(ErrorKind::Internal), 2);
        assert_eq!(to_grpc(ErrorKind::NotFound), 5);
        assert_eq!(to_native(13), ErrorKind::Internal);
        assert_eq!(to_native(7), ErrorKind::Internal);
        assert_eq!(to_native(8), ErrorKind::ResourceExhausted);
        assert_eq!(to_native(0), ErrorKind::Internal);
    }
}
