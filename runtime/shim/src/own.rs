//! What `runc start` and `runc delete` do, done by the shim itself where it knows the container's
//! state, so that a lifecycle starts one runtime process (`runc create`) instead of three.
//!
//! runc 1.1 (`libcontainer/container_linux.go` `exec`, `state_linux.go` `destroy`,
//! `cgroups/utils.go` `RemovePath`):
//! - `start` of a created container opens `<root>/<id>/exec.fifo` for reading, reads until the
//!   init process closes its end at `execve` (it wrote one byte first), then removes the FIFO: a
//!   container whose FIFO is gone is running.
//! - `delete` of a stopped container kills what is left in its cgroups when it had no PID
//!   namespace of its own, removes the cgroup directories listed in `state.json`
//!   (`cgroup_paths`, children first, retrying while busy), the Intel RDT group, the state
//!   directory, and runs the poststop hooks.
//!
//! The shim does this only when nothing of it needs runc's knowledge: the state directory is
//! runc's (`state.json`; crun keeps a `status` file and is always driven through its CLI), the
//! cgroups are cgroupfs (not systemd units), and the spec has no poststart or poststop hooks,
//! no Intel RDT and a PID namespace of its own ([`Eligibility`]). Everything else goes
//! through the runtime's CLI as before.
//!
//! Crash safety of the delete: the cgroups go first (removing them again is harmless, and the
//! state stays loadable by `runc delete --force`), the state directory last. A shim killed
//! between the two leaves a state directory that the `delete` action, run for a dead shim,
//! removes with `runc delete --force`; one killed while the directory is half removed leaves a
//! directory without `state.json`, which the `delete` action removes too ([`remove_leftover`]).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::ShimError;

/// runc's state file in `<root>/<id>`.
pub const RUNC_STATE: &str = "state.json";
/// runc's FIFO that holds the created init process before `execve`.
pub const EXEC_FIFO: &str = "exec.fifo";

/// How often the FIFO wait checks that the init process is still alive.
const ALIVE_CHECK: Duration = Duration::from_millis(50);

/// What the spec allows the shim to do without the runtime's CLI.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Eligibility {
    /// `start` through the FIFO: no poststart hooks (runc 1.2 runs them in `runc start`).
    pub start: bool,
    /// `delete` of a stopped container: no poststop hooks, no Intel RDT, an own PID namespace,
    /// cgroupfs.
    pub delete: bool,
}

/// The parts of an OCI spec that decide [`Eligibility`] and kill-all-on-exit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecFacts {
    /// Other processes must be killed when init exits (no PID namespace of its own).
    pub kill_all_on_exit: bool,
    /// `hooks.poststart` is not empty.
    pub poststart_hooks: bool,
    /// `hooks.poststop` is not empty.
    pub poststop_hooks: bool,
    /// `linux.intelRdt` is set.
    pub intel_rdt: bool,
}

impl SpecFacts {
    /// Reads the facts from `config.json`'s bytes; an unreadable spec gives the cautious answer
    /// (kill all, hooks assumed, so nothing is done without the CLI).
    pub fn of(spec_json: Option<&[u8]>) -> SpecFacts {
        #[derive(serde::Deserialize)]
        struct Spec {
            #[serde(default)]
            hooks: Option<Hooks>,
            #[serde(default)]
            linux: Option<Linux>,
        }
        #[derive(serde::Deserialize)]
        struct Hooks {
            #[serde(default)]
            poststart: Option<Vec<serde_json::Value>>,
            #[serde(default)]
            poststop: Option<Vec<serde_json::Value>>,
        }
        #[derive(serde::Deserialize)]
        struct Linux {
            #[serde(default)]
            namespaces: Vec<Namespace>,
            #[serde(default, rename = "intelRdt")]
            intel_rdt: Option<serde_json::Value>,
        }
        #[derive(serde::Deserialize)]
        struct Namespace {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            path: String,
        }
        let Some(spec) = spec_json.and_then(|b| serde_json::from_slice::<Spec>(b).ok()) else {
            tracing::warn!("cannot read the bundle spec; assuming hooks and kill-all-on-exit");
            return SpecFacts {
                kill_all_on_exit: true,
                poststart_hooks: true,
                poststop_hooks: true,
                intel_rdt: true,
            };
        };
        let nonempty =
            |v: &Option<Vec<serde_json::Value>>| v.as_ref().is_some_and(|v| !v.is_empty());
        let (poststart_hooks, poststop_hooks) = spec.hooks.as_ref().map_or((false, false), |h| {
            (nonempty(&h.poststart), nonempty(&h.poststop))
        });
        let own_pid_ns = spec.linux.as_ref().is_some_and(|l| {
            l.namespaces
                .iter()
                .any(|ns| ns.kind == "pid" && ns.path.is_empty())
        });
        SpecFacts {
            kill_all_on_exit: !own_pid_ns,
            poststart_hooks,
            poststop_hooks,
            intel_rdt: spec
                .linux
                .as_ref()
                .is_some_and(|l| l.intel_rdt.as_ref().is_some_and(|v| !v.is_null())),
        }
    }

