//! Errors of the transfer library: [`StoreError`] from the store traits and [`TransferError`]
//! from pull and push, each with its containerd error class.

use std::sync::Arc;

use berth_errdefs::{Classify, ErrorKind};
use oci_client::errors::{OciDistributionError, OciErrorCode};

/// An error from a store trait implementation (gRPC proxy or local store), carrying the errdefs
/// class so that callers can tell `NotFound` and `AlreadyExists` from failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The daemon answered with an error status: its words, and the class its code stands for
    /// (errdefs `ToNative`).
    #[error("{message}")]
    Status {
        /// The class of the status code.
        kind: ErrorKind,
        /// The status message.
        message: String,
    },
    /// A store in this process failed; its own error keeps its class.
    #[error("{source}")]
    Local {
        /// The store's error.
        source: Arc<dyn Classify + Send + Sync>,
    },
    /// A namespace or lease that cannot travel in a gRPC header.
    #[error("{value:?} is not a valid gRPC header value")]
    InvalidHeader {
        /// The namespace or lease.
        value: String,
    },
    /// The content write stream ended without the daemon saying why.
    #[error("content write stream for {ingest_ref} closed")]
    WriteStreamClosed {
        /// The ingest.
        ingest_ref: String,
    },
    /// The daemon's write offset is not where the data sent ends.
    #[error("short write to {ingest_ref}: offset {offset} after writing up to {expected}")]
    ShortWrite {
        /// The ingest.
        ingest_ref: String,
        /// The offset the daemon answered.
        offset: i64,
        /// Where the data sent ends.
        expected: u64,
    },
    /// A successful answer without a part it must carry.
    #[error("{call} returned no {part}")]
    IncompleteReply {
        /// The call: `Diff.Apply`.
        call: &'static str,
        /// What was missing: `descriptor`.
        part: &'static str,
    },
}

impl StoreError {
    /// A status answered by the daemon, of class `kind`, in its words.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Status {
            kind,
            message: message.into(),
        }
    }

    /// A local store's error, keeping its class.
    pub fn local(err: impl Classify + Send + Sync + 'static) -> Self {
        Self::Local {
            source: Arc::new(err),
        }
    }

    /// Is this a `NotFound`?
    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }

    /// Is this an `AlreadyExists`?
    pub fn is_already_exists(&self) -> bool {
        self.kind() == ErrorKind::AlreadyExists
    }
}

impl Classify for StoreError {
    fn kind(&self) -> ErrorKind {
        StoreError::kind(self)
    }
}

impl StoreError {
    /// The errdefs class (also [`Classify::kind`], here without importing the trait).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Status { kind, .. } => *kind,
            Self::Local { source } => source.kind(),
            Self::InvalidHeader { .. } => ErrorKind::InvalidArgument,
            Self::ShortWrite { .. } => ErrorKind::DataLoss,
            Self::WriteStreamClosed { .. } | Self::IncompleteReply { .. } => ErrorKind::Internal,
        }
    }
}

