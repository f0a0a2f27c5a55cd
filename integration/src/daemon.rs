//! A real `berthd` on a private temporary root, state dir and socket.

use std::cell::Cell;
use std::fs::{self, File};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use std::{env, thread};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::command::{run_with_timeout, CmdOutput};

/// How long [`Daemon::start`] waits for the socket to accept connections.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`Daemon::stop`] waits for the daemon to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Environment variable overriding the path of the `berthd` binary.
const BERTHD_BIN_ENV: &str = "BERTHD_BIN";

/// Path of the `berthd` binary: `$BERTHD_BIN`, else `target/<profile>/berthd` next to the test
/// executable (which lives in `target/<profile>/deps/`). Panics when the file does not exist.
pub fn berthd_bin() -> PathBuf {
    let path = match env::var_os(BERTHD_BIN_ENV) {
        Some(p) => PathBuf::from(p),
        None => {
            let exe = env::current_exe().expect("the test executable has a path");
            // target/debug/deps/<test>-<hash> -> target/debug/berthd
            exe.parent()
                .and_then(Path::parent)
                .map(|dir| dir.join("berthd"))
                .unwrap_or_else(|| PathBuf::from("berthd"))
        }
    };
    assert!(
        path.is_file(),
        "berthd binary not found at {}: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// `$PATH` with the directory of the `berthd` binary in front, so that the daemon finds the
/// `containerd-shim-berth-v2` built next to it (as a packaged install finds it on `PATH`).
pub fn path_with_binary_dir() -> std::ffi::OsString {
    let bin = berthd_bin();
    let mut dirs: Vec<PathBuf> = bin.parent().map(Path::to_path_buf).into_iter().collect();
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    env::join_paths(dirs).expect("PATH entries contain no `:`")
}

/// Runs `berthd` with exactly `args`, expecting it to exit by itself (usually with an error), and
/// kills it after `timeout` so that a daemon that wrongly starts cannot hang the test.
pub fn spawn_raw(args: &[&str], timeout: Duration) -> CmdOutput {
    let mut cmd = Command::new(berthd_bin());
    cmd.args(args);
    run_with_timeout(cmd, timeout)
}

/// A running `berthd` owning a temporary directory with its root, state, socket, config and log.
///
/// Layout under a short `/tmp/berth-XXXXXX` directory (unix socket paths are limited to 108
/// bytes): `root/`, `state/`, `s.sock`, `config.toml`, `berthd.log` (stdout and stderr of every
/// run, appended). Dropping it kills the daemon and removes the directory; when the test is
/// panicking the log is printed first.
#[derive(Debug)]
pub struct Daemon {
    dir: TempDir,
    root: PathBuf,
    state: PathBuf,
    address: PathBuf,
    config: PathBuf,
    log: PathBuf,
    extra_args: Vec<String>,
    /// Variables set in the daemon's environment from the next spawn on.
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// Set once a panic message has included the log, so drop does not print it again.
    log_shown: Cell<bool>,
}

impl Daemon {
    /// Starts a daemon with a minimal config (`version = 2`) and waits until it is ready.
    #[track_caller]
    pub fn start() -> Self {
        Self::start_with(None, &[])
    }

    /// Starts a daemon with `config_toml` (written verbatim, after a `version = 2` line unless the
    /// text sets `version` itself) and `extra_args` appended to the command line, and waits until
    /// its socket accepts connections. `--config`, `--root`, `--state` and `--address` always
    /// point into the temporary directory.
    #[track_caller]
    pub fn start_with(config_toml: Option<&str>, extra_args: &[&str]) -> Self {
        let mut daemon = Self::prepare(config_toml, extra_args);
        daemon.spawn();
        daemon.wait_ready();
        daemon
    }

    /// Creates the temporary layout and config like [`Daemon::start_with`] but starts nothing, so
    /// that a test can set up files (say a stale socket at [`Daemon::address`]) before the first
    /// [`Daemon::restart`].
    pub fn prepare(config_toml: Option<&str>, extra_args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory under /tmp");
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let address = dir.path().join("s.sock");
        let config = dir.path().join("config.toml");
        let log = dir.path().join("berthd.log");
        let body = config_toml.unwrap_or("");
        let sets_version = body
            .lines()
            .any(|l| l.trim_start().starts_with("version") && l.contains('='));
        let text = if sets_version {
            body.to_owned()
        } else {
            format!("version = 2\n{body}\n")
        };
        fs::write(&config, text).expect("write the daemon config");
        Self {
            dir,
            root,
            state,
            address,
            config,
            log,
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            env: Vec::new(),
            child: None,
            log_shown: Cell::new(false),
        }
    }

    /// Spawns `berthd` with output appended to the log file.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "berthd is already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the daemon log");
        let log_err = log.try_clone().expect("clone the daemon log handle");
        let mut cmd = Command::new(berthd_bin());
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--root")
            .arg(&self.root)
            .arg("--state")
            .arg(&self.state)
            .arg("--address")
            .arg(&self.address)
            .args(&self.extra_args)
            .env("PATH", path_with_binary_dir())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        self.child = Some(child);
    }

    /// Waits until the socket accepts a connection; panics with the log if the daemon exits first
    /// or the deadline passes.
    #[track_caller]
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "berthd exited before its socket {} was ready: {status}\n{}",
                    self.address.display(),
                    self.log_banner()
                );
            }
            if UnixStream::connect(&self.address).is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "berthd socket {} not ready after {READY_TIMEOUT:?}\n{}",
                    self.address.display(),
                    self.log_banner()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the daemon's first garbage collection (100 ms after start) has run, so that
    /// a test making unleased snapshots or blobs, which that collection may remove as
    /// containerd's would, does not race it. Panics with the log after 10 s.
    #[track_caller]
    pub fn wait_for_startup_collection(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains("garbage collected") {
            assert!(
                Instant::now() < deadline,
                "no startup garbage collection after 10 s\n{}",
                self.log_banner()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reaps the child if it has exited, returning its status.
    fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            Ok(None) => None,
            Err(e) => panic!("cannot wait for berthd: {e}"),
        }
    }

    /// Sets `key` to `value` (`None`: unsets it) in the environment of every later start or
    /// [`Daemon::restart`]; the running daemon is not affected.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_owned(), v.to_owned()));
        }
    }

    /// The gRPC socket path.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The daemon root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The daemon state directory.
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// The config file passed with `--config`.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The temporary directory holding everything of this daemon; a good place for scratch files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process id of the running daemon; panics when it is not running.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("berthd is not running").id()
    }

    /// True while the daemon process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.try_wait();
        self.child.is_some()
    }

    /// Everything the daemon has written to stdout and stderr so far, across restarts.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The log framed for a panic message.
    fn log_banner(&self) -> String {
        self.log_shown.set(true);
        format!(
            "--- berthd log ({}) ---\n{}--- end of berthd log ---",
            self.log.display(),
            self.log()
        )
    }

    /// Sends `sig` to the running daemon.
    fn signal(&self, sig: Signal) {
        let pid = i32::try_from(self.pid()).expect("pid fits in i32");
        signal::kill(Pid::from_raw(pid), sig)
            .unwrap_or_else(|e| panic!("cannot send {sig} to berthd: {e}"));
    }

    /// Kills the daemon with SIGKILL (no chance to clean up) and reaps it. The socket file is
    /// left behind, as after a crash.
    pub fn kill9(&mut self) {
        let Some(mut child) = self.child.take() else {
            panic!("kill9: berthd is not running");
        };
        // The child may have exited on its own already; wait reaps it either way.
        let _ = child.kill();
        child.wait().expect("reap the killed berthd");
    }

    /// Sends SIGTERM and waits for the daemon to exit, returning its status; panics with the log
    /// if it has not exited after 20 s (the daemon is then killed by drop).
    #[track_caller]
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "berthd did not exit {STOP_TIMEOUT:?} after SIGTERM\n{}",
                    self.log_banner()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the daemon again on the same root, state, socket, config and arguments, and waits
    /// until it is ready. A daemon still running is stopped with SIGTERM first (and must exit 0);
    /// a [`Daemon::prepare`]d one is started for the first time.
    #[track_caller]
    pub fn restart(&mut self) {
        if self.is_running() {
            let status = self.stop();
            assert!(
                status.success(),
                "berthd exited with {status} on SIGTERM before restart\n{}",
                self.log_banner()
            );
        }
        self.spawn();
        self.wait_ready();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() && !self.log_shown.get() {
            eprintln!("{}", self.log_banner());
        }
    }
}
