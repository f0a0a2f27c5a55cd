//! Create, Start, Delete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_proto::containerd::events::{
    TaskCreate, TaskDelete, TaskExecStarted, TaskIo, TaskOom, TaskStart,
};
use berth_proto::containerd::task::v2 as api;

use super::exits::early_exit;
use super::{asyncify, Container, Shim};
use crate::bundle::{decode_options, save_options, SavedOptions};
use crate::cgroup::{watch_oom, Cgroup, CGROUP_ROOT};
use crate::constants::{bundle, topic, type_url};
use crate::error::{InvalidRequest, Result, ShimError};
use crate::events::timestamp;
use crate::io::{wait_outputs, StdioConfig};
use crate::mount::{mount_all, unmount_all};
use crate::own::{self, SpecFacts};
use crate::process::init::InitOpts;
use crate::process::{exec, init, Kind, Op, Process, StateError, Status};
use crate::runc::Runc;

/// How long Delete waits for output to drain (containerd `waitTimeout(&p.wg, 2s)`).
const IO_DRAIN: Duration = Duration::from_secs(2);

/// How long after a process starts the shim gives back its start-up file pages: after the
/// calls that follow a start, and after its blocking threads' 0.5 s keep-alive.
const RELEASE_PAGES_AFTER: Duration = Duration::from_secs(1);

/// containerd's identifier rule, enough to keep ids out of paths.
fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 76
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && id.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(InvalidRequest::Identifier { id: id.to_owned() }.into())
    }
}

