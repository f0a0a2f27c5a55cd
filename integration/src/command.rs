//! Running a child process to completion with a deadline and capturing its output.

use std::fmt;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The outcome of a finished (or timed-out and killed) command.
#[derive(Debug)]
pub struct CmdOutput {
    /// The command line, for messages.
    pub command: String,
    /// Exit status; after a timeout, the status of the killed process.
    pub status: ExitStatus,
    /// Captured standard output, lossily decoded as UTF-8.
    pub stdout: String,
    /// Captured standard error, lossily decoded as UTF-8.
    pub stderr: String,
    /// True when the deadline passed and the process was killed.
    pub timed_out: bool,
}

impl CmdOutput {
    /// True when the process exited by itself with status 0.
    pub fn success(&self) -> bool {
        self.status.success() && !self.timed_out
    }

    /// Asserts success and returns stdout; on failure panics with the command, status and both
    /// streams.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(self.success(), "command failed: {self}");
        &self.stdout
    }

    /// Asserts that the process exited by itself with a non-zero status (not killed by the
    /// deadline) and returns stderr.
    #[track_caller]
    pub fn fails(&self) -> &str {
        assert!(
            !self.timed_out && self.status.code().is_some_and(|c| c != 0),
            "expected a non-zero exit: {self}"
        );
        &self.stderr
    }
}

impl fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}`: {}{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.status,
            if self.timed_out {
                " (killed after timeout)"
            } else {
                ""
            },
            self.stdout,
            self.stderr
        )
    }
}

/// Reads a pipe to its end on a thread, so that neither pipe can fill up and block the child.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error only truncates what we show; the exit status still decides.
            let _ = pipe.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `cmd` with stdin closed, capturing stdout and stderr; kills it (SIGKILL) once `timeout`
/// has passed. Panics only when the process cannot be spawned.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> CmdOutput {
    let command = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {command}: {e}"));
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    // A blocking wait on its own thread reports the exit the moment it happens: the benchmark
    // times commands with this, so polling would round every figure up to the poll interval.
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(());
        status
    });
    let timed_out = match rx.recv_timeout(timeout) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => false,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            // The child is not reaped until the waiter's wait returns, so the pid is still ours.
            if let Ok(pid) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            true
        }
    };
    let status = waiter
        .join()
        .unwrap_or_else(|_| panic!("waiter thread for {command} panicked"))
        .unwrap_or_else(|e| panic!("cannot wait for {command}: {e}"));
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    CmdOutput {
        command,
        status,
        stdout,
        stderr,
        timed_out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn captures_both_streams_and_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let out = run_with_timeout(cmd, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert!(!out.timed_out);
        assert_eq!(out.fails(), "err\n");
    }

    #[test]
    fn kills_after_timeout() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let start = Instant::now();
        let out = run_with_timeout(cmd, Duration::from_millis(200));
        assert!(out.timed_out);
        assert!(!out.success());
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
