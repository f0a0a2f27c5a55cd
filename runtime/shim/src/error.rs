//! The shim's error type and its one mapping to a ttrpc status.

use std::path::PathBuf;

use berth_errdefs::{code, Classify, ErrorKind};
use berth_ttrpc::{status, RpcStatus};

use crate::process::StateError;

/// Everything a shim operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// Task id not known to this shim (containerd: "container not created").
    #[error("container {id} not created: not found")]
    ContainerNotFound {
        /// The task id asked for.
        id: String,
    },
    /// Exec id not known within the task.
    #[error("process {exec_id} does not exist: not found")]
    ProcessNotFound {
        /// The exec id asked for.
        exec_id: String,
    },
    /// Signalling a process that is gone (`pkg/process/utils.go` `checkKillError`).
    #[error("process already finished: not found")]
    ProcessFinished,
    /// Task or exec id taken.
    #[error("{what} {id} already exists")]
    AlreadyExists {
        /// "container" or "process".
        what: &'static str,
        /// The id.
        id: String,
    },
    /// The lifecycle state refuses the operation.
    #[error(transparent)]
    State(#[from] StateError),
    /// Malformed request.
    #[error(transparent)]
    InvalidArgument(#[from] InvalidRequest),
    /// Not supported by this shim or host.
    #[error("{0}: not implemented")]
    Unimplemented(&'static str),
    /// A runc invocation failed; `message` is runc's own error (from its JSON log when it has one).
    #[error("{op}: {message}")]
    Runc {
        /// What we asked runc to do, in containerd's words ("OCI runtime create failed").
        op: String,
        /// runc's message.
        message: String,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// The operation and its object.
        op: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// Mounting or unmounting the rootfs failed.
    #[error(transparent)]
    Mount(#[from] berth_mount::MountError),
    /// A payload could not be decoded.
    #[error("decode {what}: {message}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's message.
        message: String,
    },
}

impl ShimError {
    /// Wraps an I/O error with its operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> ShimError {
        ShimError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Wraps an errno with the operation.
    pub fn sys(op: impl Into<String>, source: nix::Error) -> ShimError {
        ShimError::Sys {
            op: op.into(),
            source,
        }
    }

    /// The gRPC code containerd's errdefs would give this error (the class's code on the one
    /// table, [`berth_errdefs::code`]).
    pub fn code(&self) -> i32 {
        code::to_grpc(self.kind())
    }
}

impl ShimError {
    /// A refusal of the request as asked (an unknown or finished process, a duplicate, a
    /// wrong state or argument), not a failure of the shim's own work: I/O, runc and mounts
    /// fail as themselves even when their class is NotFound (a missing bundle file).
    fn is_refusal(&self) -> bool {
        match self {
            ShimError::ContainerNotFound { .. }
            | ShimError::ProcessNotFound { .. }
            | ShimError::ProcessFinished
            | ShimError::AlreadyExists { .. }
            | ShimError::State(_)
            | ShimError::InvalidArgument(_)
            | ShimError::Decode { .. }
            | ShimError::Unimplemented(_) => true,
            ShimError::Runc { .. }
            | ShimError::Io { .. }
            | ShimError::Sys { .. }
            | ShimError::Mount(_) => false,
        }
    }
}

impl Classify for ShimError {
    fn kind(&self) -> ErrorKind {
        match self {
            ShimError::ContainerNotFound { .. }
            | ShimError::ProcessNotFound { .. }
            | ShimError::ProcessFinished => ErrorKind::NotFound,
            ShimError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            ShimError::State(_) => ErrorKind::FailedPrecondition,
            ShimError::InvalidArgument(_) | ShimError::Decode { .. } => ErrorKind::InvalidArgument,
            ShimError::Unimplemented(_) => ErrorKind::NotImplemented,
            ShimError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            ShimError::Mount(berth_mount::MountError::OptionsTooLong { .. }) => {
                ErrorKind::InvalidArgument
            }
            ShimError::Mount(berth_mount::MountError::Unsupported { .. }) => {
                ErrorKind::NotImplemented
            }
            ShimError::Runc { .. }
            | ShimError::Io { .. }
            | ShimError::Sys { .. }
            | ShimError::Mount(_) => ErrorKind::Internal,
        }
    }
}

impl From<ShimError> for RpcStatus {
    fn from(err: ShimError) -> RpcStatus {
        // Refusals (a Delete of a task another caller deleted, a State of an exec that
        // finished) are the caller's business, as containerd's shim leaves them to the caller;
        // failures of the shim's own work are worth a warning in berthd's log.
        if err.is_refusal() {
            tracing::debug!(error = %err, "request refused");
        } else {
            tracing::warn!(error = %err, "request failed");
        }
        status(err.code(), err.to_string())
    }
}

/// A request the shim refuses as malformed (InvalidArgument), one variant per refusal.
#[derive(Debug, thiserror::Error)]
pub enum InvalidRequest {
    /// An id that containerd's identifier rules refuse.
    #[error("identifier {id:?} must match [A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*")]
    Identifier {
        /// The id as sent.
        id: String,
    },
    /// Exec with an empty exec id.
    #[error("exec id must not be empty")]
    EmptyExecId,
    /// A request without a part it needs: `exec: no process spec`, `update: no resources`.
    #[error("{op}: no {what}")]
    Missing {
        /// The request.
        op: &'static str,
        /// The part it lacks.
        what: &'static str,
    },
    /// An exec process spec that is JSON but not an object.
    #[error("exec process spec is not a JSON object")]
    SpecNotObject,
    /// A stdio URI of a scheme other than `fifo` or `binary`.
    #[error("unsupported STDIO scheme {scheme}")]
    StdioScheme {
        /// The scheme.
        scheme: String,
    },
    /// Kill with a number that is not a signal.
    #[error("invalid signal {0}")]
    Signal(i64),
    /// The console socket closed without passing the pty master.
    #[error("console socket: no file descriptor received")]
    NoConsoleFd,
    /// runc did not pass the pty master in time.
    #[error("failed to retrieve console master: timed out")]
    ConsoleTimeout,
    /// Stats on a container whose cgroup the shim does not know.
    #[error("container {id} has no cgroup")]
    NoCgroup {
        /// The task id.
        id: String,
    },
}

/// Shorthand for shim results.
pub type Result<T> = std::result::Result<T, ShimError>;

#[cfg(test)]
mod tests {
    use berth_ttrpc::code;

    use super::*;

    #[test]
    fn refusals_are_the_callers_and_own_failures_are_not() {
        assert!(ShimError::ContainerNotFound { id: "x".into() }.is_refusal());
        assert!(ShimError::ProcessFinished.is_refusal());
        // A file of the shim's own missing is NotFound to the caller but the shim's failure.
        let missing = ShimError::io(
            "open",
            "/run/x/config.json",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        assert!(!missing.is_refusal());
    }

    #[test]
    fn codes_and_messages() {
        let st: RpcStatus = ShimError::ProcessFinished.into();
        assert_eq!(st.code, code::NOT_FOUND);
        assert_eq!(st.message, "process already finished: not found");
        let st: RpcStatus =
            ShimError::State(StateError::new("cannot pause task in created state")).into();
        assert_eq!(st.code, code::FAILED_PRECONDITION);
        assert_eq!(st.message, "cannot pause task in created state");
        assert_eq!(
            ShimError::Unimplemented("checkpoint").code(),
            code::UNIMPLEMENTED
        );
        let st: RpcStatus = ShimError::from(InvalidRequest::Missing {
            op: "update",
            what: "resources",
        })
        .into();
        assert_eq!(st.code, code::INVALID_ARGUMENT);
        assert_eq!(st.message, "update: no resources");
        let st: RpcStatus = ShimError::from(InvalidRequest::Signal(99)).into();
        assert_eq!(st.message, "invalid signal 99");
    }
}
