//! Process stdio: the client's FIFOs (or `file://` URIs) connected to the container through
//! pipes, or through the pty master received on a console socket (`pkg/process/io.go`). A
//! `binary://PATH?k=v` stdout starts a logging binary as the shim's child (`NewBinaryIO`):
//! `PATH k v ...` with only `CONTAINER_ID` and `CONTAINER_NAMESPACE` in its environment, the
//! process's stdout on its fd 3, stderr on fd 4, and fd 5 to close (or write to) once ready.
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
    /// The process id (the container id for init) a logging binary gets as `CONTAINER_ID`.
    pub process_id: String,
    /// The namespace a logging binary gets as `CONTAINER_NAMESPACE`.
    pub namespace: String,
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
    /// A logging binary and its arguments (`binary://PATH?k=v&...` → `PATH k v ...`).
    Binary {
        /// The binary.
        path: PathBuf,
        /// Each query key, then its first value, in the URI's order.
        args: Vec<String>,
    },
}

/// Parses a stdout/stderr string: a FIFO path, `file://PATH`, `fifo://PATH`, `binary://PATH?ARGS`.
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
    if let Some(rest) = spec.strip_prefix("binary://") {
        return Ok(parse_binary(rest));
    }
    if let Some((scheme, _)) = spec.split_once("://") {
        return Err(InvalidRequest::StdioScheme {
            scheme: scheme.to_owned(),
        }
        .into());
    }
    Ok(OutputTarget::Fifo(PathBuf::from(spec)))
}

/// `binary://` after the scheme: the path (of the URI's path, a host is ignored as Go's
/// `u.Path` does) and the query as arguments. Go's `url.Query()` yields keys in map order; this
/// keeps the URI's order, one of the orders Go may produce.
fn parse_binary(rest: &str) -> OutputTarget {
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = match location.find('/') {
        Some(i) => &location[i..],
        None => "",
    };
    let mut args: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k);
        if seen.insert(key.clone()) {
            args.push(key);
            args.push(percent_decode(v));
        }
    }
    OutputTarget::Binary {
        // In a path `+` is itself (Go's `u.Path`); only the query reads it as a space.
        path: PathBuf::from(percent_decode(&path.replace('+', "%2B"))),
        args,
    }
}

/// Query-string decoding as Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; a bad
/// escape is kept as it is.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How long the shim waits for a logging binary to report ready on its fd 5 (containerd waits
/// without limit).
const LOGGER_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A started logging binary: the write ends of its stdout (fd 3) and stderr (fd 4) pipes. It
/// exits when both reach EOF, that is once the shim's copies of the process output end; the
/// shim's reaper reaps it.
#[derive(Debug)]
struct Logger {
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// Moves `fds` to 3, 4, 5 in the child (called between fork and exec).
fn place_fds(fds: [i32; 3]) -> std::io::Result<()> {
    // Above every target first, so that placing one never closes another still to be placed.
    let mut high = [0i32; 3];
    for (slot, fd) in high.iter_mut().zip(fds) {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor open in this (forked) process is
        // async-signal-safe and touches no memory.
        let dup = unsafe { nix::libc::fcntl(fd, nix::libc::F_DUPFD_CLOEXEC, 10) };
        if dup < 0 {
            return Err(std::io::Error::last_os_error());
        }
        *slot = dup;
    }
    for (target, fd) in (3..).zip(high) {
        // SAFETY: dup2 is async-signal-safe; the target descriptor loses FD_CLOEXEC.
        if unsafe { nix::libc::dup2(fd, target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `NewBinaryIO`: starts the logging binary and waits until it is ready.
fn start_logger(path: &std::path::Path, args: &[String], cfg: &StdioConfig) -> Result<Logger> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let (out_r, out_w) = new_pipe()?;
    let (err_r, err_w) = new_pipe()?;
    let (ready_r, ready_w) = new_pipe()?;
    let mut cmd = std::process::Command::new(path);
    cmd.args(args)
        .env_clear()
        .env("CONTAINER_ID", &cfg.process_id)
        .env("CONTAINER_NAMESPACE", &cfg.namespace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    // SAFETY: the closure runs between fork and exec and only calls fcntl and dup2 on
    // descriptors open in the child.
    unsafe {
        cmd.pre_exec(move || place_fds(fds));
    }
    // Not waited for here: the reaper's waitpid(-1) reaps it when it exits.
    let child = cmd
        .spawn()
        .map_err(|e| ShimError::io("start logging binary", path, e))?;
    drop((out_r, err_r, ready_w));
    let mut fd = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&ready_r),
        nix::poll::PollFlags::POLLIN,
    )];
    let timeout = nix::poll::PollTimeout::try_from(LOGGER_READY_TIMEOUT.as_millis() as i32)
        .unwrap_or(nix::poll::PollTimeout::MAX);
    loop {
        match nix::poll::poll(&mut fd, timeout) {
            Ok(0) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                return Err(ShimError::io(
                    "wait for logging binary",
                    path,
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "not ready"),
                ));
            }
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(ShimError::sys("poll logging binary", e)),
        }
    }
    // A byte or EOF: both mean ready, as in containerd.
    let mut byte = [0u8; 1];
    let _ = nix::unistd::read(&ready_r, &mut byte);
    Ok(Logger {
        stdout: out_w,
        stderr: err_w,
    })
}

