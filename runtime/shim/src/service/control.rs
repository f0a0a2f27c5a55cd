//! Kill, Pause, Resume, Update, Checkpoint.

use std::path::PathBuf;
use std::sync::Arc;

use berth_proto::containerd::events::{TaskPaused, TaskResumed};
use berth_proto::containerd::runc::v1::CheckpointOptions;
use berth_proto::containerd::task::v2 as api;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prost::Message;

use super::Shim;
use crate::constants::{topic, type_url};
use crate::error::{InvalidRequest, Result, ShimError};
use crate::process::{Kind, Op, Status};
use crate::runc::{CheckpointOpts, RuncError};

/// containerd's `checkKillError`: runc's "not running" family means the process is gone.
fn kill_error(err: RuncError) -> ShimError {
    let message = err.to_string();
    let lower = message.to_lowercase();
    if message.contains("os: process already finished")
        || message.contains("container not running")
        || lower.contains("no such process")
    {
        ShimError::ProcessFinished
    } else if message.contains("does not exist") {
        ShimError::ContainerNotFound { id: String::new() }
    } else {
        ShimError::Runc {
            op: "unknown error after kill".into(),
            message,
        }
    }
}

impl Shim {
    /// Kill: `runc kill` for init, kill(2) for exec processes.
    #[tracing::instrument(skip_all, fields(id = %req.id, exec_id = %req.exec_id, signal = req.signal))]
    pub(super) async fn kill(self: Arc<Self>, req: api::KillRequest) -> Result<()> {
        let (runc, kind, pid, exited) = self.with_container(&req.id, |c| {
            let p = c.process(&req.exec_id)?;
            p.check(Op::Kill)?;
            Ok((c.runc.clone(), p.kind, p.pid, p.exit().is_some()))
        })?;
        match kind {
            Kind::Init => {
                if exited && !req.all {
                    return Err(ShimError::ProcessFinished);
                }
                runc.kill(&req.id, req.signal, req.all)
                    .await
                    .map_err(kill_error)
            }
            Kind::Exec => {
                if exited {
                    return Err(ShimError::ProcessFinished);
                }
                if pid == 0 {
                    return Err(ShimError::State(crate::process::StateError::new(
                        "process not created",
                    )));
                }
                let raw = i32::try_from(req.signal)
                    .map_err(|_| InvalidRequest::Signal(i64::from(req.signal)))?;
                let signal =
                    Signal::try_from(raw).map_err(|_| InvalidRequest::Signal(i64::from(raw)))?;
                let target = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
                match kill(target, signal) {
                    Ok(()) => Ok(()),
                    Err(nix::errno::Errno::ESRCH) => Err(ShimError::ProcessFinished),
                    Err(e) => Err(ShimError::sys(format!("kill {pid}"), e)),
                }
            }
        }
    }

    /// Pause: `runc pause`, TaskPaused.
    #[tracing::instrument(skip_all, fields(id = %req.id))]
    pub(super) async fn pause(self: Arc<Self>, req: api::PauseRequest) -> Result<()> {
        let runc = self.with_container(&req.id, |c| {
            c.init.check(Op::Pause)?;
            Ok(c.runc.clone())
        })?;
        runc.pause(&req.id).await.map_err(|e| ShimError::Runc {
            op: "OCI runtime pause failed".into(),
            message: e.to_string(),
        })?;
        self.with_container(&req.id, |c| {
            if c.init.status == Status::Running {
                c.init.status = Status::Paused;
            }
            Ok(())
        })?;
        self.publisher.publish(
            topic::TASK_PAUSED,
            type_url::TASK_PAUSED,
            &TaskPaused {
                container_id: req.id.clone(),
            },
        );
        Ok(())
    }

