//! The `start` action: find or create the shim socket for the task's group, launch the
//! daemonised shim on it, and print its address (containerd `runtime/v2/runc/manager`
//! `Start`). The daemon reads stdout and stderr together, so nothing else is printed.

use std::io::Read as _;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use prost::Message;

use crate::args::Args;
use crate::bundle::{decode_options, group_id};
use crate::constants::bundle;
use crate::socket::socket_path;

/// Why `start` failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file or socket operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// Its object.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StartError {
    let path = path.into();
    move |source| StartError::Io { op, path, source }
}

/// Binds the socket at `path`, reusing a live shim's socket instead when one answers.
/// Returns `None` when a live shim already listens there.
fn bind(path: &Path) -> Result<Option<UnixListener>, StartError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io_err("mkdir", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err("chmod", dir))?;
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Ok(None);
            }
            std::fs::remove_file(path).map_err(io_err("remove stale socket", path))?;
            UnixListener::bind(path).map_err(io_err("listen", path))?
        }
        Err(e) => return Err(io_err("listen", path)(e)),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("chmod", path))?;
    Ok(Some(listener))
}

/// Writes `data` to `path` through a temporary file renamed over it, so that a process killed
/// at any point leaves the whole file or none. Not fsynced, as berthd's bundle files are not
/// (`Bundle::write_file` in the runtime manager says why): the syncs cost ~4 ms of every shim
/// start with the state dir on ext4.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StartError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::File::create(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, data))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(io_err("write", path))
}

/// Puts the shim into the `shim_cgroup` of the runtime options (best effort).
fn join_shim_cgroup(pid: u32, cgroup: &str) {
    let root = Path::new(crate::cgroup::CGROUP_ROOT);
    let rel = cgroup.trim_start_matches('/');
    let targets: Vec<PathBuf> = if crate::cgroup::is_unified(root) {
        vec![root.join(rel)]
    } else {
        std::fs::read_dir(root)
            .map(|dirs| dirs.flatten().map(|d| d.path().join(rel)).collect())
            .unwrap_or_default()
    };
    for dir in targets.into_iter().filter(|d| d.is_dir()) {
        let _ = std::fs::write(dir.join("cgroup.procs"), pid.to_string());
    }
}

/// The daemonised shim gets an OOM score one above ours (containerd `AdjustOOMScore`).
fn adjust_oom_score(pid: u32) {
    let own = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    let score = (own + 1).min(1000);
    let _ = std::fs::write(format!("/proc/{pid}/oom_score_adj"), score.to_string());
}

/// Runs the `start` action; the address is written to `out`.
pub fn run(args: &Args, out: &mut impl std::io::Write) -> Result<(), StartError> {
    let cwd = std::env::current_dir().map_err(io_err("getcwd", "."))?;
    let spec = std::fs::read(cwd.join(bundle::CONFIG)).unwrap_or_default();
    let group = group_id(&spec).unwrap_or_else(|| args.id.clone());
    let path = socket_path(&args.address, &args.namespace, &group);
    let address = format!("unix://{}", path.display());
    let address_file = cwd.join(bundle::ADDRESS);

    let Some(listener) = bind(&path)? else {
        write_atomic(&address_file, address.as_bytes())?;
        out.write_all(address.as_bytes())
            .map_err(io_err("write", "stdout"))?;
        return Ok(());
    };
    let cleanup = |e: StartError| {
        let _ = std::fs::remove_file(&path);
        e
    };
    // Written before the shim exists, so that a daemon killed from here on finds
    // the shim it started.
    write_atomic(&address_file, address.as_bytes()).map_err(cleanup)?;

    let exe = std::env::current_exe().map_err(io_err("resolve", "/proc/self/exe"))?;
    let mut cmd = Command::new(&exe);
    cmd.args([
        "-namespace",
        &args.namespace,
        "-id",
        &args.id,
        "-address",
        &args.address,
    ]);
    if !args.publish_binary.is_empty() {
        cmd.args(["-publish-binary", &args.publish_binary]);
    }
    if args.debug {
        cmd.arg("-debug");
    }
    cmd.current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let fd = listener.as_raw_fd();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (setsid, dup2, fcntl) on descriptors that exist in the child.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if fd == 3 {
                if nix::libc::fcntl(3, nix::libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if nix::libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The shim is not our child for long: we exit right away and it is reparented.
    let child = cmd.spawn().map_err(io_err("exec", &exe)).map_err(cleanup)?;
    drop(listener);
    let pid_file = cwd.join(bundle::SHIM_PID);
    if let Err(e) = write_atomic(&pid_file, child.id().to_string().as_bytes()) {
        // Without the pid file a daemon can still shut the shim down through its socket.
        tracing::warn!(error = %e, "record shim pid");
    }

    let mut input = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut input);
    if !input.is_empty() {
        if let Ok(any) = prost_types::Any::decode(&*input) {
            if let Ok(opts) = decode_options(Some(&any)) {
                if !opts.shim_cgroup.is_empty() {
                    join_shim_cgroup(child.id(), &opts.shim_cgroup);
                }
            }
        }
    }
    adjust_oom_score(child.id());
    out.write_all(address.as_bytes())
        .map_err(io_err("write", "stdout"))?;
    out.flush().map_err(io_err("write", "stdout"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn bind_reuses_live_socket_and_replaces_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s").join("abc");
        let first = bind(&path).unwrap().expect("fresh socket");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        // A shim listens: reuse it.
        assert!(bind(&path).unwrap().is_none());
        // The shim died and left its socket file: replace it.
        drop(first);
        assert!(bind(&path).unwrap().is_some());
    }
}
