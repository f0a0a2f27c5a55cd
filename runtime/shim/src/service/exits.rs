//! Turning reaped exits into process state and `TaskExit` events (containerd
//! `service.go` `processExits` / `checkProcesses`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use berth_proto::containerd::events::TaskExit;
use nix::sys::signal::Signal;

use super::{Shim, UNMATCHED_KEEP};
use crate::constants::{topic, type_url};
use crate::events::timestamp;
use crate::process::{ExitInfo, Process};
use crate::reaper::{Exit, Subscription};

impl Shim {
    /// Starts the task that applies every reaped exit to the processes.
    pub fn spawn_exit_loop(self: &Arc<Self>) {
        let mut sub = self.reaper.subscribe();
        let shim = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(exit) = sub.recv().await {
                shim.kill_all_after_init(exit.pid).await;
                shim.on_exit(exit);
            }
        });
    }

    /// When `pid` is the init of a container without a PID namespace of its own, SIGKILLs every
    /// other process of it (`runc kill --all`) before the exit is recorded, as containerd's
    /// `checkProcesses` does: the kernel kills the rest only when init was their namespace's
    /// pid 1, and a client that saw the exit expects the container gone.
    async fn kill_all_after_init(&self, pid: i32) {
        let Ok(pid) = u32::try_from(pid) else {
            return;
        };
        let target = {
            let state = self.lock();
            state
                .containers
                .values()
                .find(|c| c.kill_all_on_exit && c.init.pid == pid && c.init.exit().is_none())
                .map(|c| (c.id.clone(), c.runc.clone()))
        };
        let Some((id, runc)) = target else {
            return;
        };
        let sigkill = Signal::SIGKILL as u32;
        if let Err(err) = runc.kill(&id, sigkill, true).await {
            tracing::warn!(container = %id, error = %err, "kill the rest of the container after its init exited");
        }
    }

    fn on_exit(&self, exit: Exit) {
        let info = ExitInfo {
            status: exit.status,
            at: exit.at,
        };
        let mut state = self.lock();
        let Ok(pid) = u32::try_from(exit.pid) else {
            return;
        };
        for c in state.containers.values_mut() {
            let id = c.id.clone();
            for p in std::iter::once(&mut c.init).chain(c.execs.values_mut()) {
                if p.pid != pid || p.exit().is_some() {
                    continue;
                }
                if p.starting {
                    // The starter publishes the start event first, then this exit.
                    p.pending_exit = Some(info);
                } else {
                    self.record_exit(&id, p, info);
                }
                return;
            }
        }
        state.unmatched.push_back(exit);
        while state.unmatched.len() > UNMATCHED_KEEP {
            state.unmatched.pop_front();
        }
    }

    /// Records `p`'s exit and publishes `TaskExit` once.
    pub(super) fn record_exit(&self, container_id: &str, p: &mut Process, info: ExitInfo) {
        if p.set_exited(info) {
            tracing::debug!(container = container_id, id = %p.id, pid = p.pid, status = info.status, "process exited");
            self.publisher.publish(
                topic::TASK_EXIT,
                type_url::TASK_EXIT,
                &TaskExit {
                    container_id: container_id.to_owned(),
                    id: p.id.clone(),
                    pid: p.pid,
                    exit_status: info.status,
                    exited_at: Some(timestamp(info.at)),
                },
            );
        }
    }
}

/// Finds an exit of `pid` that raced a start: stashed by the exit loop, seen by the starter's
/// own subscription, or among recent unmatched exits.
pub(super) fn early_exit(
    unmatched: &mut VecDeque<Exit>,
    p_pending: Option<ExitInfo>,
    pid: u32,
    sub: &mut Subscription,
    since: SystemTime,
) -> Option<ExitInfo> {
    if let Some(info) = p_pending {
        return Some(info);
    }
    let matches = |e: &Exit| u32::try_from(e.pid).ok() == Some(pid);
    if let Some(e) = sub.drain().into_iter().find(|e| matches(e)) {
        return Some(ExitInfo {
            status: e.status,
            at: e.at,
        });
    }
    // Only exits from after the start began: older ones may be an earlier owner of the pid.
    let pos = unmatched
        .iter()
        .rposition(|e| matches(e) && e.at >= since)?;
    let e = unmatched.remove(pos)?;
    Some(ExitInfo {
        status: e.status,
        at: e.at,
    })
}
