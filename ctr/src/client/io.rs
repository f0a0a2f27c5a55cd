//! Process I/O on the client side, as containerd's `cio` package does it for ctr: the client
//! makes `<fifo dir>/<random>/<id>-std{in,out,err}` FIFOs, hands their paths to the daemon, and
//! copies its own stdin into the stdin FIFO and the stdout/stderr FIFOs to its stdout/stderr
//! (`cio/io_unix.go` `copyIO`). With a terminal, stderr is unused and the local terminal is put in
//! raw mode.
//!
//! The copies run on plain threads with blocking opens, as the `fifo` package's non-blocking
//! opens do in goroutines: an open waits until the shim opens the other end, reads end at EOF
//! once the shim closes its side, and a thread still blocked on stdin never holds up the exit.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result};
use nix::sys::stat::Mode;
use nix::sys::termios::{self, SetArg, Termios};

/// containerd's `defaults.DefaultFIFODir`.
pub const DEFAULT_FIFO_DIR: &str = "/run/containerd/fifo";

/// The FIFO paths of one process (`cio.Config`); empty strings mean "not used".
#[derive(Debug, Clone, Default)]
pub struct FifoSet {
    /// The private directory holding the FIFOs, removed with [`FifoSet::remove`].
    pub dir: Option<PathBuf>,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// A random directory name like Go's `os.MkdirTemp(root, "")`.
fn random_name() -> String {
    let id = uuid::Uuid::new_v4();
    let mut n = u64::from_le_bytes(id.as_bytes()[..8].try_into().unwrap_or([0; 8]));
    let mut s = String::new();
    for _ in 0..9 {
        s.push(char::from(b'0' + (n % 10) as u8));
        n /= 10;
    }
    s
}

fn mkfifo(path: &Path) -> Result<()> {
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o700))
        .with_context(|| format!("cannot create FIFO {}", path.display()))
}

impl FifoSet {
    /// `cio.NewFIFOSetInDir(root, id, terminal)` plus the FIFOs themselves: stdin and stdout
    /// always, stderr unless `terminal`.
    pub fn create(root: Option<&str>, id: &str, terminal: bool) -> Result<Self> {
        let root = PathBuf::from(root.filter(|r| !r.is_empty()).unwrap_or(DEFAULT_FIFO_DIR));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .with_context(|| format!("cannot create the FIFO directory {}", root.display()))?;
        let dir = loop {
            let dir = root.join(random_name());
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", dir.display()))
                }
            }
        };
        let path = |suffix: &str| dir.join(format!("{id}-{suffix}"));
        let set = Self {
            stdin: path("stdin").to_string_lossy().into_owned(),
            stdout: path("stdout").to_string_lossy().into_owned(),
            stderr: if terminal {
                String::new()
            } else {
                path("stderr").to_string_lossy().into_owned()
            },
            terminal,
            dir: Some(dir.clone()),
        };
        let made = [&set.stdin, &set.stdout, &set.stderr]
            .into_iter()
            .filter(|p| !p.is_empty())
            .try_for_each(|p| mkfifo(Path::new(p)));
        if let Err(err) = made {
            set.remove();
            return Err(err);
        }
        Ok(set)
    }

    /// The paths of an existing process (attach), created by whoever started it.
    pub fn existing(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Self {
        Self {
            dir: None,
            stdin: stdin.to_owned(),
            stdout: stdout.to_owned(),
            stderr: if terminal {
                String::new()
            } else {
                stderr.to_owned()
            },
            terminal,
        }
    }

    /// Removes the FIFO directory (the `closer` of `NewFIFOSetInDir`).
    pub fn remove(&self) {
        if let Some(dir) = &self.dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Removes the FIFOs of a deleted process when they are FIFOs in a directory of their own, as
/// the `FIFOSet` closer of the client that created them would have.
pub fn remove_fifos(paths: &[&str]) {
    let mut dirs = Vec::new();
    for p in paths.iter().filter(|p| !p.is_empty()) {
        let path = Path::new(p);
        let is_fifo = fs::symlink_metadata(path)
            .map(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()))
            .unwrap_or(false);
        if is_fifo && fs::remove_file(path).is_ok() {
            if let Some(dir) = path.parent() {
                dirs.push(dir.to_path_buf());
            }
        }
    }
    for dir in dirs {
        // Only succeeds once the directory is empty.
        let _ = fs::remove_dir(dir);
    }
}

/// Copying between the local stdio and a process's FIFOs.
#[derive(Debug)]
pub struct Attached {
    outputs: Vec<mpsc::Receiver<()>>,
    /// Fires once local stdin reached EOF and the stdin FIFO was closed.
    pub stdin_closed: Option<tokio::sync::oneshot::Receiver<()>>,
}

fn copy_out(path: String, mut to: impl Write + Send + 'static) -> mpsc::Receiver<()> {
    let (done, rx) = mpsc::channel();
    thread::spawn(move || {
        if let Ok(mut fifo) = File::open(&path) {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match fifo.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        let _ = to.flush();
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        }
        let _ = done.send(());
    });
    rx
}

impl Attached {
    /// Starts copying: local stdin → `fifos.stdin`, `fifos.stdout` → local stdout,
    /// `fifos.stderr` → local stderr.
    pub fn start(fifos: &FifoSet) -> Self {
        let mut outputs = Vec::new();
        if !fifos.stdout.is_empty() {
            outputs.push(copy_out(fifos.stdout.clone(), io::stdout()));
        }
        if !fifos.stderr.is_empty() {
            outputs.push(copy_out(fifos.stderr.clone(), io::stderr()));
        }
        let stdin_closed = (!fifos.stdin.is_empty()).then(|| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let path = fifos.stdin.clone();
            thread::spawn(move || {
                if let Ok(mut fifo) = OpenOptions::new()
                    .write(true)
                    .custom_flags(nix::libc::O_CLOEXEC)
                    .open(&path)
                {
                    let _ = io::copy(&mut io::stdin().lock(), &mut fifo);
                }
                let _ = tx.send(());
            });
            rx
        });
        Self {
            outputs,
            stdin_closed,
        }
    }

    /// Waits up to `limit` for stdout and stderr to reach EOF (the shim closes them once the
    /// process and its output are done).
    pub async fn wait_outputs(self, limit: Duration) {
        let outputs = self.outputs;
        let _ = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + limit;
            for rx in outputs {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let _ = rx.recv_timeout(left);
            }
        })
        .await;
    }
}

