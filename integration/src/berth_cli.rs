//! Running the built `berth` binary (the CLI, `ctr/`) in end-to-end tests: `ctr/tests/cli.rs`
//! and, here, `cli_run.rs` and `cli_pull_push.rs`. The binary is the one `cargo build` puts next
//! to `berthd` (which is also where `cargo test -p berth-ctr` builds it).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::daemon::berthd_bin;

/// How long one `berth` invocation may take before it is killed.
const BERTH_TIMEOUT: Duration = Duration::from_secs(60);

/// The built `berth` binary, next to `berthd` (see [`berthd_bin`]).
pub fn berth_bin() -> PathBuf {
    let path = berthd_bin().with_file_name("berth");
    assert!(
        path.is_file(),
        "berth binary not found at {}: run `cargo build -p berth-ctr` first",
        path.display()
    );
    path
}

/// Result of one `berth` run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Asserts exit status 0 and returns stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "berth failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.stdout
    }

    /// Asserts success and parses stdout as JSON.
    #[track_caller]
    pub fn json(self) -> Value {
        let out = self.ok();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// Asserts exit status 1 and returns stderr.
    #[track_caller]
    pub fn fails(self) -> String {
        assert_eq!(
            self.code, 1,
            "berth should fail:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.stderr
    }
}

/// `berth --address <address> args...` with the environment's namespace and snapshotter
/// removed, stdin closed, stdout and stderr piped.
pub fn berth_cmd(address: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(berth_bin());
    cmd.arg("--address")
        .arg(address)
        .args(args)
        .env_remove("CONTAINERD_NAMESPACE")
        .env_remove("CONTAINERD_SNAPSHOTTER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `berth --address <address> args...` with empty stdin.
pub fn berth(address: &Path, args: &[&str]) -> Run {
    berth_env(address, args, b"", &[])
}

/// Runs `berth --address <address> args...` with `stdin` piped in.
pub fn berth_in(address: &Path, args: &[&str], stdin: &[u8]) -> Run {
    berth_env(address, args, stdin, &[])
}

/// Runs `berth --address <address> args...` with `stdin` piped in and `env` added to (`None`:
/// removed from) the environment; kills it after [`BERTH_TIMEOUT`].
pub fn berth_env(address: &Path, args: &[&str], stdin: &[u8], env: &[(&str, Option<&str>)]) -> Run {
    let mut cmd = berth_cmd(address, args);
    for (key, value) in env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    let mut child = cmd.stdin(Stdio::piped()).spawn().expect("spawn berth");
    let mut input = child.stdin.take().expect("stdin is piped");
    // A berth that exits without reading its stdin closes the pipe: not an error here.
    let _ = input.write_all(stdin);
    drop(input);
    let pid = child.id();
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if finished.recv_timeout(BERTH_TIMEOUT).is_err() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
    let out = child.wait_with_output().expect("wait for berth");
    let _ = done.send(());
    let _ = watchdog.join();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Kills and removes containers when dropped (declare it before the daemon, so it drops first):
/// a failing assertion then leaves no task running. Each container's restart label is cleared
/// first, so a restart monitor lets it go.
#[derive(Debug)]
pub struct RemoveContainers<'a> {
    /// The daemon's socket.
    pub address: &'a Path,
    /// The containers to remove.
    pub ids: Vec<String>,
}

impl Drop for RemoveContainers<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let a = self.address;
            berth(
                a,
                &["containers", "label", id, "containerd.io/restart.status="],
            );
            berth(a, &["tasks", "kill", "-s", "KILL", "--all", id]);
            berth(a, &["tasks", "delete", "-f", id]);
            berth(a, &["containers", "rm", id]);
        }
    }
}

/// `berth images import` of `archive` (with `extra` flags before it), which must succeed.
pub fn import_archive(address: &Path, archive: &Path, extra: &[&str]) {
    let mut args = vec!["images", "import"];
    args.extend_from_slice(extra);
    args.push(archive.to_str().expect("utf-8 path"));
    berth(address, &args).ok();
}

/// A fresh daemon with the busybox test image imported (and unpacked) as `name` through
/// `berth images import`.
pub fn daemon_with_busybox(name: &str) -> (crate::Daemon, crate::image::TestImage) {
    let daemon = crate::Daemon::start();
    let img = crate::image::build_busybox_image(daemon.dir(), name);
    import_archive(daemon.address(), &img.archive, &[]);
    (daemon, img)
}
