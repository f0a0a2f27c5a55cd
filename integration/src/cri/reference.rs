//! A private containerd 1.6 with its CRI plugin enabled: the reference a CRI test is checked
//! against (STYLE.md §5), started from the same CRI section as the test's `berthd`.

use std::fs::{self, File};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long containerd may take to open its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A `containerd` on `dir/ctd` (root, state, socket, config, log) with the CRI plugin on;
/// killed on drop.
#[derive(Debug)]
pub struct CriContainerd {
    dir: PathBuf,
    address: PathBuf,
    child: Option<Child>,
}

impl CriContainerd {
    /// Starts containerd under `dir` (created) with `cri_config` (TOML holding the
    /// `[plugins."io.containerd.grpc.v1.cri"]` tables) and waits for its socket.
    pub fn start(dir: &Path, cri_config: &str) -> Self {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let address = dir.join("c.sock");
        let config = dir.join("config.toml");
        let text = format!(
            "version = 2\nroot = {:?}\nstate = {:?}\n[grpc]\n  address = {:?}\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {:?}\n{cri_config}",
            dir.join("root"),
            dir.join("state"),
            address,
            dir.join("opt"),
        );
        fs::write(&config, text).expect("write the containerd config");
        let log = File::create(dir.join("containerd.log")).expect("create the containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let mut this = Self {
            dir: dir.to_path_buf(),
            address,
            child: Some(child),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while UnixStream::connect(&this.address).is_err() {
            let exited = this
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "containerd not ready ({exited:?}):\n{}",
                this.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
        this
    }

    /// The socket (the CRI endpoint).
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// containerd's root directory.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// containerd's state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// What containerd logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// Kills containerd (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for CriContainerd {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("--- containerd log ---\n{}--- end ---", self.log());
        }
    }
}