type BoxWriter = Box<dyn AsyncWrite + Send + Unpin>;

fn pipe_writer(fd: OwnedFd) -> Result<BoxWriter> {
    let tx = pipe::Sender::from_owned_fd(fd).map_err(|e| ShimError::io("logging pipe", "", e))?;
    Ok(Box::new(tx))
}

/// The writers of stdout and stderr: containerd decides by the stdout URI alone, and a
/// `binary://` stdout takes stderr to the same logging binary.
fn open_outputs(cfg: &StdioConfig) -> Result<(Option<BoxWriter>, Option<BoxWriter>)> {
    let stdout = parse_output(&cfg.stdout)?;
    if let OutputTarget::Binary { path, args } = &stdout {
        let logger = start_logger(path, args, cfg)?;
        let stderr = if cfg.stderr.is_empty() {
            None
        } else {
            Some(pipe_writer(logger.stderr)?)
        };
        return Ok((Some(pipe_writer(logger.stdout)?), stderr));
    }
    let stderr = parse_output(&cfg.stderr)?;
    if matches!(stderr, OutputTarget::Binary { .. }) {
        return Err(InvalidRequest::StdioScheme {
            scheme: "binary (for stderr alone)".to_owned(),
        }
        .into());
    }
    Ok((open_output(&stdout)?, open_output(&stderr)?))
}

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
        // Started by open_outputs, which sees both streams.
        OutputTarget::Binary { .. } => Ok(None),
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
    let output = |writer: Option<BoxWriter>, slot: &mut Option<OwnedFd>| -> Result<_> {
        match writer {
            Some(writer) => {
                let (r, w) = new_pipe()?;
                *slot = Some(w);
                Ok(Some((r, BoxWriterDebug(writer))))
            }
            None => Ok(None),
        }
    };
    let (out, err) = open_outputs(cfg)?;
    let stdout = output(out, &mut stdio.stdout)?;
    let stderr = output(err, &mut stdio.stderr)?;
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
        stdout: open_outputs(cfg)?.0.map(BoxWriterDebug),
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
        assert_eq!(
            parse_output("binary:///usr/bin/logger?x=1&y&x=2&p=a%2Fb+c").unwrap(),
            OutputTarget::Binary {
                path: "/usr/bin/logger".into(),
                args: ["x", "1", "y", "", "p", "a/b c"].map(String::from).to_vec(),
            }
        );
        assert_eq!(
            parse_output("binary:///usr/bin/logger").unwrap(),
            OutputTarget::Binary {
                path: "/usr/bin/logger".into(),
                args: Vec::new(),
            }
        );
        assert_eq!(
            parse_output("binary:///opt/c++/log%20ger").unwrap(),
            OutputTarget::Binary {
                path: "/opt/c++/log ger".into(),
                args: Vec::new(),
            }
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
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

    #[tokio::test]
    async fn binary_logger_gets_both_streams_and_its_env() {
        // Held from before the script is written until the logger is done: a reaper test's
        // waitpid(-1) would otherwise take the logger's status (spawn then panics in std when
        // exec failed), and a test forking while the script is open for writing makes its exec
        // fail with ETXTBSY (CI saw both at once).
        let _serial = crate::reaper::TEST_FORK_LOCK.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("logger.sh");
        let out = dir.path().join("out");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nexec 5>&-\n\
                 {{ echo \"$CONTAINER_NAMESPACE/$CONTAINER_ID $1=$2\"; /bin/cat <&3; /bin/cat <&4; }} > {}.tmp\n\
                 /bin/mv {}.tmp {}\n",
                out.display(),
                out.display(),
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let uri = format!("binary://{}?mode=test", script.display());
        let cfg = StdioConfig {
            stdout: uri.clone(),
            stderr: uri,
            process_id: "c1".into(),
            namespace: "ns1".into(),
            ..Default::default()
        };
        let (stdio, pipes) = prepare_pipes(&cfg).unwrap();
        let mut io = pipes.start().unwrap();
        let mut proc_out = pipe::Sender::from_owned_fd(stdio.stdout.unwrap()).unwrap();
        let mut proc_err = pipe::Sender::from_owned_fd(stdio.stderr.unwrap()).unwrap();
        proc_out.write_all(b"to stdout\n").await.unwrap();
        proc_err.write_all(b"to stderr\n").await.unwrap();
        drop((proc_out, proc_err));
        wait_outputs(io.take_outputs(), Duration::from_secs(5)).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !out.exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "ns1/c1 mode=test\nto stdout\nto stderr\n"
        );
    }
}