    /// What the shim may do itself for a container of this spec whose runtime keeps its state
    /// in `state_dir`, with the systemd cgroup driver or not.
    pub fn eligibility(&self, state_dir: &Path, systemd_cgroup: bool) -> Eligibility {
        if !state_dir.join(RUNC_STATE).is_file() {
            // Not runc's state (crun): its CLI knows its own layout.
            return Eligibility::default();
        }
        Eligibility {
            start: !self.poststart_hooks,
            delete: !systemd_cgroup
                && !self.poststop_hooks
                && !self.intel_rdt
                && !self.kill_all_on_exit,
        }
    }
}

/// Why the shim's own start or delete failed.
#[derive(Debug, thiserror::Error)]
pub enum OwnError {
    /// A filesystem or system call failed.
    #[error(transparent)]
    Io(#[from] ShimError),
    /// The init process died before it was started (runc's wording).
    #[error("container process is already dead")]
    Dead,
    /// The FIFO said nothing: the container is running already (runc's wording).
    #[error("cannot start an already running container")]
    AlreadyRunning,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> OwnError {
    let path = path.to_owned();
    move |source| OwnError::Io(ShimError::io(op, path, source))
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself hold ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// `runc start` of the created container whose state is in `state_dir` and whose init process
/// is `pid`: reads the exec FIFO until init closes it at `execve`, then removes it. Blocking.
pub fn start(state_dir: &Path, pid: u32) -> Result<(), OwnError> {
    let fifo = state_dir.join(EXEC_FIFO);
    // Non-blocking, so that an init that died before opening its end cannot hang us; Linux
    // reports no hang-up on a FIFO whose writer never came.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(&fifo)
        .map_err(io_err("open", &fifo))?;
    let mut data = Vec::new();
    let mut last_check = Instant::now();
    loop {
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(50u16))
            .map_err(|e| io_err("poll", &fifo)(e.into()))?;
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if ready > 0 && revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
            let mut buf = [0u8; 64];
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => data.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("read", &fifo)(e)),
            }
            continue;
        }
        if last_check.elapsed() >= ALIVE_CHECK || ready == 0 {
            last_check = Instant::now();
            if data.is_empty() && !alive(pid) {
                return Err(OwnError::Dead);
            }
        }
    }
    if data.is_empty() {
        return Err(OwnError::AlreadyRunning);
    }
    std::fs::remove_file(&fifo).map_err(io_err("remove", &fifo))
}

/// The part of runc's `state.json` the delete needs.
#[derive(Debug, Default, serde::Deserialize)]
struct RuncState {
    #[serde(default)]
    cgroup_paths: BTreeMap<String, String>,
}