/// The local terminal in raw mode; restored on drop (`console.Current().SetRaw()` / `Reset`).
#[derive(Debug)]
pub struct RawTerminal {
    saved: Option<Termios>,
}

impl RawTerminal {
    /// Puts stdin in raw mode when it is a terminal.
    pub fn enable() -> Result<Self> {
        let stdin = io::stdin();
        let fd = stdin.as_fd();
        if !nix::unistd::isatty(fd).unwrap_or(false) {
            return Ok(Self { saved: None });
        }
        let saved = termios::tcgetattr(fd).context("cannot read the terminal settings")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).context("cannot set the terminal raw")?;
        Ok(Self { saved: Some(saved) })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

nix::ioctl_read_bad!(tiocgwinsz, nix::libc::TIOCGWINSZ, nix::libc::winsize);

/// The size of the local terminal as (width, height), if stdout or stdin is one.
pub fn terminal_size() -> Option<(u32, u32)> {
    use std::os::fd::AsRawFd;
    for fd in [io::stdin().as_raw_fd(), io::stdout().as_raw_fd()] {
        let mut ws = nix::libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` into the valid, exclusively borrowed `ws`; a fd
        // that is not a terminal makes the ioctl fail without touching it.
        if unsafe { tiocgwinsz(fd, &mut ws) }.is_ok() && ws.ws_col > 0 {
            return Some((u32::from(ws.ws_col), u32::from(ws.ws_row)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_set_layout() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("fifo");
        let set = FifoSet::create(root.to_str(), "c1", false).unwrap();
        let d = set.dir.clone().unwrap();
        assert_eq!(d.parent().unwrap(), root);
        assert!(set.stdin.ends_with("/c1-stdin"));
        assert!(set.stdout.ends_with("/c1-stdout"));
        assert!(set.stderr.ends_with("/c1-stderr"));
        let meta = fs::metadata(&set.stdout).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()));
        let tty = FifoSet::create(root.to_str(), "c2", true).unwrap();
        assert!(tty.stderr.is_empty());
        set.remove();
        assert!(!d.exists());
        remove_fifos(&[&tty.stdin, &tty.stdout]);
        assert!(!tty.dir.unwrap().exists());
    }

    #[test]
    fn output_copies_until_eof() {
        let dir = tempfile::tempdir().unwrap();
        let set = FifoSet::create(dir.path().to_str(), "x", false).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        struct Sink(std::sync::mpsc::Sender<Vec<u8>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                let _ = self.0.send(b.to_vec());
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let done = copy_out(set.stdout.clone(), Sink(tx));
        let mut w = OpenOptions::new().write(true).open(&set.stdout).unwrap();
        w.write_all(b"hi\n").unwrap();
        drop(w);
        done.recv_timeout(Duration::from_secs(5)).unwrap();
        let got: Vec<u8> = rx.try_iter().flatten().collect();
        assert_eq!(got, b"hi\n");
    }
}
