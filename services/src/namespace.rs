//! The `containerd-namespace` request header, required by every namespaced call.

use berth_registry::identifiers::{validate_namespace, IdentifierError};
use tonic::{Request, Status};

use crate::status::to_status;

/// The gRPC metadata key naming the namespace.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// The gRPC metadata key naming the lease that protects what a call creates.
pub const LEASE_HEADER: &str = "containerd-lease";

/// The lease a request works under, if it names one; InvalidArgument when the header is not
/// text (work done under a lease must not silently go unleased).
pub fn lease_from_request<T>(req: &Request<T>) -> Result<Option<String>, Status> {
    let Some(value) = req.metadata().get(LEASE_HEADER) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(lease) => Ok(Some(lease).filter(|s| !s.is_empty()).map(str::to_owned)),
        Err(_) => Err(to_status(&IdentifierError::BadCharacters(
            String::from_utf8_lossy(value.as_encoded_bytes()).into_owned(),
        ))),
    }
}

/// The validated namespace of a request: FailedPrecondition when missing, InvalidArgument when
/// malformed. The first value wins, as in containerd.
pub fn from_request<T>(req: &Request<T>) -> Result<String, Status> {
    let value = req.metadata().get_all(NAMESPACE_HEADER).iter().next();
    let ns = match value.map(|v| v.to_str()) {
        None => "",
        Some(Ok(ns)) => ns,
        // Bytes that are not visible ASCII (a header value may carry any byte above 0x7f):
        // a malformed name, as containerd's identifier rules find it.
        Some(Err(_)) => {
            let shown = value
                .map(|v| String::from_utf8_lossy(v.as_encoded_bytes()).into_owned())
                .unwrap_or_default();
            return Err(to_status(&IdentifierError::Namespace(Box::new(
                IdentifierError::BadCharacters(shown),
            ))));
        }
    };
    if ns.is_empty() {
        return Err(to_status(&IdentifierError::NamespaceRequired));
    }
    validate_namespace(ns).map_err(|e| to_status(&e))?;
    Ok(ns.to_owned())
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn req(values: &[&str]) -> Request<()> {
        let mut r = Request::new(());
        for v in values {
            r.metadata_mut()
                .append(NAMESPACE_HEADER, v.parse().unwrap());
        }
        r
    }

    #[test]
    fn missing_namespace_is_failed_precondition() {
        let err = from_request(&req(&[])).unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(err.message(), "namespace is required: failed precondition");
    }

    #[test]
    fn invalid_namespace_is_invalid_argument() {
        let err = from_request(&req(&["../x"])).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err
            .message()
            .starts_with("namespace validation: identifier \"../x\""));
    }

    #[test]
    fn namespace_that_is_not_text_is_invalid_argument() {
        let mut r = Request::new(());
        let value = tonic::metadata::AsciiMetadataValue::try_from(&b"ns\xff"[..]).unwrap();
        r.metadata_mut().insert(NAMESPACE_HEADER, value);
        let err = from_request(&r).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err
            .message()
            .starts_with("namespace validation: identifier \"ns"));
    }

    #[test]
    fn lease_header_that_is_not_text_is_invalid_argument() {
        let mut r = Request::new(());
        assert_eq!(lease_from_request(&r).unwrap(), None);
        r.metadata_mut().insert(LEASE_HEADER, "l1".parse().unwrap());
        assert_eq!(lease_from_request(&r).unwrap().as_deref(), Some("l1"));
        let value = tonic::metadata::AsciiMetadataValue::try_from(&b"l\xff"[..]).unwrap();
        r.metadata_mut().insert(LEASE_HEADER, value);
        let err = lease_from_request(&r).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }

    #[test]
    fn first_value_wins() {
        assert_eq!(from_request(&req(&["a", "b"])).unwrap(), "a");
    }
}