/// `rmdir`, with a missing directory counted as removed.
fn rmdir(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// runc's `RemovePath`: the cgroup directory, its child cgroups first.
fn remove_cgroup_tree(path: &Path) -> std::io::Result<()> {
    if rmdir(path).is_ok() {
        return Ok(());
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    rmdir(path)
}

/// runc's `RemovePaths`: each path, retried five times from 10 ms doubling while busy.
fn remove_cgroups(paths: &BTreeMap<String, String>) -> std::io::Result<()> {
    let mut delay = Duration::from_millis(10);
    let mut left: Vec<&String> = paths.values().collect();
    left.sort();
    left.dedup();
    for attempt in 0..5 {
        let mut failed = Vec::new();
        let mut last = None;
        for path in left {
            if let Err(e) = remove_cgroup_tree(Path::new(path)) {
                failed.push(path);
                last = Some(e);
            }
        }
        match last {
            None => return Ok(()),
            Some(e) if attempt == 4 => return Err(e),
            Some(_) => {}
        }
        left = failed;
        std::thread::sleep(delay);
        delay *= 2;
    }
    Ok(())
}

/// `runc delete` of the stopped container whose state is in `state_dir`: its cgroups, then the
/// state directory. A state directory already gone is not an error (as `delete --force`).
/// Blocking.
pub fn delete(state_dir: &Path) -> Result<(), OwnError> {
    let state_file = state_dir.join(RUNC_STATE);
    let state: RuncState = match std::fs::read(&state_file) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|e| io_err("parse", &state_file)(e.into()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => RuncState::default(),
        Err(e) => return Err(io_err("read", &state_file)(e)),
    };
    // runc logs a failed cgroup removal and goes on (delete.go `destroy`); so do we.
    if let Err(e) = remove_cgroups(&state.cgroup_paths) {
        tracing::warn!(error = %e, "remove the container's cgroups");
    }
    match std::fs::remove_dir_all(state_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("remove", state_dir)(e)),
        _ => Ok(()),
    }
}

/// What a shim killed in the middle of [`delete`] can leave: a state directory without
/// `state.json`, which no runtime recognises (`delete` says it does not exist) but which keeps
/// the id from being created again. Removed; anything else is left to the runtime.
pub fn remove_leftover(state_dir: &Path) {
    if state_dir.is_dir()
        && !state_dir.join(RUNC_STATE).exists()
        && !state_dir.join("status").exists()
    {
        if let Err(e) = std::fs::remove_dir_all(state_dir) {
            tracing::warn!(error = %e, path = %state_dir.display(), "remove leftover runtime state");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_facts() {
        let plain = br#"{"linux":{"namespaces":[{"type":"mount"},{"type":"pid"}]}}"#;
        let f = SpecFacts::of(Some(plain));
        assert_eq!(f, SpecFacts::default());
        let hooks = br#"{"hooks":{"poststart":[{"path":"/x"}],"poststop":[]},"linux":{"namespaces":[{"type":"pid"}],"intelRdt":{"closID":"a"}}}"#;
        let f = SpecFacts::of(Some(hooks));
        assert!(f.poststart_hooks && !f.poststop_hooks && f.intel_rdt && !f.kill_all_on_exit);
        let host_pid = br#"{"linux":{"namespaces":[{"type":"pid","path":"/proc/1/ns/pid"}]}}"#;
        assert!(SpecFacts::of(Some(host_pid)).kill_all_on_exit);
        let bad = SpecFacts::of(Some(b"nope"));
        assert!(bad.kill_all_on_exit && bad.poststart_hooks && bad.poststop_hooks);
        assert!(SpecFacts::of(None).kill_all_on_exit);
    }

    #[test]
    fn eligibility_needs_runc_state_and_a_plain_spec() {
        let dir = tempfile::tempdir().unwrap();
        let plain = SpecFacts::default();
        assert_eq!(plain.eligibility(dir.path(), false), Eligibility::default());
        std::fs::write(dir.path().join(RUNC_STATE), "{}").unwrap();
        let both = Eligibility {
            start: true,
            delete: true,
        };
        assert_eq!(plain.eligibility(dir.path(), false), both);
        assert!(!plain.eligibility(dir.path(), true).delete);
        let poststop = SpecFacts {
            poststop_hooks: true,
            ..SpecFacts::default()
        };
        assert_eq!(
            poststop.eligibility(dir.path(), false),
            Eligibility {
                start: true,
                delete: false
            }
        );
        let shared_pid = SpecFacts {
            kill_all_on_exit: true,
            ..SpecFacts::default()
        };
        assert!(!shared_pid.eligibility(dir.path(), false).delete);
    }

    #[test]
    fn delete_removes_cgroups_children_first_then_the_state() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = tmp.path().join("cg/memory/ns/id");
        std::fs::create_dir_all(cg.join("child/grandchild")).unwrap();
        let cg2 = tmp.path().join("cg/pids/ns/id");
        std::fs::create_dir_all(&cg2).unwrap();
        let state = tmp.path().join("root/id");
        std::fs::create_dir_all(&state).unwrap();
        let json = serde_json::json!({
            "id": "id",
            "cgroup_paths": {"memory": cg, "pids": cg2, "cpu": tmp.path().join("cg/cpu/gone")},
        });
        std::fs::write(state.join(RUNC_STATE), json.to_string()).unwrap();
        delete(&state).unwrap();
        assert!(!cg.exists() && !cg2.exists() && !state.exists());
        assert!(tmp.path().join("cg/memory/ns").is_dir());
        // Again: everything is gone already.
        delete(&state).unwrap();
    }

    #[test]
    fn leftovers_without_state_go_others_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let half = tmp.path().join("half");
        std::fs::create_dir_all(&half).unwrap();
        remove_leftover(&half);
        assert!(!half.exists());
        let crun = tmp.path().join("crun");
        std::fs::create_dir_all(&crun).unwrap();
        std::fs::write(crun.join("status"), "{}").unwrap();
        remove_leftover(&crun);
        assert!(crun.exists());
        remove_leftover(&tmp.path().join("never"));
    }

    #[test]
    fn start_reads_the_fifo_and_removes_it() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join(EXEC_FIFO);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let writer_path = fifo.clone();
        let writer = std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .open(&writer_path)
                .unwrap();
            std::io::Write::write_all(&mut w, b"0").unwrap();
        });
        start(tmp.path(), std::process::id()).unwrap();
        writer.join().unwrap();
        assert!(!fifo.exists());
        // No FIFO: the container is not in the created state.
        assert!(matches!(
            start(tmp.path(), std::process::id()),
            Err(OwnError::Io(ShimError::Io { op: "open", .. }))
        ));
    }

    #[test]
    fn start_of_a_dead_init_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join(EXEC_FIFO);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // A reaper test's waitpid(-1) running meanwhile would take this child's status.
        let _serial = crate::reaper::TEST_FORK_LOCK.blocking_lock();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(matches!(start(tmp.path(), pid), Err(OwnError::Dead)));
    }
}
