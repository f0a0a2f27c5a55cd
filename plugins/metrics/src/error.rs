//! Errors of the metrics exporter.

/// Why the metrics could not be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listener could not be bound: an address in use, not `host:port`, or unresolvable.
    #[error("[metrics] address {address:?}: {source}")]
    Bind {
        /// The address as configured.
        address: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The text could not be written (a series the encoder refused).
    #[error("encode the metrics: {0}")]
    Encode(std::fmt::Error),
    /// The blocking job gathering the metrics panicked or was cancelled.
    #[error("gather the metrics: {0}")]
    Task(tokio::task::JoinError),
}