/// Why a pull or push failed. Every variant names the reference, registry or digest concerned.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The reference does not parse.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The registry refused the credentials (or wants some).
    #[error("authentication failed for {registry}: check --user")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The registry's own words.
        detail: String,
    },
    /// The registry has no such manifest or blob, or the local store has no such image.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for: `registry manifest docker.io/library/x:latest`, `blob
        /// sha256:...`, `image x`.
        what: String,
    },
    /// Content did not hash to the digest it was fetched or stored as.
    #[error("digest mismatch for {digest}: {detail}")]
    DigestMismatch {
        /// The expected digest.
        digest: String,
        /// What was seen instead.
        detail: String,
    },
    /// The registry could not be reached (connection, TLS, timeout).
    #[error("cannot reach registry {registry}: {detail}")]
    Network {
        /// The registry host.
        registry: String,
        /// The transport error and its causes.
        detail: String,
    },
    /// The registry answered with an error not covered above.
    #[error("registry {registry} failed on {what}: {detail}")]
    Registry {
        /// The registry host.
        registry: String,
        /// The operation, say `push manifest sha256:...`.
        what: String,
        /// The registry's answer.
        detail: String,
    },
    /// A manifest, index or config is malformed or of a kind this library does not handle.
    #[error("invalid {what} {digest}: {reason}")]
    InvalidContent {
        /// `manifest`, `index`, `config`.
        what: &'static str,
        /// The digest of the document.
        digest: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An index has no manifest for the requested platform.
    #[error("no manifest for platform {platform} in {reference}")]
    NoMatchingPlatform {
        /// The reference pulled or image pushed.
        reference: String,
        /// The platform asked for.
        platform: String,
    },
    /// A store (content, snapshots, diff, images, leases) failed.
    #[error("{op} {target}: {source}")]
    Store {
        /// The operation, say `write content` or `prepare snapshot`.
        op: &'static str,
        /// The digest, key or name it was about.
        target: String,
        /// The store's error.
        source: StoreError,
    },
    /// Every download finished, yet the layer to unpack next was not among them (a bug).
    #[error("unpack layer {layer}: download ended without the layer")]
    DownloadLost {
        /// The layer digest.
        layer: String,
    },
    /// Every key tried for the extraction snapshot of a layer was taken.
    #[error("prepare snapshot {chain_id}: extraction snapshot keeps colliding")]
    ExtractionCollides {
        /// The chain ID of the layer.
        chain_id: String,
    },
    /// A registry hosts file (`hosts.toml`) or its directory cannot be read or parsed.
    #[error("registry host configuration {path}: {reason}")]
    HostsConfig {
        /// The file or directory.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// No configured endpoint of a registry can do what a pull needs.
    #[error("no endpoint of registry {registry} can {capability} (check its hosts.toml)")]
    NoEndpoint {
        /// The registry host.
        registry: String,
        /// `resolve` or `pull`.
        capability: &'static str,
    },
    /// Applying a layer gave a different diffID than the config lists.
    #[error("wrong diff id calculated on extraction of {layer}: got {got}, config has {expected}")]
    DiffIdMismatch {
        /// The layer digest.
        layer: String,
        /// The diffID the applier computed.
        got: String,
        /// The diffID in the image config.
        expected: String,
    },
}

impl TransferError {
    /// Wraps a store error with the operation and its target.
    pub fn store(op: &'static str, target: impl Into<String>, source: StoreError) -> Self {
        Self::Store {
            op,
            target: target.into(),
            source,
        }
    }

    /// Maps an `oci-client` error met while doing `what` against `registry`.
    pub fn from_oci(err: OciDistributionError, registry: &str, what: &str) -> Self {
        let registry = registry.to_owned();
        let not_found = || TransferError::NotFound {
            what: format!("{what} on {registry}"),
        };
        match err {
            OciDistributionError::UnauthorizedError { url } => Self::Unauthorized {
                registry,
                detail: format!("401 Unauthorized from {url}"),
            },
            OciDistributionError::AuthenticationFailure(detail) => {
                Self::Unauthorized { registry, detail }
            }
            OciDistributionError::RegistryError { envelope, url } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    Self::Unauthorized {
                        registry,
                        detail: format!("{envelope} ({url})"),
                    }
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    not_found()
                } else {
                    Self::Registry {
                        registry,
                        what: what.to_owned(),
                        detail: format!("{envelope} ({url})"),
                    }
                }
            }
            OciDistributionError::ServerError { code, url, message } => match code {
                401 | 403 => Self::Unauthorized {
                    registry,
                    detail: format!("HTTP {code} from {url}: {message}"),
                },
                404 => not_found(),
                _ => Self::Registry {
                    registry,
                    what: what.to_owned(),
                    detail: format!("HTTP {code} from {url}: {}", message.trim()),
                },
            },
            OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
            OciDistributionError::DigestError(e) => Self::DigestMismatch {
                digest: what.to_owned(),
                detail: e.to_string(),
            },
            OciDistributionError::RequestError(e) => match e.status().map(|s| s.as_u16()) {
                Some(401 | 403) => Self::Unauthorized {
                    registry,
                    detail: error_chain(&e),
                },
                Some(404) => not_found(),
                Some(code) => Self::Registry {
                    registry,
                    what: what.to_owned(),
                    detail: format!("HTTP {code}: {}", error_chain(&e)),
                },
                None => Self::Network {
                    registry,
                    detail: error_chain(&e),
                },
            },
            OciDistributionError::IoError(e) => Self::Network {
                registry,
                detail: error_chain(&e),
            },
            other => Self::Registry {
                registry,
                what: what.to_owned(),
                detail: error_chain(&other),
            },
        }
    }
}

