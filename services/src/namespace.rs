//! The `containerd-namespace` request header, required by every namespaced call.

use berth_registry::identifiers::{validate_namespace, IdentifierError};
use tonic::{Request, Status};

use crate::status::to_status;

/// The gRPC metadata key naming the namespace.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// The gRPC metadata key naming the lease that protects what a call creates.
pub const LEASE_HEADER: &str = "containerd-lease";

/// The lease a request works under, if it names one.
pub fn lease_from_request<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get(LEASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
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
    fn first_value_wins() {
        assert_eq!(from_request(&req(&["a", "b"])).unwrap(), "a");
    }
}
