//! The shim's one exit monitor: it is the child subreaper for the container processes, reaps
//! every child with `waitpid(-1)` on SIGCHLD and hands each exit to all subscribers.
//!
//! Processes the shim starts itself (runc) are spawned through [`Reaper::spawn`], which
//! subscribes before the fork, so their exit status cannot be lost to the reaping loop, as
//! go-runc's `Monitor` and rust-extensions `asynchronous/monitor.rs` do. Nothing in the shim
//! may call `wait` on a child itself; `std::process` is used rather than `tokio::process`
//! because tokio's orphan queue would `waitpid` pids that are ours.

use std::process::{Child, Command};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// One reaped child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The pid that exited.
    pub pid: i32,
    /// Exit code, or 128 + signal number.
    pub status: u32,
    /// When it was reaped.
    pub at: SystemTime,
}

/// Maps a wait status to containerd's exit status: the code, or 128 + signal.
pub fn exit_status(status: WaitStatus) -> Option<(i32, u32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), u32::try_from(code).unwrap_or(255))),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), 128 + sig as u32)),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct Subscribers {
    next: u64,
    list: Vec<(u64, mpsc::UnboundedSender<Exit>)>,
}

/// Handle to the exit monitor; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Reaper {
    subscribers: Arc<Mutex<Subscribers>>,
}

/// A stream of every exit reaped while it is alive.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    rx: mpsc::UnboundedReceiver<Exit>,
    reaper: Reaper,
}

impl Subscription {
    /// The next exit; `None` only if the monitor stopped.
    pub async fn recv(&mut self) -> Option<Exit> {
        self.rx.recv().await
    }

    /// Exits already received, without waiting.
    pub fn drain(&mut self) -> Vec<Exit> {
        let mut out = Vec::new();
        while let Ok(exit) = self.rx.try_recv() {
            out.push(exit);
        }
        out
    }

    /// Waits for the exit of `pid`.
    pub async fn wait_for(&mut self, pid: i32) -> Option<Exit> {
        while let Some(exit) = self.recv().await {
            if exit.pid == pid {
                return Some(exit);
            }
        }
        None
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = self.reaper.lock();
        subs.list.retain(|(id, _)| *id != self.id);
    }
}

impl Reaper {
    /// A monitor with no reaping loop yet; see [`Reaper::run`].
    pub fn new() -> Reaper {
        Reaper::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribes to every exit from now on.
    pub fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = self.lock();
        subs.next += 1;
        let id = subs.next;
        subs.list.push((id, tx));
        Subscription {
            id,
            rx,
            reaper: self.clone(),
        }
    }

    fn dispatch(&self, exit: Exit) {
        let subs = self.lock();
        for (_, tx) in &subs.list {
            // A closed receiver is removed when its Subscription drops.
            let _ = tx.send(exit);
        }
    }

    /// Spawns `cmd` with its exit routed through the monitor: the returned subscription was
    /// taken before the fork, so `wait_for(child.id())` always sees the exit.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<(Child, Subscription)> {
        let sub = self.subscribe();
        let child = cmd.spawn()?;
        Ok((child, sub))
    }

    /// Reaps all exited children now; returns how many.
    pub fn reap_now(&self) -> usize {
        let mut count = 0;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(status) => {
                    if let Some((pid, code)) = exit_status(status) {
                        count += 1;
                        self.dispatch(Exit {
                            pid,
                            status: code,
                            at: SystemTime::now(),
                        });
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(err) => {
                    tracing::warn!(error = %err, "waitpid");
                    break;
                }
            }
        }
        count
    }

    /// Installs the SIGCHLD handler and spawns the reaping loop on the current runtime.
    pub fn run(&self) -> std::io::Result<()> {
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = self.clone();
        // Children that exited before the handler existed.
        reaper.reap_now();
        tokio::spawn(async move {
            while sigchld.recv().await.is_some() {
                reaper.reap_now();
            }
        });
        Ok(())
    }
}

/// Makes this process the subreaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`).
pub fn set_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Serialises unit tests that fork: each runs its own `waitpid(-1)` loop, which would reap
/// the other test's children.
#[cfg(test)]
pub static TEST_FORK_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use nix::sys::signal::Signal;

    use super::*;

    #[test]
    fn exit_status_mapping() {
        let pid = Pid::from_raw(42);
        assert_eq!(exit_status(WaitStatus::Exited(pid, 7)), Some((42, 7)));
        assert_eq!(
            exit_status(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some((42, 137))
        );
        assert_eq!(
            exit_status(WaitStatus::Signaled(pid, Signal::SIGTERM, true)),
            Some((42, 143))
        );
        assert_eq!(exit_status(WaitStatus::StillAlive), None);
    }

    #[tokio::test]
    async fn spawned_exit_is_not_lost() {
        let _serial = TEST_FORK_LOCK.lock().await;
        let reaper = Reaper::new();
        reaper.run().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]).stdin(Stdio::null());
        let (child, mut sub) = reaper.spawn(&mut cmd).unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let exit = sub.wait_for(pid).await.unwrap();
        assert_eq!(exit.status, 3);
    }
}