/// `err` followed by its causes, `: `-separated (reqwest hides the TLS reason in a cause).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    text
}

impl Classify for TransferError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidReference { .. } | Self::Unauthorized { .. } => ErrorKind::InvalidArgument,
            Self::NotFound { .. } | Self::NoMatchingPlatform { .. } => ErrorKind::NotFound,
            Self::DigestMismatch { .. } | Self::DiffIdMismatch { .. } => ErrorKind::DataLoss,
            Self::Network { .. } => ErrorKind::Unavailable,
            Self::Registry { .. } => ErrorKind::Unavailable,
            Self::InvalidContent { .. } => ErrorKind::FailedPrecondition,
            Self::Store { source, .. } => source.kind(),
            Self::DownloadLost { .. } => ErrorKind::Internal,
            Self::HostsConfig { .. } | Self::NoEndpoint { .. } => ErrorKind::FailedPrecondition,
            Self::ExtractionCollides { .. } => ErrorKind::AlreadyExists,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_names_the_registry_and_the_flag() {
        let err = TransferError::from_oci(
            OciDistributionError::UnauthorizedError {
                url: "https://r/v2/".into(),
            },
            "127.0.0.1:5000",
            "resolve",
        );
        assert_eq!(
            err.to_string(),
            "authentication failed for 127.0.0.1:5000: check --user"
        );
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn http_codes_map_to_classes() {
        let e = |code| {
            TransferError::from_oci(
                OciDistributionError::ServerError {
                    code,
                    url: "u".into(),
                    message: "m".into(),
                },
                "reg",
                "blob sha256:00",
            )
        };
        assert_eq!(e(404).kind(), ErrorKind::NotFound);
        assert_eq!(e(404).to_string(), "blob sha256:00 on reg not found");
        assert_eq!(e(403).kind(), ErrorKind::InvalidArgument);
        assert_eq!(e(500).kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn store_errors_keep_their_class() {
        let err = TransferError::store(
            "write content",
            "sha256:00",
            StoreError::new(ErrorKind::OutOfRange, "bad offset"),
        );
        assert_eq!(err.kind(), ErrorKind::OutOfRange);
        assert_eq!(err.to_string(), "write content sha256:00: bad offset");
    }

    #[test]
    fn typed_store_errors_keep_their_words_and_classes() {
        #[derive(Debug, thiserror::Error)]
        #[error("blob sha256:01 missing")]
        struct Missing;
        impl Classify for Missing {
            fn kind(&self) -> ErrorKind {
                ErrorKind::NotFound
            }
        }

        let local = StoreError::local(Missing);
        assert!(local.is_not_found());
        assert_eq!(local.to_string(), "blob sha256:01 missing");
        let header = StoreError::InvalidHeader {
            value: "a\nb".into(),
        };
        assert_eq!(header.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            header.to_string(),
            "\"a\\nb\" is not a valid gRPC header value"
        );
        let short = StoreError::ShortWrite {
            ingest_ref: "r".into(),
            offset: 3,
            expected: 5,
        };
        assert_eq!(short.kind(), ErrorKind::DataLoss);
        assert_eq!(
            short.to_string(),
            "short write to r: offset 3 after writing up to 5"
        );
        let lost = TransferError::DownloadLost {
            layer: "sha256:02".into(),
        };
        assert_eq!(lost.kind(), ErrorKind::Internal);
        assert_eq!(
            lost.to_string(),
            "unpack layer sha256:02: download ended without the layer"
        );
        let collides = TransferError::ExtractionCollides {
            chain_id: "sha256:03".into(),
        };
        assert_eq!(collides.kind(), ErrorKind::AlreadyExists);
        assert_eq!(
            collides.to_string(),
            "prepare snapshot sha256:03: extraction snapshot keeps colliding"
        );
    }
}
