//! Lifecycle states of init and exec processes, with containerd's explicit refusals
//! (`pkg/process/init_state.go`, `exec_state.go`, `deleted_state.go`).

use std::fmt;

use berth_proto::containerd::v1::types::Status as ProtoStatus;

/// An operation refused in the current state; the message is containerd's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StateError {
    message: String,
}

impl StateError {
    /// Builds a refusal with `message`.
    pub fn new(message: impl Into<String>) -> StateError {
        StateError {
            message: message.into(),
        }
    }
}

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `runc create` / `exec` prepared, not started.
    Created,
    /// Started and not exited.
    Running,
    /// Frozen (init only).
    Paused,
    /// Exited; status kept until Delete.
    Stopped,
    /// Deleted; about to be forgotten.
    Deleted,
}

impl Status {
    /// The `containerd.v1.types.Status` value.
    pub fn to_proto(self) -> ProtoStatus {
        match self {
            Status::Created => ProtoStatus::Created,
            Status::Running => ProtoStatus::Running,
            Status::Paused => ProtoStatus::Paused,
            Status::Stopped | Status::Deleted => ProtoStatus::Stopped,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
            Status::Deleted => "deleted",
        })
    }
}

/// Operations whose admissibility depends on the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Start the process.
    Start,
    /// Delete it.
    Delete,
    /// Freeze the container.
    Pause,
    /// Thaw it.
    Resume,
    /// Change its resources.
    Update,
    /// Checkpoint it.
    Checkpoint,
    /// Add an exec process.
    Exec,
    /// Signal it.
    Kill,
    /// Resize its terminal.
    Resize,
}

/// Init process or exec process: they refuse differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The container's init process.
    Init,
    /// A process added with Exec.
    Exec,
}

/// Checks whether `op` is allowed for a process of `kind` in `status`, with containerd's
/// refusal messages. Transitions are applied by the caller once the runtime call succeeded.
pub fn check(kind: Kind, status: Status, op: Op) -> Result<(), StateError> {
    use Op::*;
    use Status::*;
    let refusal = match (kind, status, op) {
        (_, Deleted, Exec) => "cannot exec in a deleted state",
        (_, Deleted, op) => {
            return Err(StateError::new(format!(
                "cannot {} a deleted process",
                verb(op)
            )))
        }
        (Kind::Init, Created, Pause) => "cannot pause task in created state",
        (Kind::Init, Created, Resume) => "cannot resume task in created state",
        (Kind::Init, Created, Checkpoint) => "cannot checkpoint a task in created state",
        (Kind::Init, Created, Exec) => "cannot exec in a created state",
        (Kind::Init, Running, Resume) => "cannot resume a running process",
        (_, Running, Start) => "cannot start a running process",
        (_, Running, Delete) => "cannot delete a running process",
        (Kind::Init, Paused, Pause) => "cannot pause a paused container",
        (Kind::Init, Paused, Start) => "cannot start a paused process",
        (Kind::Init, Paused, Delete) => "cannot delete a paused process",
        (Kind::Init, Paused, Exec) => "cannot exec in a paused state",
        (Kind::Init, Stopped, Pause) => "cannot pause a stopped container",
        (Kind::Init, Stopped, Resume) => "cannot resume a stopped container",
        (Kind::Init, Stopped, Update) => "cannot update a stopped container",
        (Kind::Init, Stopped, Checkpoint) => "cannot checkpoint a stopped container",
        (Kind::Init, Stopped, Exec) => "cannot exec in a stopped state",
        (_, Stopped, Start) => "cannot start a stopped process",
        (Kind::Exec, Stopped, Resize) => "cannot resize a stopped container",
        (Kind::Exec, _, Pause | Resume | Update | Checkpoint | Exec) => {
            return Err(StateError::new(format!(
                "cannot {} an exec process",
                verb(op)
            )))
        }
        _ => return Ok(()),
    };
    Err(StateError::new(refusal))
}

fn verb(op: Op) -> &'static str {
    match op {
        Op::Start => "start",
        Op::Delete => "delete",
        Op::Pause => "pause",
        Op::Resume => "resume",
        Op::Update => "update",
        Op::Checkpoint => "checkpoint",
        Op::Exec => "exec",
        Op::Kill => "kill",
        Op::Resize => "resize",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(kind: Kind, status: Status, op: Op) -> String {
        check(kind, status, op).unwrap_err().to_string()
    }

    #[test]
    fn init_refusals_match_containerd() {
        assert_eq!(
            refused(Kind::Init, Status::Created, Op::Pause),
            "cannot pause task in created state"
        );
        assert_eq!(
            refused(Kind::Init, Status::Created, Op::Exec),
            "cannot exec in a created state"
        );
        assert_eq!(
            refused(Kind::Init, Status::Running, Op::Delete),
            "cannot delete a running process"
        );
        assert_eq!(
            refused(Kind::Init, Status::Paused, Op::Pause),
            "cannot pause a paused container"
        );
        assert_eq!(
            refused(Kind::Init, Status::Stopped, Op::Start),
            "cannot start a stopped process"
        );
        assert_eq!(
            refused(Kind::Init, Status::Stopped, Op::Update),
            "cannot update a stopped container"
        );
        assert_eq!(
            refused(Kind::Init, Status::Deleted, Op::Kill),
            "cannot kill a deleted process"
        );
    }

    #[test]
    fn init_allowed_transitions() {
        assert!(check(Kind::Init, Status::Created, Op::Start).is_ok());
        assert!(check(Kind::Init, Status::Created, Op::Delete).is_ok());
        assert!(check(Kind::Init, Status::Created, Op::Kill).is_ok());
        assert!(check(Kind::Init, Status::Running, Op::Pause).is_ok());
        assert!(check(Kind::Init, Status::Running, Op::Exec).is_ok());
        assert!(check(Kind::Init, Status::Paused, Op::Resume).is_ok());
        assert!(check(Kind::Init, Status::Paused, Op::Kill).is_ok());
        assert!(check(Kind::Init, Status::Stopped, Op::Delete).is_ok());
        assert!(check(Kind::Init, Status::Stopped, Op::Kill).is_ok());
    }

    #[test]
    fn exec_states() {
        assert!(check(Kind::Exec, Status::Created, Op::Start).is_ok());
        assert!(check(Kind::Exec, Status::Stopped, Op::Delete).is_ok());
        assert_eq!(
            refused(Kind::Exec, Status::Running, Op::Delete),
            "cannot delete a running process"
        );
        assert_eq!(
            refused(Kind::Exec, Status::Stopped, Op::Resize),
            "cannot resize a stopped container"
        );
        assert_eq!(
            refused(Kind::Exec, Status::Running, Op::Pause),
            "cannot pause an exec process"
        );
    }

    #[test]
    fn proto_status() {
        assert_eq!(Status::Paused.to_proto(), ProtoStatus::Paused);
        assert_eq!(Status::Deleted.to_proto(), ProtoStatus::Stopped);
    }
}
