//! The runc command line (go-runc `runc.go`, containerd `pkg/process/` for the flags used).
//!
//! Every invocation goes through the shim's [`Reaper`], so runc's exit status is observed by the
//! same `waitpid(-1)` loop that reaps the containers. Output pipes are read asynchronously.

use std::ffi::OsString;
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::reaper::Reaper;

/// Why a runc invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    /// The binary could not be started.
    #[error("exec {binary}: {source}")]
    Spawn {
        /// runc's path or name.
        binary: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// runc exited non-zero; `message` is its last logged error or its output.
    #[error("{message}")]
    Failed {
        /// runc's exit status.
        status: u32,
        /// What runc said.
        message: String,
    },
    /// Output was not what runc prints.
    #[error("parse runc output: {0}")]
    Parse(String),
}

/// stdio given to `runc create` / `runc exec`, inherited by the container process.
#[derive(Debug, Default)]
pub struct ProcessStdio {
    /// Read end of the stdin pipe (`None` = /dev/null).
    pub stdin: Option<OwnedFd>,
    /// Write end of the stdout pipe.
    pub stdout: Option<OwnedFd>,
    /// Write end of the stderr pipe.
    pub stderr: Option<OwnedFd>,
}

fn stdio_of(fd: Option<OwnedFd>) -> Stdio {
    fd.map_or_else(Stdio::null, Stdio::from)
}

/// Options of `runc create`.
#[derive(Debug, Default)]
pub struct CreateOpts {
    /// `--pid-file`.
    pub pid_file: PathBuf,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
    /// `--no-pivot`.
    pub no_pivot: bool,
    /// `--no-new-keyring`.
    pub no_new_keyring: bool,
}

/// Options of `runc exec`.
#[derive(Debug, Default)]
pub struct ExecOpts {
    /// `--process`: the process spec JSON.
    pub process_file: PathBuf,
    /// `--pid-file`.
    pub pid_file: PathBuf,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
}

/// Options of `runc checkpoint`.
#[derive(Debug, Default)]
pub struct CheckpointOpts {
    /// `--image-path`.
    pub image_path: PathBuf,
    /// `--work-path`.
    pub work_path: Option<PathBuf>,
    /// Stop the container after dumping (else `--leave-running`).
    pub exit: bool,
    /// `--tcp-established`.
    pub open_tcp: bool,
    /// `--ext-unix-sk`.
    pub external_unix_sockets: bool,
    /// `--shell-job`.
    pub terminal: bool,
    /// `--file-locks`.
    pub file_locks: bool,
}

/// A configured runc: binary, state root (namespace included) and log file.
#[derive(Debug, Clone)]
pub struct Runc {
    /// Binary name or path.
    pub binary: String,
    /// `--root`: `<root>/<namespace>`.
    pub root: PathBuf,
    /// `--log`: `<bundle>/log.json`.
    pub log: PathBuf,
    /// `--systemd-cgroup`.
    pub systemd_cgroup: bool,
    /// `--criu`.
    pub criu: Option<String>,
    reaper: Reaper,
}

impl Runc {
    /// A runc for `bundle` in namespace `ns`.
    pub fn new(binary: &str, root: &str, ns: &str, bundle: &Path, reaper: Reaper) -> Runc {
        Runc {
            binary: if binary.is_empty() {
                crate::constants::RUNC_BINARY.to_owned()
            } else {
                binary.to_owned()
            },
            root: Path::new(if root.is_empty() {
                crate::constants::RUNC_ROOT
            } else {
                root
            })
            .join(ns),
            log: bundle.join(crate::constants::bundle::RUNC_LOG),
            systemd_cgroup: false,
            criu: None,
            reaper,
        }
    }

    /// The global flags, then `args`.
    pub fn args(&self, args: &[OsString]) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec![
            "--root".into(),
            self.root.clone().into(),
            "--log".into(),
            self.log.clone().into(),
            "--log-format".into(),
            "json".into(),
        ];
        if self.systemd_cgroup {
            out.push("--systemd-cgroup".into());
        }
        if let Some(criu) = &self.criu {
            out.push("--criu".into());
            out.push(criu.into());
        }
        out.extend(args.iter().cloned());
        out
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// The last `error` message runc logged after byte `from` of its JSON log.
    fn last_logged_error(&self, from: u64) -> Option<String> {
        let mut file = std::fs::File::open(&self.log).ok()?;
        let mut text = String::new();
        file.read_to_string(&mut text).ok()?;
        let start = usize::try_from(from).ok().filter(|s| *s <= text.len())?;
        last_error_in_log(&text[start..])
    }

