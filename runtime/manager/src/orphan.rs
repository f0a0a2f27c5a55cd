//! Stopping a shim the daemon cannot keep (containerd `runtime/v2/shim.go` `delete`, with
//! `cleanupAfterDeadShim` after it): one that answers with no task left gets Shutdown, one that
//! does not answer is killed through the `shim.pid` it wrote in the bundle, and its socket file
//! goes once nothing listens on it. Plain synchronous helpers; callers go through the blocking
//! pool.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::bundle::Bundle;

/// The file a shim's `start` writes its daemonised pid to (containerd's runc shim and ours).
pub const SHIM_PID_FILE: &str = "shim.pid";

/// How long a killed shim may take to go.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// The filesystem path of a shim address (`unix:///path`); `None` for an abstract socket.
pub fn socket_path(address: &str) -> Option<PathBuf> {
    let rest = address.strip_prefix("unix://").unwrap_or(address);
    rest.starts_with('/').then(|| PathBuf::from(rest))
}

/// Removes the socket file at `address` when nobody listens on it any more (the shim was
/// killed, so it could not remove it itself). A socket a live shim still serves (a shim
/// shared by several tasks) stays.
pub fn remove_stale_socket(address: &str) {
    let Some(path) = socket_path(address) else {
        return;
    };
    if UnixStream::connect(&path).is_ok() {
        return;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!(path = %path.display(), "removed stale shim socket"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "remove stale shim socket"),
    }
}

/// True while `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state is the first field after the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// True when `pid` runs a shim of task `id` in namespace `ns`: its command line carries
/// `-namespace <ns>` and `-id <id>` (both shims are started so), so a recycled pid is never
/// killed.
fn is_shim_of(pid: u32, ns: &str, id: &str) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    let has = |flag: &str, value: &str| {
        args.windows(2)
            .any(|w| w[0] == flag.as_bytes() && w[1] == value.as_bytes())
    };
    has("-namespace", ns) && has("-id", id)
}

/// Waits until `pid` is gone; false if it is still there after `wait`.
pub fn wait_gone(pid: u32, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while is_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// SIGKILLs shim `pid` if it still runs the shim of the bundle's task, and waits for it to go.
pub fn kill_shim(bundle: &Bundle, pid: u32) {
    if pid == 0 || !is_alive(pid) || !is_shim_of(pid, &bundle.namespace, &bundle.id) {
        return;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    tracing::warn!(namespace = %bundle.namespace, id = %bundle.id, pid, "killing shim");
    if let Err(e) = kill(Pid::from_raw(raw), Signal::SIGKILL) {
        tracing::warn!(namespace = %bundle.namespace, id = %bundle.id, pid, error = %e, "kill shim");
        return;
    }
    if !wait_gone(pid, KILL_WAIT) {
        tracing::warn!(namespace = %bundle.namespace, id = %bundle.id, pid, "killed shim still there");
    }
}

/// The pid in the bundle's `shim.pid`, 0 when there is none.
pub fn recorded_pid(bundle: &Bundle) -> u32 {
    read_pid(&bundle.path.join(SHIM_PID_FILE))
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn socket_paths() {
        assert_eq!(
            socket_path("unix:///run/x/s/ab"),
            Some(PathBuf::from("/run/x/s/ab"))
        );
        assert_eq!(socket_path("unix://@abstract"), None);
    }

    #[test]
    fn only_dead_sockets_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let live = d.path().join("live");
        let _listener = UnixListener::bind(&live).unwrap();
        remove_stale_socket(&format!("unix://{}", live.display()));
        assert!(live.exists());
        let dead = d.path().join("dead");
        drop(UnixListener::bind(&dead).unwrap());
        remove_stale_socket(&format!("unix://{}", dead.display()));
        assert!(!dead.exists());
    }

    #[test]
    fn kills_only_the_shim_of_the_task() {
        let d = tempfile::tempdir().unwrap();
        let b = Bundle::locate(d.path(), d.path(), "ns1", "c1").unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        kill_shim(&b, other.id());
        assert!(
            is_alive(other.id()),
            "a process of another command is spared"
        );
        let mut shim = std::process::Command::new("sh")
            .args(["-c", "sleep 30; true", "-namespace", "ns1", "-id", "c1"])
            .spawn()
            .unwrap();
        // sh's own argv keeps the trailing arguments as $0.. : the flags are on its cmdline.
        let pid = shim.id();
        std::thread::sleep(Duration::from_millis(50));
        let reaper = std::thread::spawn(move || shim.wait());
        kill_shim(&b, pid);
        reaper.join().unwrap().unwrap();
        assert!(!is_alive(pid));
        other.kill().unwrap();
        other.wait().unwrap();
        assert_eq!(recorded_pid(&b), 0);
    }
}
