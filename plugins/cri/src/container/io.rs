//! The FIFOs a task's stdio goes through (containerd `pkg/cri/io`, `cio.NewFIFOSetInDir`):
//! `<cri state>/io/<container id>/{stdin,stdout,stderr}` for the container,
//! `<exec id>-{stdout,stderr}` beside them for an exec. The shim opens the write ends and keeps
//! them across daemon restarts; berthd opens the read ends (again, after a restart).

use std::path::{Path, PathBuf};

use berth_runtime::TaskIo;
use nix::sys::stat::Mode;

use crate::error::{CriError, Result};

/// `<cri state>/io/<id>`: the FIFOs of container `id` and its execs.
pub fn io_dir(state: &Path, id: &str) -> PathBuf {
    state.join("io").join(id)
}

/// The FIFO paths of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FifoSet {
    /// stdin, when the process has one.
    pub stdin: Option<PathBuf>,
    /// stdout.
    pub stdout: PathBuf,
    /// stderr, `None` with a terminal (it goes to stdout).
    pub stderr: Option<PathBuf>,
    /// Whether the process has a terminal.
    pub terminal: bool,
}

impl FifoSet {
    /// A container's FIFOs.
    pub fn container(state: &Path, id: &str, tty: bool, stdin: bool) -> FifoSet {
        let dir = io_dir(state, id);
        FifoSet {
            stdin: stdin.then(|| dir.join("stdin")),
            stdout: dir.join("stdout"),
            stderr: (!tty).then(|| dir.join("stderr")),
            terminal: tty,
        }
    }

    /// An exec's FIFOs: `<exec id>-stdin` when it has stdin, no stderr on a terminal
    /// (ExecSync: neither).
    pub fn exec(state: &Path, id: &str, exec_id: &str, tty: bool, stdin: bool) -> FifoSet {
        let dir = io_dir(state, id);
        FifoSet {
            stdin: stdin.then(|| dir.join(format!("{exec_id}-stdin"))),
            stdout: dir.join(format!("{exec_id}-stdout")),
            stderr: (!tty).then(|| dir.join(format!("{exec_id}-stderr"))),
            terminal: tty,
        }
    }

    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.stdin
            .iter()
            .chain(std::iter::once(&self.stdout))
            .chain(self.stderr.iter())
    }

    /// Makes the FIFOs (mode 0600, their directory 0700); an old one at a path is replaced.
    /// Blocking.
    pub fn create(&self) -> Result<()> {
        if let Some(dir) = self.stdout.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| CriError::io("create io directory", dir, e))?;
        }
        for path in self.paths() {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(CriError::io("remove old fifo", path, e)),
            }
            nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600))
                .map_err(|e| CriError::io("create fifo", path, e.into()))?;
        }
        Ok(())
    }

    /// Removes the FIFOs. Blocking.
    pub fn remove(&self) {
        for path in self.paths() {
            if let Err(e) = std::fs::remove_file(path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "remove fifo");
                }
            }
        }
    }

    /// The paths as the task gets them.
    pub fn task_io(&self) -> TaskIo {
        let text = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        TaskIo {
            stdin: text(&self.stdin),
            stdout: self.stdout.display().to_string(),
            stderr: text(&self.stderr),
            terminal: self.terminal,
        }
    }
}

/// Removes container `id`'s FIFO directory. Blocking.
pub fn remove_io_dir(state: &Path, id: &str) -> Result<()> {
    let dir = io_dir(state, id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CriError::io("remove io directory", &dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt;

    use super::*;

    #[test]
    fn container_and_exec_fifos() {
        let d = tempfile::tempdir().unwrap();
        let c = FifoSet::container(d.path(), "c1", false, true);
        c.create().unwrap();
        c.create().unwrap();
        for p in c.paths() {
            assert!(std::fs::metadata(p).unwrap().file_type().is_fifo(), "{p:?}");
        }
        let io = c.task_io();
        assert!(io.stdin.ends_with("/io/c1/stdin"));
        assert!(io.stderr.ends_with("/io/c1/stderr"));
        let tty = FifoSet::container(d.path(), "c1", true, false);
        assert_eq!(tty.task_io().stderr, "");
        let e = FifoSet::exec(d.path(), "c1", "e1", false, false);
        e.create().unwrap();
        assert!(e.task_io().stdout.ends_with("/io/c1/e1-stdout"));
        assert!(e.task_io().stderr.ends_with("/io/c1/e1-stderr"));
        assert_eq!(e.task_io().stdin, "");
        let t = FifoSet::exec(d.path(), "c1", "e2", true, true);
        assert!(t.task_io().stdin.ends_with("/io/c1/e2-stdin"));
        assert_eq!(t.task_io().stderr, "");
        assert!(t.terminal);
        e.remove();
        assert!(!e.stdout.exists());
        remove_io_dir(d.path(), "c1").unwrap();
        remove_io_dir(d.path(), "c1").unwrap();
        assert!(!io_dir(d.path(), "c1").exists());
    }
}
