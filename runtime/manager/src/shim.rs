//! Running a shim binary's actions (containerd `runtime/v2/binary.go`, `shim/util.go`
//! `Command`): `start` prints the address of a daemonised shim; `delete` cleans up after a
//! dead one and prints a protobuf `DeleteResponse`. Also the pump that copies the shim's `log`
//! FIFO into the daemon's log.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use berth_proto::containerd::task::v2::DeleteResponse;
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::bundle::Bundle;
use crate::config::Timeouts;
use crate::error::RuntimeError;

/// How long `start` may take before the shim is killed.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The environment variable naming the daemon's ttrpc socket for the shim's events.
pub const TTRPC_ADDRESS_ENV: &str = "TTRPC_ADDRESS";

/// How a task exited, as the shim reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exit {
    /// The process id.
    pub pid: u32,
    /// The exit status (128 + signal for a signalled process).
    pub status: u32,
    /// When it exited, as the shim sent it.
    pub exited_at: Option<prost_types::Timestamp>,
}

/// One shim binary bound to one task: what its actions need on the command line.
#[derive(Debug, Clone)]
pub struct ShimBinary {
    /// The shim executable.
    pub binary: PathBuf,
    /// The task's namespace.
    pub namespace: String,
    /// The task id.
    pub id: String,
    /// The bundle directory (the actions' working directory).
    pub bundle: PathBuf,
    /// The daemon's gRPC socket (`-address`).
    pub grpc_address: String,
    /// The daemon's ttrpc socket (`TTRPC_ADDRESS`).
    pub ttrpc_address: String,
    /// The daemon executable (`-publish-binary`).
    pub publish_binary: PathBuf,
    /// How long the shim's actions and calls may take.
    pub timeouts: Timeouts,
}

impl ShimBinary {
    /// The command line containerd builds: `-namespace N -address A -publish-binary P <args>`.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg("-namespace")
            .arg(&self.namespace)
            .arg("-address")
            .arg(&self.grpc_address)
            .arg("-publish-binary")
            .arg(&self.publish_binary)
            .args(args)
            .current_dir(&self.bundle)
            .env("GOMAXPROCS", "2")
            .env(TTRPC_ADDRESS_ENV, &self.ttrpc_address)
            // Its own process group, so signals aimed at the daemon's group spare the shim.
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }

    /// Runs `<shim> ... -id <id> start` with `options` (a protobuf `google.protobuf.Any`) on
    /// stdin, and returns the address it printed (stdout and stderr combined, trimmed).
    pub async fn start(&self, options: Option<&prost_types::Any>) -> Result<String, RuntimeError> {
        let spawn_err = |source| RuntimeError::ShimSpawn {
            binary: self.binary.clone(),
            action: "start",
            source,
        };
        let (mut reader, writer) = std::io::pipe().map_err(spawn_err)?;
        let mut child = {
            let mut cmd = self.command(&["-id", &self.id, "start"]);
            cmd.stdout(writer.try_clone().map_err(spawn_err)?)
                .stderr(writer)
                .stdin(if options.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                });
            // The command (and its copies of the pipe's write end) drops at the end of this
            // block, so the read below ends when the shim's start process exits.
            cmd.spawn().map_err(spawn_err)?
        };
        if let (Some(opts), Some(mut stdin)) = (options, child.stdin.take()) {
            stdin
                .write_all(&opts.encode_to_vec())
                .await
                .map_err(spawn_err)?;
        }
        let read = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).map(|_| out)
        });
        let run = async {
            let status = child.wait().await.map_err(spawn_err)?;
            let out = read
                .await
                .map_err(|e| spawn_err(std::io::Error::other(e)))?
                .map_err(spawn_err)?;
            Ok::<_, RuntimeError>((status, out))
        };
        let (status, out) = tokio::time::timeout(START_TIMEOUT, run)
            .await
            .map_err(|_| RuntimeError::ShimTimeout {
                binary: self.binary.clone(),
                action: "start",
            })??;
        let out = String::from_utf8_lossy(&out).trim().to_owned();
        if !status.success() {
            return Err(RuntimeError::ShimFailed {
                binary: self.binary.clone(),
                action: "start",
                status,
                output: out,
            });
        }
        parse_address(&out)
    }

    /// Runs `<shim> ... -id <id> -bundle <bundle> delete`: the shim kills and deletes what is
    /// left of the task and prints a `DeleteResponse` on stdout; stderr is logged.
    pub async fn delete(&self) -> Result<Exit, RuntimeError> {
        let bundle = self.bundle.display().to_string();
        let mut cmd = self.command(&["-id", &self.id, "-bundle", &bundle, "delete"]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = tokio::time::timeout(self.timeouts.cleanup, cmd.output())
            .await
            .map_err(|_| RuntimeError::ShimTimeout {
                binary: self.binary.clone(),
                action: "delete",
            })?
            .map_err(|source| RuntimeError::ShimSpawn {
                binary: self.binary.clone(),
                action: "delete",
                source,
            })?;
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if !output.status.success() {
            return Err(RuntimeError::ShimFailed {
                binary: self.binary.clone(),
                action: "delete",
                status: output.status,
                output: stderr,
            });
        }
        if !stderr.is_empty() {
            tracing::warn!(namespace = %self.namespace, id = %self.id, warnings = %stderr, "shim cleanup warnings");
        }
        let resp =
            DeleteResponse::decode(output.stdout.as_slice()).map_err(RuntimeError::DecodeDelete)?;
        Ok(Exit {
            pid: resp.pid,
            status: resp.exit_status,
            exited_at: resp.exited_at,
        })
    }
}

