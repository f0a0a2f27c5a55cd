//! Process stdio: the client's FIFOs (or `file://` URIs) connected to the container through
//! pipes, or through the pty master received on a console socket (`pkg/process/io.go`).
//!
//! FIFOs are opened so that nothing blocks on an absent peer, as containerd's `fifo` package
//! allows: stdin read-only non-blocking (epoll only reports it once a writer has come and gone
//! or sent data), stdout/stderr read-write (the shim counts as a reader, so the open never
//! blocks and writes never fail with EPIPE while the client is away).

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::OFlag;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

use crate::console::Pty;
use crate::error::{InvalidRequest, Result, ShimError};
use crate::runc::ProcessStdio;

/// The stdio a client asked for (`CreateTaskRequest` / `ExecProcessRequest` fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioConfig {
    /// stdin FIFO path; empty = none.
    pub stdin: String,
    /// stdout FIFO path or URI; empty = none.
    pub stdout: String,
    /// stderr FIFO path or URI; empty = none.
    pub stderr: String,
    /// Run the process on a pty.
    pub terminal: bool,
}

/// Where an output stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    /// Nothing.
    None,
    /// A FIFO (plain path or `fifo://`).
    Fifo(PathBuf),
    /// A file to append to (`file://`).
    File(PathBuf),
}

/// Parses a stdout/stderr string: a FIFO path, `file://PATH`, `fifo://PATH`; `binary://` is refused.
pub fn parse_output(spec: &str) -> Result<OutputTarget> {
    if spec.is_empty() {
        return Ok(OutputTarget::None);
    }
    if let Some(path) = spec.strip_prefix("file://") {
        return Ok(OutputTarget::File(PathBuf::from(path)));
    }
    if let Some(path) = spec.strip_prefix("fifo://") {
        return Ok(OutputTarget::Fifo(PathBuf::from(path)));
    }
    if spec.starts_with("binary://") {
        return Err(ShimError::Unimplemented("binary:// process logging"));
    }
    if let Some((scheme, _)) = spec.split_once("://") {
        return Err(InvalidRequest::StdioScheme {
            scheme: scheme.to_owned(),
        }
        .into());
    }
    Ok(OutputTarget::Fifo(PathBuf::from(spec)))
}

type BoxWriter = Box<dyn AsyncWrite + Send + Unpin>;

fn open_output(target: &OutputTarget) -> Result<Option<BoxWriter>> {
    match target {
        OutputTarget::None => Ok(None),
        OutputTarget::Fifo(path) => {
            let tx = pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(path)
                .map_err(|e| ShimError::io("open fifo", path, e))?;
            Ok(Some(Box::new(tx)))
        }
        OutputTarget::File(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| ShimError::io("mkdir", dir, e))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| ShimError::io("open", path, e))?;
            Ok(Some(Box::new(tokio::fs::File::from_std(file))))
        }
    }
}

fn open_stdin(path: &str) -> Result<Option<pipe::Receiver>> {
    if path.is_empty() {
        return Ok(None);
    }
    pipe::OpenOptions::new()
        .open_receiver(path)
        .map(Some)
        .map_err(|e| ShimError::io("open stdin fifo", path, e))
}

fn new_pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| ShimError::sys("pipe2", e))
}

/// The running copy tasks of one process.
#[derive(Debug, Default)]
pub struct ProcessIo {
    /// Copies the stdin FIFO into the process; aborting it closes the process's stdin.
    stdin: Option<JoinHandle<()>>,
    /// Copies process output to the client; finished when the process side closed.
    outputs: Vec<JoinHandle<()>>,
    /// The pty master, for resizes.
    pty: Option<Arc<Pty>>,
}

impl ProcessIo {
    /// Closes the process's stdin (CloseIO).
    pub fn close_stdin(&mut self) {
        if let Some(task) = self.stdin.take() {
            task.abort();
        }
    }

