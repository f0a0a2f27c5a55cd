//! A real containerd on a private root, state and socket: the reference the end-to-end cases
//! are checked against (STYLE.md §5). The built binaries come first on its `PATH`, so it finds
//! `containerd-shim-berth-v2` for `--runtime io.containerd.berth.v2`.

use std::fs::{self, File};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::daemon::path_with_binary_dir;

/// How long containerd may take to open its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A private containerd (CRI disabled), killed and cleaned up on drop.
#[derive(Debug)]
pub struct Containerd {
    dir: TempDir,
    address: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    /// Starts `containerd --config <private config>` and waits for its socket.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Like [`Containerd::start`], with extra TOML appended to the config.
    pub fn start_with(extra_config: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ctd-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory under /tmp");
        let p = dir.path();
        let address = p.join("c.sock");
        let config = p.join("config.toml");
        let text = format!(
            "version = 2\nroot = {:?}\nstate = {:?}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {:?}\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {:?}\n{extra_config}",
            p.join("root"),
            p.join("state"),
            address,
            p.join("opt"),
        );
        fs::write(&config, text).expect("write the containerd config");
        let mut this = Self {
            dir,
            address,
            config,
            child: None,
        };
        this.spawn();
        this
    }

    /// Spawns containerd with output appended to its log and waits for its socket.
    pub fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("containerd.log"))
            .expect("open the containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&self.config)
            .env("PATH", path_with_binary_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while UnixStream::connect(&self.address).is_err() {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "containerd not ready ({exited:?}):\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills containerd with SIGKILL and reaps it; [`Containerd::spawn`] starts it again.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("containerd is running");
        let _ = child.kill();
        child.wait().expect("reap the killed containerd");
    }

    /// Sends SIGTERM and waits until containerd exits; returns how long that took.
    pub fn terminate(&mut self) -> Duration {
        let mut child = self.child.take().expect("containerd is running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        let start = Instant::now();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal containerd");
        child.wait().expect("reap containerd");
        start.elapsed()
    }

    /// The gRPC socket.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The private directory holding root, state, socket, config and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What containerd logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!("--- containerd log ---\n{}--- end ---", self.log());
        }
    }
}
