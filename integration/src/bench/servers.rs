//! The two daemons under test, each private: its own root, state, socket, config and log in a
//! directory of the benchmark's scratch space.

use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::command::{run_with_timeout, CmdOutput};

/// The Debian `containerd` package's daemon, client and runc shim.
pub const CONTAINERD_BIN: &str = "/usr/bin/containerd";
/// The real `ctr` client that drives both daemons.
pub const CTR_BIN: &str = "/usr/bin/ctr";
/// containerd's runc shim.
pub const RUNC_SHIM: &str = "containerd-shim-runc-v2";
/// Berth's shim.
pub const BERTH_SHIM: &str = "containerd-shim-berth-v2";

/// How long a daemon may take to answer `ctr version` after it is spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one client command (`ctr`, `berth`, `runc`) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// Which daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `berthd` with `containerd-shim-berth-v2`.
    Berth,
    /// containerd 1.6 with `containerd-shim-runc-v2`.
    Containerd,
}

impl Kind {
    /// Both, Berth first: the order every alternating loop runs them in.
    pub const BOTH: [Kind; 2] = [Kind::Berth, Kind::Containerd];

    /// Lower-case name for ids, paths and JSON keys.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Berth => "berth",
            Kind::Containerd => "containerd",
        }
    }

    /// The shim binary name this daemon launches for `io.containerd.runc.v2`.
    pub fn shim(self) -> &'static str {
        match self {
            Kind::Berth => BERTH_SHIM,
            Kind::Containerd => RUNC_SHIM,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Paths of every program the benchmark runs.
#[derive(Debug, Clone)]
pub struct Bins {
    /// The directory holding `berthd`, the shim and `berth` (next to the bench binary).
    pub target_dir: PathBuf,
    /// `berthd`.
    pub berthd: PathBuf,
    /// Berth's own CLI, `berth`.
    pub berth_cli: PathBuf,
    /// `runc`, found on PATH.
    pub runc: PathBuf,
}

impl Bins {
    /// Checks that the Debian containerd package, runc and the Berth binaries are present; nothing
    /// is installed at run time.
    pub fn locate() -> Result<Bins> {
        for path in [CONTAINERD_BIN, CTR_BIN, "/usr/bin/containerd-shim-runc-v2"] {
            ensure!(
                Path::new(path).is_file(),
                "{path} not found: install the Debian `containerd` package first"
            );
        }
        let exe = std::env::current_exe().context("locate the bench executable")?;
        let target_dir = exe
            .parent()
            .context("the bench executable has no parent directory")?
            .to_owned();
        let berthd = target_dir.join("berthd");
        for path in [&berthd, &target_dir.join(BERTH_SHIM)] {
            ensure!(
                path.is_file(),
                "{} not found: build the workspace (`cargo build --release --workspace`) first",
                path.display()
            );
        }
        let runc = berth_testutil::find_executable("runc").context("runc not found on PATH")?;
        Ok(Bins {
            berth_cli: target_dir.join("berth"),
            berthd,
            runc,
            target_dir,
        })
    }

    /// `$PATH` with the target directory in front, so berthd finds `containerd-shim-berth-v2`.
    fn berth_path(&self) -> String {
        let rest = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        format!("{}:{rest}", self.target_dir.display())
    }
}

/// A private daemon: `<dir>/root`, `<dir>/state`, `<dir>/s.sock`, `<dir>/config.toml` and
/// `<dir>/daemon.log`. Dropping it kills the daemon; the directory stays for the caller to
/// remove once every measurement is done (a bulk delete slows later unpacks on ext4).
#[derive(Debug)]
pub struct Server {
    kind: Kind,
    address: PathBuf,
    log: PathBuf,
    /// The command that starts the daemon again on the same directory ([`Server::crash_and_respawn`]).
    respawn: (Bins, PathBuf),
    child: Option<Child>,
}

impl Server {
    /// Writes the config, spawns the daemon and waits until `ctr version` answers.
    pub fn start(kind: Kind, bins: &Bins, dir: PathBuf) -> Result<Server> {
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        mount_state_tmpfs(&dir.join("state"))?;
        let config = dir.join("config.toml");
        let text = match kind {
            Kind::Containerd => containerd_config(&dir),
            Kind::Berth => "version = 2\n".to_owned(),
        };
        fs::write(&config, text).with_context(|| format!("write {}", config.display()))?;
        let log = dir.join("daemon.log");
        File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut server = Server {
            kind,
            address: dir.join("s.sock"),
            log,
            respawn: (bins.clone(), dir),
            child: None,
        };
        server.spawn()?;
        server.wait_ready()?;
        Ok(server)
    }

    /// Spawns the daemon on its directory (config written), its output appended to the log.
    fn spawn(&mut self) -> Result<()> {
        let (bins, dir) = &self.respawn;
        let config = dir.join("config.toml");
        let log_file = File::options()
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let log_err = log_file.try_clone().context("clone the log handle")?;
        let mut cmd = match self.kind {
            Kind::Containerd => {
                let mut cmd = Command::new(CONTAINERD_BIN);
                cmd.arg("--config").arg(&config);
                cmd
            }
            Kind::Berth => {
                let mut cmd = Command::new(&bins.berthd);
                cmd.arg("--config")
                    .arg(&config)
                    .arg("--root")
                    .arg(dir.join("root"))
                    .arg("--state")
                    .arg(dir.join("state"))
                    .arg("--address")
                    .arg(&self.address)
                    .env("PATH", bins.berth_path());
                cmd
            }
        };
        cmd.env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        self.child = Some(cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?);
        Ok(())
    }

    /// Kills the daemon with SIGKILL, as a crash would (the shims keep running), and starts it
    /// again on the same root, state, config and socket without waiting for it. Returns the
    /// instant just before the new process was spawned, for the caller to time how long it
    /// takes to serve again.
    pub fn crash_and_respawn(&mut self) -> Result<Instant> {
        if let Some(mut child) = self.child.take() {
            // It may have exited already; the wait reaps it either way.
            let _ = child.kill();
            child.wait().context("reap the killed daemon")?;
        }
        let spawned = Instant::now();
        self.spawn()?;
        Ok(spawned)
    }

    /// Polls `ctr version` until it succeeds; fails with the log tail if the daemon exits or the
    /// deadline passes.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().context("wait for the daemon")? {
                    self.child = None;
                    bail!(
                        "{} exited at startup with {status}\n{}",
                        self.kind,
                        self.log_tail()
                    );
                }
            }
            if self.address.exists() && self.ctr("", &["version"]).success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} not ready after {READY_TIMEOUT:?}\n{}",
                    self.kind,
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Which daemon this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The gRPC socket.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// Process id of the daemon.
    pub fn pid(&self) -> Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .with_context(|| format!("{} is not running", self.kind))
    }

    /// The last 40 lines of the daemon log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- {} log ({}) ---\n{tail}", self.kind, self.log.display())
    }

    /// The `ctr` command for this daemon and `namespace` (none when empty), not yet run.
    pub fn ctr_command(&self, namespace: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(CTR_BIN);
        cmd.arg("--address").arg(&self.address);
        if !namespace.is_empty() {
            cmd.args(["--namespace", namespace]);
        }
        cmd.args(args)
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE")
            .env_remove("CONTAINERD_SNAPSHOTTER");
        cmd
    }

    /// Runs `ctr` against this daemon and captures its output.
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> CmdOutput {
        run_with_timeout(self.ctr_command(namespace, args), COMMAND_TIMEOUT)
    }

    /// Runs `ctr` and fails with its output (and the daemon log tail) unless it exits 0.
    pub fn ctr_ok(&self, namespace: &str, args: &[&str]) -> Result<String> {
        let out = self.ctr(namespace, args);
        ensure!(out.success(), "{out}\n{}", self.log_tail());
        Ok(out.stdout)
    }

    /// Sends SIGTERM and waits for the exit; kills the daemon if it lingers.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid fits in i32")?);
        // It may have exited already; the wait below reaps it either way.
        let _ = signal::kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().context("wait for the daemon")?.is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                child.wait().context("reap the killed daemon")?;
                bail!("{} did not exit {STOP_TIMEOUT:?} after SIGTERM", self.kind);
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Server {
    /// Like [`Server::start`] with the CRI plugin on (containerd's too) and `cri_config` (TOML
    /// tables in containerd's keys) added to the daemon config: the daemon starts once as
    /// [`Server::start`] makes it, then again with that config.
    pub fn start_with_cri(
        kind: Kind,
        bins: &Bins,
        dir: PathBuf,
        cri_config: &str,
    ) -> Result<Server> {
        let mut server = Server::start(kind, bins, dir)?;
        server.stop()?;
        let dir = &server.respawn.1;
        let text = match kind {
            Kind::Containerd => containerd_cri_config(dir, cri_config),
            Kind::Berth => format!("version = 2\n{cri_config}"),
        };
        let config = dir.join("config.toml");
        fs::write(&config, text).with_context(|| format!("write {}", config.display()))?;
        server.spawn()?;
        server.wait_ready()?;
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Mounts a tmpfs on a daemon's state directory, as a node's `/run` (where containerd keeps its
/// state, `/run/containerd`) is one: bundles, FIFOs and shim sockets live in memory, while the
/// root (content, snapshots, metadata) stays on the scratch disk. The scratch clean-up unmounts it.
fn mount_state_tmpfs(state: &Path) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    fs::create_dir_all(state).with_context(|| format!("create {}", state.display()))?;
    if super::procfs::mounts_under(state)
        .iter()
        .any(|m| m == state)
    {
        return Ok(());
    }
    mount(
        Some("tmpfs"),
        state,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0711"),
    )
    .with_context(|| format!("mount a tmpfs on {}", state.display()))
}

/// containerd's config: everything under `dir`, CRI off (the reference setup).
fn containerd_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "version = 2\n\
         root = \"{d}/root\"\n\
         state = \"{d}/state\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = \"{d}/s.sock\"\n\
         [ttrpc]\n  address = \"{d}/s.sock.ttrpc\"\n\
         [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n"
    )
}

/// containerd's config with its CRI plugin on: [`containerd_config`] without
/// `disabled_plugins`, then `cri_config`.
fn containerd_cri_config(dir: &Path, cri_config: &str) -> String {
    let off = "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n";
    format!("{}{cri_config}", containerd_config(dir).replace(off, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_config_keeps_everything_private() {
        let text = containerd_config(Path::new("/tmp/b/c"));
        let value: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(value["version"].as_integer(), Some(2));
        assert_eq!(value["root"].as_str(), Some("/tmp/b/c/root"));
        assert_eq!(value["grpc"]["address"].as_str(), Some("/tmp/b/c/s.sock"));
        assert_eq!(
            value["disabled_plugins"][0].as_str(),
            Some("io.containerd.grpc.v1.cri")
        );
    }
}
