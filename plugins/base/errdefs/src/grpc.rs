//! The class-to-code table of [`crate::code`] in tonic's terms, both ways and side by side, as
//! containerd/errdefs keeps `errgrpc.ToGRPC` (servers) next to `errgrpc.ToNative` (clients).

use tonic::Code;

use crate::{code, ErrorKind};

/// The code a server answers for an error of class `kind` (containerd `ToGRPC`), see
/// [`code::to_grpc`].
pub fn to_grpc(kind: ErrorKind) -> Code {
    Code::from_i32(code::to_grpc(kind))
}

/// The class a client gives a status of code `code` (containerd `ToNative`), see
/// [`code::to_native`].
pub fn to_native(code: Code) -> ErrorKind {
    code::to_native(code as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_codes_follow_the_table() {
        assert_eq!(to_grpc(ErrorKind::Internal), Code::Unknown);
        assert_eq!(to_grpc(ErrorKind::Conflict), Code::FailedPrecondition);
        assert_eq!(to_grpc(ErrorKind::Canceled), Code::Cancelled);
        assert_eq!(to_grpc(ErrorKind::NotImplemented), Code::Unimplemented);
        assert_eq!(
            to_native(Code::DeadlineExceeded),
            ErrorKind::DeadlineExceeded
        );
        assert_eq!(to_native(Code::Internal), ErrorKind::Internal);
        assert_eq!(
            to_grpc(ErrorKind::ResourceExhausted),
            Code::ResourceExhausted
        );
        assert_eq!(
            to_native(Code::ResourceExhausted),
            ErrorKind::ResourceExhausted
        );
        assert_eq!(to_native(Code::PermissionDenied), ErrorKind::Internal);
    }
}