    /// Runs runc with `args`, feeding `input` on stdin, returning stdout.
    async fn output(
        &self,
        args: &[OsString],
        input: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, RuncError> {
        let log_from = self.log_len();
        let mut cmd = Command::new(&self.binary);
        cmd.args(self.args(args))
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (mut child, mut sub) =
            self.reaper
                .spawn(&mut cmd)
                .map_err(|source| RuncError::Spawn {
                    binary: self.binary.clone(),
                    source,
                })?;
        let pid = i32::try_from(child.id()).unwrap_or(-1);
        let stdin = child.stdin.take().map(OwnedFd::from);
        let stdout = child.stdout.take().map(OwnedFd::from);
        let stderr = child.stderr.take().map(OwnedFd::from);
        let feed = async move {
            if let (Some(fd), Some(data)) = (stdin, input) {
                if let Ok(mut tx) = pipe::Sender::from_owned_fd(fd) {
                    let _ = tx.write_all(&data).await;
                }
            }
        };
        let (_, out, err, exit) =
            tokio::join!(feed, read_all(stdout), read_all(stderr), sub.wait_for(pid));
        let status = exit.map_or(255, |e| e.status);
        if status == 0 {
            return Ok(out);
        }
        let message = self.last_logged_error(log_from).unwrap_or_else(|| {
            let text = String::from_utf8_lossy(if err.is_empty() { &out } else { &err })
                .trim()
                .to_owned();
            if text.is_empty() {
                self.exit_message(status)
            } else {
                text
            }
        });
        Err(RuncError::Failed { status, message })
    }

    /// What a failed run says when runc logged nothing.
    fn exit_message(&self, status: u32) -> String {
        format!(
            "{} did not terminate successfully: exit status {status}",
            self.binary
        )
    }

    /// Runs runc with the container's stdio (create, exec): runc's own errors go to its log.
    async fn run_with_stdio(
        &self,
        args: &[OsString],
        stdio: ProcessStdio,
    ) -> Result<(), RuncError> {
        let log_from = self.log_len();
        let mut cmd = Command::new(&self.binary);
        cmd.args(self.args(args))
            .stdin(stdio_of(stdio.stdin))
            .stdout(stdio_of(stdio.stdout))
            .stderr(stdio_of(stdio.stderr));
        let (child, mut sub) = self
            .reaper
            .spawn(&mut cmd)
            .map_err(|source| RuncError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        // The container now holds the pipe ends; ours must close or no EOF ever comes.
        drop(cmd);
        let pid = i32::try_from(child.id()).unwrap_or(-1);
        let status = sub.wait_for(pid).await.map_or(255, |e| e.status);
        if status == 0 {
            return Ok(());
        }
        // runc's output went to the container's stdio: without a logged error, say which
        // binary failed (go-runc's wording), so the error names it.
        let message = self
            .last_logged_error(log_from)
            .unwrap_or_else(|| self.exit_message(status));
        Err(RuncError::Failed { status, message })
    }

    /// `runc create --bundle B --pid-file P [--console-socket S] [--no-pivot] [--no-new-keyring] ID`.
    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        opts: &CreateOpts,
        stdio: ProcessStdio,
    ) -> Result<(), RuncError> {
        let mut args: Vec<OsString> = vec![
            "create".into(),
            "--bundle".into(),
            bundle.into(),
            "--pid-file".into(),
            opts.pid_file.clone().into(),
        ];
        if let Some(sock) = &opts.console_socket {
            args.push("--console-socket".into());
            args.push(sock.into());
        }
        if opts.no_pivot {
            args.push("--no-pivot".into());
        }
        if opts.no_new_keyring {
            args.push("--no-new-keyring".into());
        }
        args.push(id.into());
        self.run_with_stdio(&args, stdio).await
    }

    /// `runc exec --process F --detach --pid-file P [--console-socket S] ID`.
    pub async fn exec(
        &self,
        id: &str,
        opts: &ExecOpts,
        stdio: ProcessStdio,
    ) -> Result<(), RuncError> {
        let mut args: Vec<OsString> = vec![
            "exec".into(),
            "--process".into(),
            opts.process_file.clone().into(),
            "--detach".into(),
            "--pid-file".into(),
            opts.pid_file.clone().into(),
        ];
        if let Some(sock) = &opts.console_socket {
            args.push("--console-socket".into());
            args.push(sock.into());
        }
        args.push(id.into());
        self.run_with_stdio(&args, stdio).await
    }

    /// `runc start ID`.
    pub async fn start(&self, id: &str) -> Result<(), RuncError> {
        self.output(&["start".into(), id.into()], None)
            .await
            .map(drop)
    }

    /// `runc kill [--all] ID SIGNUM`.
    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuncError> {
        let mut args: Vec<OsString> = vec!["kill".into()];
        if all {
            args.push("--all".into());
        }
        args.push(id.into());
        args.push(signal.to_string().into());
        self.output(&args, None).await.map(drop)
    }

    /// `runc delete [--force] ID`.
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), RuncError> {
        let mut args: Vec<OsString> = vec!["delete".into()];
        if force {
            args.push("--force".into());
        }
        args.push(id.into());
        self.output(&args, None).await.map(drop)
    }

