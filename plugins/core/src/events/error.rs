//! Why the exchange refused an event (containerd `events/exchange/exchange.go`: `validateTopic`,
//! `validateEnvelope`, and `namespaces.NamespaceRequired` on publish).

use berth_registry::{Classify, ErrorKind, IdentifierError};

/// Why a topic string is not a valid event topic: `/` followed by one or more identifier
/// components separated by `/`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic is the empty string.
    #[error("must not be empty")]
    Empty,
    /// The topic does not begin with `/`.
    #[error("must start with '/'")]
    NoLeadingSlash,
    /// The topic is `/` alone.
    #[error("must have at least one component")]
    NoComponents,
    /// One `/`-separated component is not an identifier.
    #[error("failed validation on component {component:?}: {source}")]
    Component {
        /// The offending component (empty for `//` or a trailing `/`).
        component: String,
        /// Why the identifier check refused it.
        source: IdentifierError,
    },
}

/// Why an event was not published or forwarded. Always the caller's fault: InvalidArgument,
/// except a missing namespace on publish, which containerd classes as FailedPrecondition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Publish was called without a usable namespace.
    #[error("failed publishing event: {0}")]
    Namespace(#[source] IdentifierError),
    /// A forwarded envelope names an invalid namespace.
    #[error("event envelope has invalid namespace: {0}")]
    EnvelopeNamespace(#[source] IdentifierError),
    /// The topic is malformed.
    #[error("envelope topic {topic:?}: {source}")]
    Topic {
        /// The topic as given.
        topic: String,
        /// What is wrong with it.
        source: TopicError,
    },
    /// A forwarded envelope carries no timestamp (or Go's zero time).
    #[error("timestamp must be set on forwarded event")]
    TimestampUnset,
    /// A forwarded envelope's timestamp cannot be represented on this host.
    #[error("timestamp {seconds}s {nanos}ns of forwarded event is out of range")]
    TimestampOutOfRange {
        /// Seconds since the Unix epoch, as sent.
        seconds: i64,
        /// Nanoseconds, as sent.
        nanos: i32,
    },
}

impl Classify for EventError {
    fn kind(&self) -> ErrorKind {
        match self {
            EventError::Namespace(e) | EventError::EnvelopeNamespace(e) => e.kind(),
            EventError::Topic { .. }
            | EventError::TimestampUnset
            | EventError::TimestampOutOfRange { .. } => ErrorKind::InvalidArgument,
        }
    }
}
