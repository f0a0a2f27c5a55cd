//! Processes of a task: the init process (`runc create`/`start`) and exec processes
//! (`runc exec --detach`), their lifecycle states and exit bookkeeping.

pub mod exec;
pub mod init;
pub mod state;

use std::time::SystemTime;

use berth_proto::containerd::task::v2::StateResponse;
use tokio::sync::watch;

pub use state::{check, Kind, Op, StateError, Status};

use crate::events::timestamp;
use crate::io::{ProcessIo, StdioConfig};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code or 128 + signal.
    pub status: u32,
    /// When it was reaped.
    pub at: SystemTime,
}

/// One process of a task.
#[derive(Debug)]
pub struct Process {
    /// Exec id, or the task id for init.
    pub id: String,
    /// Init or exec.
    pub kind: Kind,
    /// Host pid; 0 until known.
    pub pid: u32,
    /// Lifecycle state.
    pub status: Status,
    /// The stdio the client asked for.
    pub stdio: StdioConfig,
    /// Running copies between the process and the client.
    pub io: ProcessIo,
    /// Set while a Start is in flight: the starter, not the exit loop, handles an early exit.
    pub starting: bool,
    /// An exit the exit loop saw while `starting`.
    pub pending_exit: Option<ExitInfo>,
    /// Exec only: the OCI process spec JSON.
    pub spec: Vec<u8>,
    exit: watch::Sender<Option<ExitInfo>>,
}

impl Process {
    /// A process in the created state.
    pub fn new(id: String, kind: Kind, stdio: StdioConfig) -> Process {
        let (exit, _) = watch::channel(None);
        Process {
            id,
            kind,
            pid: 0,
            status: Status::Created,
            stdio,
            io: ProcessIo::default(),
            starting: false,
            pending_exit: None,
            spec: Vec::new(),
            exit,
        }
    }

    /// Checks `op` against the state.
    pub fn check(&self, op: Op) -> Result<(), StateError> {
        check(self.kind, self.status, op)
    }

    /// The exit, if the process has exited.
    pub fn exit(&self) -> Option<ExitInfo> {
        *self.exit.borrow()
    }

    /// Records the exit and wakes waiters; `false` if it was already recorded.
    pub fn set_exited(&mut self, exit: ExitInfo) -> bool {
        if self.exit().is_some() {
            return false;
        }
        self.status = Status::Stopped;
        self.starting = false;
        self.exit.send_replace(Some(exit));
        true
    }

    /// A receiver that sees the exit once recorded.
    pub fn waiter(&self) -> watch::Receiver<Option<ExitInfo>> {
        self.exit.subscribe()
    }

    /// The `State` answer for this process; like containerd, `id` is the process's own id.
    pub fn state_response(&self, bundle: &str) -> StateResponse {
        let exit = self.exit();
        StateResponse {
            id: self.id.clone(),
            bundle: bundle.to_owned(),
            pid: self.pid,
            status: self.status.to_proto() as i32,
            stdin: self.stdio.stdin.clone(),
            stdout: self.stdio.stdout.clone(),
            stderr: self.stdio.stderr.clone(),
            terminal: self.stdio.terminal,
            exit_status: exit.map_or(0, |e| e.status),
            exited_at: exit.map(|e| timestamp(e.at)),
            exec_id: if self.kind == Kind::Exec {
                self.id.clone()
            } else {
                String::new()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_proto::containerd::v1::types::Status as ProtoStatus;

    use super::*;

    #[tokio::test]
    async fn exit_is_recorded_once_and_wakes_waiters() {
        let mut p = Process::new("e1".into(), Kind::Exec, StdioConfig::default());
        let mut w = p.waiter();
        let first = ExitInfo {
            status: 7,
            at: SystemTime::UNIX_EPOCH,
        };
        assert!(p.set_exited(first));
        assert!(!p.set_exited(ExitInfo {
            status: 9,
            at: SystemTime::now()
        }));
        let got = *w.wait_for(Option::is_some).await.unwrap();
        assert_eq!(got, Some(first));
        let st = p.state_response("/b");
        assert_eq!(st.id, "e1");
        assert_eq!(st.status, ProtoStatus::Stopped as i32);
        assert_eq!(st.exit_status, 7);
        assert_eq!(st.exec_id, "e1");
        assert_eq!(
            p.check(Op::Start).unwrap_err().to_string(),
            "cannot start a stopped process"
        );
    }
}