impl Shim {
    /// Create: mount the rootfs, `runc create`, publish TaskCreate.
    #[tracing::instrument(skip_all, fields(id = %req.id))]
    pub(super) async fn create(
        self: Arc<Self>,
        req: api::CreateTaskRequest,
    ) -> Result<api::CreateTaskResponse> {
        validate_id(&req.id)?;
        if self.lock().containers.contains_key(&req.id) {
            return Err(ShimError::AlreadyExists {
                what: "container",
                id: req.id.clone(),
            });
        }
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unimplemented("restore from checkpoint"));
        }
        let opts = decode_options(req.options.as_ref())?;
        let saved = SavedOptions::from(&opts);
        let dir = PathBuf::from(&req.bundle);
        let rootfs = dir.join(bundle::ROOTFS);
        let mounts = req.rootfs.clone();
        let facts = {
            let (dir, rootfs, saved) = (dir.clone(), rootfs.clone(), saved.clone());
            asyncify(move || {
                save_options(&dir, &saved)?;
                let spec = std::fs::read(dir.join(bundle::CONFIG)).ok();
                if !mounts.is_empty() {
                    std::fs::create_dir_all(&rootfs)
                        .map_err(|e| ShimError::io("mkdir", &rootfs, e))?;
                    mount_all(&mounts, &rootfs)?;
                }
                Ok(SpecFacts::of(spec.as_deref()))
            })
            .await?
        };
        let kill_all = facts.kill_all_on_exit;
        let mounted = !req.rootfs.is_empty();
        let mut runc = Runc::new(
            &opts.binary_name,
            &opts.root,
            &self.namespace,
            &dir,
            self.reaper.clone(),
        );
        runc.systemd_cgroup = opts.systemd_cgroup;
        runc.criu = (!opts.criu_path.is_empty()).then(|| opts.criu_path.clone());
        let stdio = StdioConfig {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
            process_id: req.id.clone(),
            namespace: self.namespace.clone(),
        };
        let init_opts = InitOpts {
            no_pivot_root: opts.no_pivot_root,
            no_new_keyring: opts.no_new_keyring,
        };
        let (pid, io) = match init::create(&runc, &req.id, &dir, &stdio, &init_opts).await {
            Ok(created) => created,
            Err(err) => {
                if mounted {
                    let _ = asyncify(move || unmount_all(&rootfs)).await;
                }
                return Err(err);
            }
        };
        let own = facts.eligibility(&runc.root.join(&req.id), runc.systemd_cgroup);
        let cgroup = Cgroup::of_pid(Path::new(CGROUP_ROOT), pid).ok();
        let oom_watch = cgroup.clone().map(|cg| {
            let publisher = self.publisher.clone();
            let id = req.id.clone();
            tokio::spawn(watch_oom(cg, move || {
                publisher.publish(
                    topic::TASK_OOM,
                    type_url::TASK_OOM,
                    &TaskOom {
                        container_id: id.clone(),
                    },
                );
            }))
        });
        let mut process = Process::new(req.id.clone(), Kind::Init, stdio);
        process.pid = pid;
        process.io = io;
        let container = Container {
            id: req.id.clone(),
            bundle: dir,
            runc,
            rootfs_mounted: mounted,
            init: process,
            execs: HashMap::new(),
            cgroup,
            oom_watch,
            kill_all_on_exit: kill_all,
            own,
        };
        let mut state = self.lock();
        state.containers.insert(req.id.clone(), container);
        self.publisher.publish(
            topic::TASK_CREATE,
            type_url::TASK_CREATE,
            &TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: Some(TaskIo {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                }),
                checkpoint: req.checkpoint.clone(),
                pid,
            },
        );
        Ok(api::CreateTaskResponse { pid })
    }

    /// Start: `runc start` for init, `runc exec --detach` for an exec process.
    #[tracing::instrument(skip_all, fields(id = %req.id, exec_id = %req.exec_id))]
    pub(super) async fn start(
        self: Arc<Self>,
        req: api::StartRequest,
    ) -> Result<api::StartResponse> {
        let since = SystemTime::now();
        let mut sub = self.reaper.subscribe();
        let (runc, dir, spec, stdio, own_start) = self.with_container(&req.id, |c| {
            let (runc, dir, own_start) = (c.runc.clone(), c.bundle.clone(), c.own.start);
            let p = c.process_mut(&req.exec_id)?;
            p.check(Op::Start)?;
            if p.starting {
                return Err(StateError::new("process is already starting").into());
            }
            p.starting = true;
            let own_start = own_start.then_some(p.pid);
            Ok((runc, dir, p.spec.clone(), p.stdio.clone(), own_start))
        })?;
        let start_failed = |message: String| ShimError::Runc {
            op: "OCI runtime start failed".into(),
            message,
        };
        let result = if req.exec_id.is_empty() {
            match own_start {
                // What `runc start` does, without starting runc (see `own`).
                Some(pid) => {
                    let state_dir = runc.root.join(&req.id);
                    asyncify(move || {
                        own::start(&state_dir, pid).map_err(|e| start_failed(e.to_string()))
                    })
                    .await
                    .map(|()| None)
                }
                None => runc
                    .start(&req.id)
                    .await
                    .map(|()| None)
                    .map_err(|e| start_failed(e.to_string())),
            }
        } else {
            exec::start(&runc, &req.id, &req.exec_id, &dir, &spec, &stdio)
                .await
                .map(Some)
        };
        let mut guard = self.lock();
        let state = &mut *guard;
        let c = state
            .containers
            .get_mut(&req.id)
            .ok_or_else(|| ShimError::ContainerNotFound { id: req.id.clone() })?;
        let container_id = c.id.clone();
        let kill_all_init = req.exec_id.is_empty() && c.kill_all_on_exit;
        let p = c.process_mut(&req.exec_id)?;
        p.starting = false;
        let pending = p.pending_exit.take();
        match result {
            Err(err) => {
                if let Some(info) = pending {
                    self.record_exit(&container_id, p, info);
                }
                return Err(err);
            }
            Ok(Some((pid, io))) => {
                p.pid = pid;
                p.io = io;
            }
            Ok(None) => {}
        }
        p.status = Status::Running;
        let pid = p.pid;
        // From here the shim mostly waits; see `resident` for why this pays. Not right away: the
        // answer to Start, the TaskStart event, the daemon's Wait and the exit of the blocking
        // threads Start used would fault their code back in. Released once they are done, what
        // an idle shim keeps is what its waiting touches. It runs on the shim's one async
        // thread, as an exception to keeping blocking work off it: reading /proc/self/smaps and
        // a few madvise calls take well under a millisecond on a shim that is idle by then, and
        // a blocking-pool thread would fault its own start and exit code back in.
        tokio::spawn(async {
            tokio::time::sleep(RELEASE_PAGES_AFTER).await;
            let kib = berth_resident::release_clean_file_pages();
            tracing::debug!(kib, "released start-up pages");
        });
        if p.kind == Kind::Init {
            self.publisher.publish(
                topic::TASK_START,
                type_url::TASK_START,
                &TaskStart {
                    container_id: container_id.clone(),
                    pid,
                },
            );
        } else {
            self.publisher.publish(
                topic::TASK_EXEC_STARTED,
                type_url::TASK_EXEC_STARTED,
                &TaskExecStarted {
                    container_id: container_id.clone(),
                    exec_id: p.id.clone(),
                    pid,
                },
            );
        }
        // An init whose exit must first kill the rest of its container is recorded by the exit
        // loop alone, which kills before it records (an exit stashed in `pending` was handled
        // there already): recording it here could show the task stopped before the kill.
        let early = if kill_all_init {
            pending
        } else {
            early_exit(&mut state.unmatched, pending, pid, &mut sub, since)
        };
        if let Some(info) = early {
            if let Some(c) = state.containers.get_mut(&req.id) {
                if let Ok(p) = c.process_mut(&req.exec_id) {
                    self.record_exit(&container_id, p, info);
                }
            }
        }
        Ok(api::StartResponse { pid })
    }

    /// Delete: forget an exec process, or `runc delete` the task, unmount its rootfs and
    /// publish TaskDelete.
    #[tracing::instrument(skip_all, fields(id = %req.id, exec_id = %req.exec_id))]
    pub(super) async fn delete(
        self: Arc<Self>,
        req: api::DeleteRequest,
    ) -> Result<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            let (outputs, resp) = self.with_container(&req.id, |c| {
                c.process(&req.exec_id)?.check(Op::Delete)?;
                let mut p =
                    c.execs
                        .remove(&req.exec_id)
                        .ok_or_else(|| ShimError::ProcessNotFound {
                            exec_id: req.exec_id.clone(),
                        })?;
                p.io.close_stdin();
                Ok((p.io.take_outputs(), delete_response(&p)))
            })?;
            wait_outputs(outputs, IO_DRAIN).await;
            return Ok(resp);
        }
        let (runc, rootfs, mounted, outputs, own_delete) = self.with_container(&req.id, |c| {
            c.init.check(Op::Delete)?;
            // Only a container whose init was reaped is stopped for runc too.
            let own_delete = c.own.delete && c.init.exit().is_some();
            if own_delete {
                // Its cgroup is about to go: no OOM report from the removal.
                if let Some(task) = c.oom_watch.take() {
                    task.abort();
                }
            }
            Ok((
                c.runc.clone(),
                c.bundle.join(bundle::ROOTFS),
                c.rootfs_mounted,
                c.init.io.take_outputs(),
                own_delete,
            ))
        })?;
        wait_outputs(outputs, IO_DRAIN).await;
        let deleted = if own_delete {
            // What `runc delete` does for a stopped container, without starting runc.
            let state_dir = runc.root.join(&req.id);
            asyncify(move || {
                own::delete(&state_dir).map_err(|e| ShimError::Runc {
                    op: "failed to delete task".into(),
                    message: e.to_string(),
                })
            })
            .await
        } else {
            Ok(())
        };
        deleted?;
        if !own_delete {
            if let Err(err) = runc.delete(&req.id, false).await {
                let message = err.to_string();
                if !message.contains("does not exist") && !message.contains("not exist") {
                    return Err(ShimError::Runc {
                        op: "failed to delete task".into(),
                        message,
                    });
                }
            }
        }
        if mounted {
            asyncify(move || unmount_all(&rootfs)).await?;
        }
        let mut container = {
            let mut state = self.lock();
            state
                .containers
                .remove(&req.id)
                .ok_or_else(|| ShimError::ContainerNotFound { id: req.id.clone() })?
        };
        if let Some(task) = container.oom_watch.take() {
            task.abort();
        }
        container.init.io.close_stdin();
        container.init.status = Status::Deleted;
        let resp = delete_response(&container.init);
        self.publisher.publish(
            topic::TASK_DELETE,
            type_url::TASK_DELETE,
            &TaskDelete {
                container_id: container.id.clone(),
                pid: resp.pid,
                exit_status: resp.exit_status,
                exited_at: resp.exited_at,
                id: String::new(),
            },
        );
        Ok(resp)
    }
}

fn delete_response(p: &Process) -> api::DeleteResponse {
    let exit = p.exit();
    api::DeleteResponse {
        pid: p.pid,
        exit_status: exit.map_or(0, |e| e.status),
        exited_at: exit.map(|e| timestamp(e.at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("t1").is_ok());
        assert!(validate_id("a.b-c_d").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("../x").is_err());
        assert!(validate_id("a/b").is_err());
    }
}