/// Checks a shim's printed address: `unix://` followed by an absolute socket path or an
/// abstract name (`@name`); a bare absolute path is taken as `unix://<path>`.
pub fn parse_address(out: &str) -> Result<String, RuntimeError> {
    let s = out.trim();
    let invalid = || RuntimeError::InvalidAddress(s.to_owned());
    let rest = match s.strip_prefix("unix://") {
        Some(rest) => rest,
        None if s.starts_with('/') => s,
        None => return Err(invalid()),
    };
    let ok = (rest.starts_with('/') || rest.len() > 1 && rest.starts_with('@'))
        && !rest.contains(char::is_whitespace)
        && !rest.contains('\0');
    if ok {
        Ok(format!("unix://{rest}"))
    } else {
        Err(invalid())
    }
}

/// True when `path` names an executable regular file (a recorded shim binary on restart).
pub fn is_executable(path: &Path) -> bool {
    path.is_absolute()
        && std::fs::metadata(path)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
}

/// Opens the bundle's `log` FIFO read-write (so the shim's open never blocks and the pipe never
/// reports EOF) and copies each line into the daemon's log until the handle is aborted.
pub fn spawn_log_pump(bundle: &Bundle) -> Result<JoinHandle<()>, RuntimeError> {
    let path = bundle.log_path();
    let receiver = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&path)
        .map_err(|source| RuntimeError::Bundle {
            op: "open shim log",
            path,
            source,
        })?;
    let (ns, id) = (bundle.namespace.clone(), bundle.id.clone());
    Ok(tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(receiver).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(namespace = %ns, id = %id, log = %line, "shim");
        }
    }))
}

#[cfg(test)]
mod tests {
    use berth_registry::{Classify, ErrorKind};

    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("unix:///run/containerd/s/abc\n").unwrap(),
            "unix:///run/containerd/s/abc"
        );
        assert_eq!(parse_address("/run/x.sock").unwrap(), "unix:///run/x.sock");
        assert_eq!(
            parse_address("unix://@berth-shim").unwrap(),
            "unix://@berth-shim"
        );
        for bad in [
            "",
            "unix://",
            "unix://relative",
            "tcp://1.2.3.4:5",
            "time=\"x\" level=fatal msg=\"boom\"",
            "unix:///a b",
        ] {
            let err = parse_address(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Internal, "{bad:?}");
        }
    }

    fn fake_shim(dir: &Path, script: &str) -> ShimBinary {
        let binary = dir.join("containerd-shim-fake-v1");
        std::fs::write(&binary, script).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        ShimBinary {
            binary,
            namespace: "ns1".into(),
            id: "c1".into(),
            bundle: dir.to_path_buf(),
            grpc_address: "/run/x.sock".into(),
            ttrpc_address: "/run/x.sock.ttrpc".into(),
            publish_binary: "/usr/bin/berthd".into(),
            timeouts: Timeouts::default(),
        }
    }

    // A script checks argument plumbing only (STYLE §5); the real shim runs in tests/.
    #[tokio::test]
    async fn start_passes_args_env_and_options_and_reads_both_streams() {
        let d = tempfile::tempdir().unwrap();
        let shim = fake_shim(
            d.path(),
            "#!/bin/sh\necho \"$*|$TTRPC_ADDRESS\" > args\ncat > stdin\necho unix://$PWD/s.sock\necho '  ' >&2\n",
        );
        let opts = prost_types::Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![],
        };
        let addr = shim.start(Some(&opts)).await.unwrap();
        assert_eq!(addr, format!("unix://{}/s.sock", d.path().display()));
        let args = std::fs::read_to_string(d.path().join("args")).unwrap();
        assert_eq!(
            args.trim(),
            "-namespace ns1 -address /run/x.sock -publish-binary /usr/bin/berthd -id c1 start|/run/x.sock.ttrpc"
        );
        let stdin = std::fs::read(d.path().join("stdin")).unwrap();
        assert_eq!(&stdin[..2], &[0x0a, 0x1a]);
        assert_eq!(&stdin[2..], b"containerd.runc.v1.Options");
    }

    #[tokio::test]
    async fn failed_start_reports_output() {
        let d = tempfile::tempdir().unwrap();
        let shim = fake_shim(d.path(), "#!/bin/sh\necho boom >&2\nexit 3\n");
        let err = shim.start(None).await.unwrap_err();
        assert!(matches!(err, RuntimeError::ShimFailed { .. }), "{err}");
        assert!(err.to_string().contains("boom"), "{err}");
    }

    #[tokio::test]
    async fn delete_takes_the_configured_cleanup_timeout() {
        let d = tempfile::tempdir().unwrap();
        let mut shim = fake_shim(d.path(), "#!/bin/sh\nexec sleep 10\n");
        shim.timeouts.cleanup = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let err = shim.delete().await.unwrap_err();
        assert!(matches!(err, RuntimeError::ShimTimeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn delete_decodes_the_response() {
        let d = tempfile::tempdir().unwrap();
        // DeleteResponse{pid: 7, exit_status: 137}: 08 07 10 89 01
        let shim = fake_shim(
            d.path(),
            "#!/bin/sh\necho \"$*\" > args\nprintf '\\010\\007\\020\\211\\001'\n",
        );
        let exit = shim.delete().await.unwrap();
        assert_eq!((exit.pid, exit.status), (7, 137));
        let args = std::fs::read_to_string(d.path().join("args")).unwrap();
        assert!(args
            .trim()
            .ends_with(&format!("-id c1 -bundle {} delete", d.path().display())));
    }
}