    /// Resume: `runc resume`, TaskResumed.
    #[tracing::instrument(skip_all, fields(id = %req.id))]
    pub(super) async fn resume(self: Arc<Self>, req: api::ResumeRequest) -> Result<()> {
        let runc = self.with_container(&req.id, |c| {
            c.init.check(Op::Resume)?;
            Ok(c.runc.clone())
        })?;
        runc.resume(&req.id).await.map_err(|e| ShimError::Runc {
            op: "OCI runtime resume failed".into(),
            message: e.to_string(),
        })?;
        self.with_container(&req.id, |c| {
            if c.init.status == Status::Paused {
                c.init.status = Status::Running;
            }
            Ok(())
        })?;
        self.publisher.publish(
            topic::TASK_RESUMED,
            type_url::TASK_RESUMED,
            &TaskResumed {
                container_id: req.id.clone(),
            },
        );
        Ok(())
    }

    /// Update: `runc update --resources -` with the LinuxResources JSON.
    #[tracing::instrument(skip_all, fields(id = %req.id))]
    pub(super) async fn update(self: Arc<Self>, req: api::UpdateTaskRequest) -> Result<()> {
        let runc = self.with_container(&req.id, |c| {
            c.init.check(Op::Update)?;
            Ok(c.runc.clone())
        })?;
        let resources = req
            .resources
            .map(|a| a.value)
            .ok_or(InvalidRequest::Missing {
                op: "update",
                what: "resources",
            })?;
        runc.update(&req.id, resources)
            .await
            .map_err(|e| ShimError::Runc {
                op: "OCI runtime update failed".into(),
                message: e.to_string(),
            })
    }

    /// Checkpoint: `runc checkpoint` when criu is installed.
    #[tracing::instrument(skip_all, fields(id = %req.id))]
    pub(super) async fn checkpoint(self: Arc<Self>, req: api::CheckpointTaskRequest) -> Result<()> {
        let (runc, terminal) = self.with_container(&req.id, |c| {
            c.init.check(Op::Checkpoint)?;
            Ok((c.runc.clone(), c.init.stdio.terminal))
        })?;
        let criu = runc.criu.clone().unwrap_or_else(|| "criu".into());
        if !crate::runc::on_path(&criu) {
            return Err(ShimError::Unimplemented(
                "checkpoint (criu is not installed)",
            ));
        }
        let opts = match &req.options {
            Some(a) if a.type_url.ends_with("containerd.runc.v1.CheckpointOptions") => {
                CheckpointOptions::decode(&*a.value).map_err(|e| ShimError::Decode {
                    what: "checkpoint options",
                    message: e.to_string(),
                })?
            }
            _ => CheckpointOptions::default(),
        };
        let image_path = if opts.image_path.is_empty() {
            PathBuf::from(&req.path)
        } else {
            PathBuf::from(&opts.image_path)
        };
        let copts = CheckpointOpts {
            image_path,
            work_path: (!opts.work_path.is_empty()).then(|| PathBuf::from(&opts.work_path)),
            exit: opts.exit,
            open_tcp: opts.open_tcp,
            external_unix_sockets: opts.external_unix_sockets,
            terminal: opts.terminal || terminal,
            file_locks: opts.file_locks,
        };
        runc.checkpoint(&req.id, &copts)
            .await
            .map_err(|e| ShimError::Runc {
                op: "OCI runtime checkpoint failed".into(),
                message: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(msg: &str) -> RuncError {
        RuncError::Failed {
            status: 1,
            message: msg.into(),
        }
    }

    #[test]
    fn kill_errors_map_like_containerd() {
        assert!(matches!(
            kill_error(failed("container not running")),
            ShimError::ProcessFinished
        ));
        assert!(matches!(
            kill_error(failed("No such process")),
            ShimError::ProcessFinished
        ));
        assert!(matches!(
            kill_error(failed("container \"x\" does not exist")),
            ShimError::ContainerNotFound { .. }
        ));
        assert!(matches!(kill_error(failed("boom")), ShimError::Runc { .. }));
    }
}