    /// The pty master, if the process has a terminal.
    pub fn pty(&self) -> Option<Arc<Pty>> {
        self.pty.clone()
    }

    /// Takes the output copy tasks, to wait for them outside any lock.
    pub fn take_outputs(&mut self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.outputs)
    }
}

/// Waits up to `limit` for output copying to finish, as containerd's `waitTimeout(&p.wg, 2s)`.
pub async fn wait_outputs(tasks: Vec<JoinHandle<()>>, limit: Duration) {
    let all = async {
        for task in tasks {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(limit, all).await.is_err() {
        tracing::warn!("timed out waiting for process output to drain");
    }
}

async fn copy_to<R>(mut from: R, mut to: BoxWriter)
where
    R: AsyncRead + Unpin,
{
    if let Err(err) = tokio::io::copy(&mut from, &mut to).await {
        tracing::debug!(error = %err, "output copy ended");
    }
    let _ = to.flush().await;
}

/// Pipes set up for a process without a terminal, before runc runs.
#[derive(Debug)]
pub struct PipeIo {
    stdin: Option<(pipe::Receiver, OwnedFd)>,
    stdout: Option<(OwnedFd, BoxWriterDebug)>,
    stderr: Option<(OwnedFd, BoxWriterDebug)>,
}

/// A boxed writer with a Debug impl, for [`PipeIo`].
pub struct BoxWriterDebug(BoxWriter);

impl std::fmt::Debug for BoxWriterDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoxWriter")
    }
}

/// Opens the client's streams and makes the pipes; returns runc's ends and ours.
pub fn prepare_pipes(cfg: &StdioConfig) -> Result<(ProcessStdio, PipeIo)> {
    let mut stdio = ProcessStdio::default();
    let stdin = match open_stdin(&cfg.stdin)? {
        Some(fifo) => {
            let (r, w) = new_pipe()?;
            stdio.stdin = Some(r);
            Some((fifo, w))
        }
        None => None,
    };
    let output = |spec: &str, slot: &mut Option<OwnedFd>| -> Result<_> {
        match open_output(&parse_output(spec)?)? {
            Some(writer) => {
                let (r, w) = new_pipe()?;
                *slot = Some(w);
                Ok(Some((r, BoxWriterDebug(writer))))
            }
            None => Ok(None),
        }
    };
    let stdout = output(&cfg.stdout, &mut stdio.stdout)?;
    let stderr = output(&cfg.stderr, &mut stdio.stderr)?;
    Ok((
        stdio,
        PipeIo {
            stdin,
            stdout,
            stderr,
        },
    ))
}

impl PipeIo {
    /// Starts copying; call once runc has handed the pipe ends to the process.
    pub fn start(self) -> Result<ProcessIo> {
        let mut io = ProcessIo::default();
        if let Some((mut fifo, w)) = self.stdin {
            let mut tx =
                pipe::Sender::from_owned_fd(w).map_err(|e| ShimError::io("stdin pipe", "", e))?;
            io.stdin = Some(tokio::spawn(async move {
                let _ = tokio::io::copy(&mut fifo, &mut tx).await;
                // Dropping tx closes the process's stdin.
            }));
        }
        for (r, writer) in [self.stdout, self.stderr].into_iter().flatten() {
            let rx = pipe::Receiver::from_owned_fd(r)
                .map_err(|e| ShimError::io("output pipe", "", e))?;
            io.outputs.push(tokio::spawn(copy_to(rx, writer.0)));
        }
        Ok(io)
    }
}

/// Streams for a process on a pty, opened before runc runs so a bad path fails early.
#[derive(Debug)]
pub struct PtyIo {
    stdin: Option<pipe::Receiver>,
    stdout: Option<BoxWriterDebug>,
}

/// Opens the client's stdin and stdout for a terminal process (stderr is the pty too).
pub fn prepare_pty(cfg: &StdioConfig) -> Result<PtyIo> {
    Ok(PtyIo {
        stdin: open_stdin(&cfg.stdin)?,
        stdout: open_output(&parse_output(&cfg.stdout)?)?.map(BoxWriterDebug),
    })
}

