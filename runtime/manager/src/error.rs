//! `RuntimeError`: everything the runtime v2 manager refuses or fails at, classed where it is
//! born so that the Tasks service maps it to a status in one place.

use std::path::PathBuf;

use berth_errdefs::code;
use berth_registry::{Classify, ErrorKind, IdentifierError};
use berth_ttrpc::TtrpcError;

/// Why a runtime v2 operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A namespace or task id is not a valid identifier.
    #[error("invalid task id {id:?}")]
    InvalidId {
        /// The id as given.
        id: String,
        /// What the identifier rules said.
        source: IdentifierError,
    },
    /// An exec id is not a valid identifier (containerd `invalid exec id`).
    #[error("invalid exec id {id}")]
    InvalidExecId {
        /// The exec id as given.
        id: String,
        /// What the identifier rules said.
        source: IdentifierError,
    },
    /// The runtime name is neither `io.containerd.<name>.<version>` nor a configured path.
    #[error(
        "invalid runtime name {0:?}, expected io.containerd.<name>.<version> or a configured binary"
    )]
    InvalidRuntime(String),
    /// No shim binary for the runtime on PATH, next to the daemon or in the config.
    #[error("runtime {runtime:?} binary not installed {binary:?}")]
    ShimNotInstalled {
        /// The runtime name.
        runtime: String,
        /// The binary looked for.
        binary: String,
    },
    /// The runtime options have a type the runtime does not take.
    #[error("invalid task create option for {runtime}: {type_url:?}")]
    InvalidOptions {
        /// The runtime name.
        runtime: String,
        /// The options' type URL.
        type_url: String,
    },
    /// The runc options do not decode.
    #[error("decode the {runtime} options (containerd.runc.v1.Options): {source}")]
    UndecodableOptions {
        /// The runtime name.
        runtime: String,
        /// The cause.
        #[source]
        source: prost::DecodeError,
    },
    /// A runtime option is set that Berth cannot honour for this runtime.
    #[error("{option} is not supported for runtime {runtime}")]
    UnsupportedOption {
        /// The runtime name.
        runtime: String,
        /// The option, as `<type>.<field>`.
        option: String,
    },
    /// The spec is not an OCI spec in JSON.
    #[error("invalid spec for task {id}")]
    InvalidSpec {
        /// The task id.
        id: String,
        /// What the JSON decoder said.
        source: serde_json::Error,
    },
    /// A task with this id is already running in the namespace.
    #[error("task {0}")]
    TaskExists(String),
    /// No task with this id in the namespace (containerd's wording).
    #[error("task {0} not found")]
    TaskNotFound(String),
    /// A bundle directory or file could not be made, read or removed.
    #[error("{op} {path}")]
    Bundle {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The shim binary could not be run.
    #[error("run shim {binary} {action}")]
    ShimSpawn {
        /// The shim binary.
        binary: PathBuf,
        /// `start` or `delete`.
        action: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The shim binary ran but failed; `output` is what it printed.
    #[error("shim {binary} {action} failed ({status}): {output}")]
    ShimFailed {
        /// The shim binary.
        binary: PathBuf,
        /// `start` or `delete`.
        action: &'static str,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its (trimmed) output.
        output: String,
    },
    /// The shim did not finish an action in time.
    #[error("shim {binary} {action} timed out")]
    ShimTimeout {
        /// The shim binary.
        binary: PathBuf,
        /// `start` or `delete`.
        action: &'static str,
    },
    /// `start` printed something that is not a unix socket address.
    #[error("shim returned invalid address {0:?}")]
    InvalidAddress(String),
    /// The shim's `delete` output did not decode as a `DeleteResponse`.
    #[error("decode shim delete response")]
    DecodeDelete(#[source] prost::DecodeError),
    /// The shim's socket could not be dialled.
    #[error("connect shim at {address}")]
    Connect {
        /// The address dialled.
        address: String,
        /// The ttrpc error.
        source: TtrpcError,
    },
    /// A ttrpc call to the shim failed; a shim status keeps its code and message. The ttrpc
    /// error is not a `source`: its text is already the message, and a status chain walking
    /// into it would repeat the shim's words with a `code N:` in between.
    #[error("{}", shim_message(.error))]
    Shim {
        /// The shim method.
        method: &'static str,
        /// The ttrpc error.
        error: TtrpcError,
    },
}

fn shim_message(e: &TtrpcError) -> String {
    match e {
        TtrpcError::Status(st) => st.message.clone(),
        other => other.to_string(),
    }
}

impl RuntimeError {
    /// True when the shim connection is gone (the shim exited or was killed).
    pub fn is_closed(&self) -> bool {
        matches!(
            self,
            RuntimeError::Shim {
                error: TtrpcError::Closed,
                ..
            }
        )
    }
}

impl Classify for RuntimeError {
    fn kind(&self) -> ErrorKind {
        match self {
            RuntimeError::InvalidId { .. }
            | RuntimeError::InvalidExecId { .. }
            | RuntimeError::InvalidRuntime(_)
            | RuntimeError::ShimNotInstalled { .. }
            | RuntimeError::InvalidOptions { .. }
            | RuntimeError::UndecodableOptions { .. }
            | RuntimeError::InvalidSpec { .. } => ErrorKind::InvalidArgument,
            RuntimeError::UnsupportedOption { .. } => ErrorKind::NotImplemented,
            RuntimeError::TaskExists(_) => ErrorKind::AlreadyExists,
            RuntimeError::TaskNotFound(_) => ErrorKind::NotFound,
            RuntimeError::ShimTimeout { .. } => ErrorKind::DeadlineExceeded,
            RuntimeError::Connect { .. } => ErrorKind::Unavailable,
            RuntimeError::Shim { error, .. } => match error {
                TtrpcError::Status(st) => code::to_native(st.code),
                TtrpcError::Timeout => ErrorKind::DeadlineExceeded,
                _ => ErrorKind::Internal,
            },
            RuntimeError::Bundle { .. }
            | RuntimeError::ShimSpawn { .. }
            | RuntimeError::ShimFailed { .. }
            | RuntimeError::InvalidAddress(_)
            | RuntimeError::DecodeDelete(_) => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_statuses_keep_message_and_class() {
        let e = RuntimeError::Shim {
            method: "Kill",
            error: TtrpcError::Status(berth_ttrpc::status(
                berth_ttrpc::code::NOT_FOUND,
                "process already finished: not found",
            )),
        };
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.to_string(), "process already finished: not found");
        assert!(
            std::error::Error::source(&e).is_none(),
            "the message is said once"
        );
        let closed = RuntimeError::Shim {
            method: "State",
            error: TtrpcError::Closed,
        };
        assert!(closed.is_closed());
        assert_eq!(
            RuntimeError::TaskNotFound("c1".into()).to_string(),
            "task c1 not found"
        );
    }
}
