//! The only tables between error classes and gRPC status codes, both ways and side by side, as
//! containerd/errdefs keeps `errgrpc.ToGRPC` (servers) next to `errgrpc.ToNative` (clients).

use tonic::Code;

use crate::ErrorKind;

/// The code a server answers for an error of class `kind` (containerd `ToGRPC`): Conflict
/// travels as FailedPrecondition, and Internal as Unknown, so that Code::Internal stays what
/// the transport itself says (a request that does not decode).
pub fn to_grpc(kind: ErrorKind) -> Code {
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

/// The class a client gives a status of code `code` (containerd `ToNative`). FailedPrecondition
/// comes back as FailedPrecondition (the wire does not tell a conflict apart); codes without a
/// class of their own (Unknown, Internal, ResourceExhausted, ...) are Internal.
pub fn to_native(code: Code) -> ErrorKind {
    match code {
        Code::InvalidArgument => ErrorKind::InvalidArgument,
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::Unimplemented => ErrorKind::NotImplemented,
        Code::OutOfRange => ErrorKind::OutOfRange,
        Code::DataLoss => ErrorKind::DataLoss,
        Code::Cancelled => ErrorKind::Canceled,
        Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorKind; 12] = [
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::FailedPrecondition,
        ErrorKind::Conflict,
        ErrorKind::Unavailable,
        ErrorKind::NotImplemented,
        ErrorKind::OutOfRange,
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
        assert_eq!(to_grpc(ErrorKind::Internal), Code::Unknown);
        assert_eq!(to_grpc(ErrorKind::Conflict), Code::FailedPrecondition);
        assert_eq!(to_native(Code::Internal), ErrorKind::Internal);
        assert_eq!(to_native(Code::ResourceExhausted), ErrorKind::Internal);
        assert_eq!(to_native(Code::PermissionDenied), ErrorKind::Internal);
    }
}
