//! Validation of client-chosen identifiers (namespaces, container and task ids, exec ids) and of
//! labels, with containerd's rules (`identifiers/validate.go`, `labels/validate.go`). Everything a
//! client names is checked here before it can touch a path or a key.

use std::sync::LazyLock;

use regex::Regex;

use crate::errdefs::{Classify, ErrorKind};

/// Longest identifier containerd accepts.
pub const MAX_IDENTIFIER_LEN: usize = 76;

/// Largest `len(key) + len(value)` of one label.
pub const MAX_LABEL_SIZE: usize = 4096;

/// The identifier pattern: alphanumeric runs joined by single `.`, `_` or `-`.
pub const IDENTIFIER_PATTERN: &str = r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$";

static IDENTIFIER_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(IDENTIFIER_PATTERN).expect("identifier pattern is a valid regex"));

/// Why an identifier, namespace or label was refused. Always InvalidArgument, except a missing
/// namespace, which containerd classes as FailedPrecondition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    /// The identifier is empty.
    #[error("identifier must not be empty")]
    Empty,
    /// The identifier is longer than [`MAX_IDENTIFIER_LEN`].
    #[error("identifier {0:?} greater than maximum length ({MAX_IDENTIFIER_LEN} characters)")]
    TooLong(String),
    /// The identifier has characters outside the pattern.
    #[error("identifier {0:?} must match {IDENTIFIER_PATTERN}")]
    BadCharacters(String),
    /// A namespace name failed validation.
    #[error("namespace validation: {0}")]
    Namespace(Box<IdentifierError>),
    /// A call needed a namespace and had none.
    #[error("namespace is required")]
    NamespaceRequired,
    /// A label's key and value together are too large.
    #[error("label key and value greater than maximum size ({MAX_LABEL_SIZE} bytes), key: {0}")]
    LabelTooLarge(String),
}

impl Classify for IdentifierError {
    fn kind(&self) -> ErrorKind {
        match self {
            IdentifierError::NamespaceRequired => ErrorKind::FailedPrecondition,
            _ => ErrorKind::InvalidArgument,
        }
    }
}

/// Checks an identifier against containerd's rules.
pub fn validate(id: &str) -> Result<(), IdentifierError> {
    if id.is_empty() {
        return Err(IdentifierError::Empty);
    }
    if id.len() > MAX_IDENTIFIER_LEN {
        return Err(IdentifierError::TooLong(id.to_owned()));
    }
    if !IDENTIFIER_RE.is_match(id) {
        return Err(IdentifierError::BadCharacters(id.to_owned()));
    }
    Ok(())
}

/// Checks a namespace name; errors read `namespace validation: ...` as containerd's do.
pub fn validate_namespace(ns: &str) -> Result<(), IdentifierError> {
    validate(ns).map_err(|e| IdentifierError::Namespace(Box::new(e)))
}

/// Checks one label. Only the first 10 bytes of an oversized key are quoted back, as containerd
/// does, so that the error stays readable.
pub fn validate_label(key: &str, value: &str) -> Result<(), IdentifierError> {
    if key.len() + value.len() > MAX_LABEL_SIZE {
        let shown: String = key.chars().take(10).collect();
        return Err(IdentifierError::LabelTooLarge(shown));
    }
    Ok(())
}

/// Checks every label of a map.
pub fn validate_labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), IdentifierError> {
    labels
        .into_iter()
        .try_for_each(|(k, v)| validate_label(k, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_containerd_style_identifiers() {
        for ok in ["a", "default", "k8s.io", "a-b_c.d", "A1", &"x".repeat(76)] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_traversal_separators_and_length() {
        assert_eq!(validate(""), Err(IdentifierError::Empty));
        for bad in ["../x", "a/b", ".a", "a.", "a..b", "a b", "-a", "a\0b"] {
            assert!(
                matches!(validate(bad), Err(IdentifierError::BadCharacters(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            validate(&"x".repeat(77)),
            Err(IdentifierError::TooLong(_))
        ));
    }

    #[test]
    fn namespace_errors_say_namespace_validation() {
        let err = validate_namespace("a/b").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("namespace validation: identifier \"a/b\""));
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            IdentifierError::NamespaceRequired.kind(),
            ErrorKind::FailedPrecondition
        );
    }

    #[test]
    fn label_size_counts_key_and_value() {
        assert!(validate_label(&"k".repeat(4000), &"v".repeat(96)).is_ok());
        let err = validate_label(&"k".repeat(4097), "").unwrap_err();
        assert_eq!(err, IdentifierError::LabelTooLarge("kkkkkkkkkk".into()));
    }
}