    /// `runc pause ID`.
    pub async fn pause(&self, id: &str) -> Result<(), RuncError> {
        self.output(&["pause".into(), id.into()], None)
            .await
            .map(drop)
    }

    /// `runc resume ID`.
    pub async fn resume(&self, id: &str) -> Result<(), RuncError> {
        self.output(&["resume".into(), id.into()], None)
            .await
            .map(drop)
    }

    /// `runc ps --format json ID`: the pids in the container.
    pub async fn ps(&self, id: &str) -> Result<Vec<u32>, RuncError> {
        let out = self
            .output(
                &["ps".into(), "--format".into(), "json".into(), id.into()],
                None,
            )
            .await?;
        parse_ps(&out)
    }

    /// `runc update --resources - ID` with the LinuxResources JSON on stdin.
    pub async fn update(&self, id: &str, resources_json: Vec<u8>) -> Result<(), RuncError> {
        self.output(
            &["update".into(), "--resources".into(), "-".into(), id.into()],
            Some(resources_json),
        )
        .await
        .map(drop)
    }

    /// `runc checkpoint --image-path P [--work-path W] [--leave-running] ... ID`.
    pub async fn checkpoint(&self, id: &str, opts: &CheckpointOpts) -> Result<(), RuncError> {
        let mut args: Vec<OsString> = vec![
            "checkpoint".into(),
            "--image-path".into(),
            opts.image_path.clone().into(),
        ];
        if let Some(work) = &opts.work_path {
            args.push("--work-path".into());
            args.push(work.into());
        }
        if !opts.exit {
            args.push("--leave-running".into());
        }
        if opts.open_tcp {
            args.push("--tcp-established".into());
        }
        if opts.external_unix_sockets {
            args.push("--ext-unix-sk".into());
        }
        if opts.terminal {
            args.push("--shell-job".into());
        }
        if opts.file_locks {
            args.push("--file-locks".into());
        }
        args.push(id.into());
        self.output(&args, None).await.map(drop)
    }
}

async fn read_all(fd: Option<OwnedFd>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(fd) = fd {
        if let Ok(mut rx) = pipe::Receiver::from_owned_fd(fd) {
            let _ = rx.read_to_end(&mut buf).await;
        }
    }
    buf
}

/// The `msg` of the last `"level":"error"` line of a runc JSON log.
pub fn last_error_in_log(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Line {
        level: Option<String>,
        msg: Option<String>,
    }
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .filter(|l| l.level.as_deref() == Some("error"))
        .find_map(|l| l.msg)
}

/// Parses `runc ps --format json` output (a JSON array of pids, or `null`).
pub fn parse_ps(out: &[u8]) -> Result<Vec<u32>, RuncError> {
    let pids: Option<Vec<u32>> =
        serde_json::from_slice(out).map_err(|e| RuncError::Parse(e.to_string()))?;
    Ok(pids.unwrap_or_default())
}

/// Whether `binary` is an existing path or found on `$PATH`.
pub fn on_path(binary: &str) -> bool {
    if binary.contains('/') {
        return Path::new(binary).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
}

/// Reads a pid file as runc writes it.
pub fn read_pid_file(path: &Path) -> std::io::Result<u32> {
    let text = std::fs::read_to_string(path)?;
    text.trim().parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("pid file {}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_flags_come_first() {
        let r = Runc::new("", "", "default", Path::new("/b"), Reaper::new());
        let args = r.args(&["start".into(), "t1".into()]);
        let args: Vec<_> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--root",
                "/run/containerd/runc/default",
                "--log",
                "/b/log.json",
                "--log-format",
                "json",
                "start",
                "t1"
            ]
        );
        assert_eq!(r.binary, "runc");
    }

    #[test]
    fn log_errors() {
        let log = concat!(
            r#"{"level":"error","msg":"old","time":"x"}"#,
            "\n",
            r#"{"level":"warning","msg":"w","time":"x"}"#,
            "\n",
            r#"{"level":"error","msg":"container_linux.go: starting container process caused: exec: \"nope\": executable file not found in $PATH","time":"x"}"#,
            "\n"
        );
        assert_eq!(
            last_error_in_log(log).unwrap(),
            "container_linux.go: starting container process caused: exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(last_error_in_log("garbage\n"), None);
    }

    #[test]
    fn ps_output() {
        assert_eq!(parse_ps(b"[1,22,333]\n").unwrap(), vec![1, 22, 333]);
        assert_eq!(parse_ps(b"null").unwrap(), Vec::<u32>::new());
        assert!(parse_ps(b"oops").is_err());
    }

    #[test]
    fn pid_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("init.pid");
        std::fs::write(&p, "1234").unwrap();
        assert_eq!(read_pid_file(&p).unwrap(), 1234);
        std::fs::write(&p, "x").unwrap();
        assert!(read_pid_file(&p).is_err());
    }
}