impl PtyIo {
    /// Starts copying between the client and the pty master.
    pub fn start(self, pty: Pty) -> ProcessIo {
        let pty = Arc::new(pty);
        let mut io = ProcessIo {
            pty: Some(pty.clone()),
            ..ProcessIo::default()
        };
        if let Some(mut fifo) = self.stdin {
            let pty = pty.clone();
            io.stdin = Some(tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match fifo.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if pty.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }));
        }
        if let Some(writer) = self.stdout {
            let mut to = writer.0;
            io.outputs.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match pty.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if to.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = to.flush().await;
            }));
        }
        io
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes `path` a FIFO with mode 0700 if it does not exist (tests and the `log` FIFO).
    fn mkfifo(path: &std::path::Path) -> Result<()> {
        match nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => Err(ShimError::sys(format!("mkfifo {}", path.display()), e)),
        }
    }

    #[test]
    fn output_specs() {
        assert_eq!(parse_output("").unwrap(), OutputTarget::None);
        assert_eq!(
            parse_output("/run/containerd/fifo/1/t-stdout").unwrap(),
            OutputTarget::Fifo("/run/containerd/fifo/1/t-stdout".into())
        );
        assert_eq!(
            parse_output("file:///var/log/x.log").unwrap(),
            OutputTarget::File("/var/log/x.log".into())
        );
        assert!(matches!(
            parse_output("binary:///usr/bin/logger?x=1"),
            Err(ShimError::Unimplemented(_))
        ));
        assert!(matches!(
            parse_output("http://x"),
            Err(ShimError::InvalidArgument(
                InvalidRequest::StdioScheme { .. }
            ))
        ));
    }

    #[tokio::test]
    async fn fifo_round_trip_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let stdin = dir.path().join("stdin");
        let stdout = dir.path().join("stdout");
        mkfifo(&stdin).unwrap();
        mkfifo(&stdout).unwrap();
        let cfg = StdioConfig {
            stdin: stdin.display().to_string(),
            stdout: stdout.display().to_string(),
            ..Default::default()
        };
        // No client has opened either FIFO yet: this must not block.
        let (stdio, pipes) = prepare_pipes(&cfg).unwrap();
        let io = pipes.start().unwrap();
        // Play the process: echo stdin to stdout.
        let mut proc_in = pipe::Receiver::from_owned_fd(stdio.stdin.unwrap()).unwrap();
        let mut proc_out = pipe::Sender::from_owned_fd(stdio.stdout.unwrap()).unwrap();
        // Play the client.
        let mut client_out = pipe::OpenOptions::new().open_receiver(&stdout).unwrap();
        let mut client_in = pipe::OpenOptions::new().open_sender(&stdin).unwrap();
        client_in.write_all(b"hello").await.unwrap();
        drop(client_in);
        let mut got = Vec::new();
        proc_in.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        proc_out.write_all(b"world").await.unwrap();
        drop(proc_out);
        wait_outputs(io.outputs, Duration::from_secs(5)).await;
        let mut out = Vec::new();
        client_out.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"world");
    }

    #[tokio::test]
    async fn file_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sub/out.log");
        let cfg = StdioConfig {
            stdout: format!("file://{}", log.display()),
            ..Default::default()
        };
        let (stdio, pipes) = prepare_pipes(&cfg).unwrap();
        assert!(stdio.stdin.is_none() && stdio.stderr.is_none());
        let mut io = pipes.start().unwrap();
        let mut proc_out = pipe::Sender::from_owned_fd(stdio.stdout.unwrap()).unwrap();
        proc_out.write_all(b"line\n").await.unwrap();
        drop(proc_out);
        wait_outputs(io.take_outputs(), Duration::from_secs(5)).await;
        assert_eq!(std::fs::read(&log).unwrap(), b"line\n");
    }
}
