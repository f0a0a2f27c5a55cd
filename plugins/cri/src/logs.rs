//! CRI log files: a container's stdout and stderr, read from the FIFOs the shim writes, as
//! `RFC3339Nano-timestamp stream P|F message` lines (containerd `pkg/cri/io/logger.go`). A line
//! longer than `max_container_log_line_size` is cut into partial (`P`) lines; the last piece,
//! ended by a newline, is full (`F`); output that ends without a newline is partial.
//!
//! The file is opened with `O_APPEND` and shared by both streams; each read's lines go to it in
//! one write under a lock, so lines of the two streams never mix. ReopenContainerLog swaps the
//! file for a new one at the same path (after the kubelet renamed the old one).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Local, Offset, Timelike};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

use crate::container::attach::OutputFanout;
use crate::error::{CriError, Result};

/// The tag of a complete line.
pub const TAG_FULL: &str = "F";
/// The tag of a piece of a longer line.
pub const TAG_PARTIAL: &str = "P";

/// How much of a FIFO is read at once.
const READ_SIZE: usize = 32 * 1024;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

impl Stream {
    /// The name written into each line.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Go's `time.RFC3339Nano` of `t`: fraction without trailing zeros (none when zero), `Z` for
/// UTC, else `+hh:mm`.
pub fn rfc3339_nano<Tz: chrono::TimeZone>(t: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    let offset = t.offset().fix().local_minus_utc();
    if offset == 0 {
        s.push('Z');
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let abs = offset.unsigned_abs();
        s.push_str(&format!("{sign}{:02}:{:02}", abs / 3600, (abs % 3600) / 60));
    }
    s
}

/// Turns a byte stream into CRI log lines.
#[derive(Debug)]
pub struct LineSplitter {
    stream: Stream,
    max_len: usize,
    line: Vec<u8>,
}

fn record(out: &mut Vec<u8>, timestamp: &str, stream: Stream, tag: &str, msg: &[u8]) {
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(tag.as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg);
    out.push(b'\n');
}

impl LineSplitter {
    /// A splitter for `stream`; `max_len` bytes per line, 0 for no limit.
    pub fn new(stream: Stream, max_len: usize) -> LineSplitter {
        LineSplitter {
            stream,
            max_len,
            line: Vec::new(),
        }
    }

    fn split_long(&mut self, timestamp: &str, out: &mut Vec<u8>) {
        if self.max_len == 0 {
            return;
        }
        while self.line.len() > self.max_len {
            record(
                out,
                timestamp,
                self.stream,
                TAG_PARTIAL,
                &self.line[..self.max_len],
            );
            self.line.drain(..self.max_len);
        }
    }

    /// Appends the lines `data` completes (and the pieces of over-long ones) to `out`.
    pub fn push(&mut self, mut data: &[u8], timestamp: &str, out: &mut Vec<u8>) {
        while !data.is_empty() {
            match data.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.line.extend_from_slice(&data[..i]);
                    data = &data[i + 1..];
                    if self.line.last() == Some(&b'\r') {
                        self.line.pop();
                    }
                    self.split_long(timestamp, out);
                    record(out, timestamp, self.stream, TAG_FULL, &self.line);
                    self.line.clear();
                }
                None => {
                    self.line.extend_from_slice(data);
                    data = &[];
                    self.split_long(timestamp, out);
                }
            }
        }
    }

    /// At the end of the stream: what is left, as a partial line.
    pub fn finish(&mut self, timestamp: &str, out: &mut Vec<u8>) {
        if !self.line.is_empty() {
            record(out, timestamp, self.stream, TAG_PARTIAL, &self.line);
            self.line.clear();
        }
    }
}

/// Opens (creating) a log file for appending, as containerd's `openLogFile`: its directory
/// made 0755, the file 0640.
fn open_log_file(path: &Path) -> Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| CriError::io("create log directory", dir, e))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| CriError::io("open log file", path, e))
}

/// Opens the read end of a FIFO without waiting for a writer. Reads see data once the shim
/// has opened its end and end-of-file once it has closed it.
pub fn open_fifo_reader(path: &Path) -> Result<pipe::Receiver> {
    pipe::OpenOptions::new()
        .open_receiver(path)
        .map_err(|e| CriError::io("open fifo", path, e))
}

/// One container's log writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct ContainerLogger(Arc<LoggerInner>);

#[derive(Debug)]
struct LoggerInner {
    path: Option<PathBuf>,
    max_len: usize,
    file: tokio::sync::Mutex<Option<Arc<std::fs::File>>>,
    streams: Mutex<Vec<JoinHandle<()>>>,
    /// The attachers of the output (Attach).
    fanout: Arc<OutputFanout>,
}

impl ContainerLogger {
    /// A writer to `path` (`None`: output is read and dropped, as with an empty log path);
    /// `max_line` bytes per line, 0 or less for no limit. Opens the file on the blocking pool.
    pub async fn open(path: Option<PathBuf>, max_line: i64) -> Result<ContainerLogger> {
        let file = match &path {
            Some(p) => {
                let p = p.clone();
                Some(Arc::new(
                    crate::blocking::blocking(move || open_log_file(&p)).await?,
                ))
            }
            None => None,
        };
        Ok(ContainerLogger(Arc::new(LoggerInner {
            path,
            max_len: usize::try_from(max_line).unwrap_or(0),
            file: tokio::sync::Mutex::new(file),
            streams: Mutex::new(Vec::new()),
            fanout: Arc::default(),
        })))
    }

    /// The log file's path.
    pub fn path(&self) -> Option<&Path> {
        self.0.path.as_deref()
    }

    /// The attachers of this task's output (and the state of its stdin they share).
    pub fn fanout(&self) -> Arc<OutputFanout> {
        self.0.fanout.clone()
    }

    /// Copies `reader` into the file as `stream` lines until the writer side closes.
    pub fn spawn(&self, stream: Stream, reader: pipe::Receiver) {
        let me = self.clone();
        let task = tokio::spawn(async move { me.copy(stream, reader).await });
        self.0
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    async fn copy(&self, stream: Stream, mut reader: pipe::Receiver) {
        let mut splitter = LineSplitter::new(stream, self.0.max_len);
        let mut buf = vec![0u8; READ_SIZE];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(path = ?self.0.path, stream = stream.as_str(), error = %e, "read container output");
                    0
                }
            };
            let now = rfc3339_nano(&Local::now());
            let mut out = Vec::new();
            if n == 0 {
                splitter.finish(&now, &mut out);
                self.0.fanout.close(stream);
            } else {
                splitter.push(&buf[..n], &now, &mut out);
                self.0.fanout.send(stream, &buf[..n]).await;
            }
            self.write(out).await;
            if n == 0 {
                return;
            }
        }
    }

    async fn write(&self, out: Vec<u8>) {
        if out.is_empty() {
            return;
        }
        // Held across the write: the two streams' batches and a reopen never interleave.
        let file = self.0.file.lock().await;
        let Some(f) = file.clone() else { return };
        let path = self.0.path.clone();
        let written =
            tokio::task::spawn_blocking(move || (&*f).write_all(&out).map_err(|e| (path, e))).await;
        match written {
            Ok(Ok(())) => {}
            // Keep draining the container's output even when the file cannot take it.
            Ok(Err((path, e))) => tracing::warn!(path = ?path, error = %e, "write container log"),
            Err(e) => tracing::warn!(error = %e, "write container log"),
        }
    }

    /// Opens the log path again and writes there from now on (ReopenContainerLog).
    pub async fn reopen(&self) -> Result<()> {
        let Some(path) = self.0.path.clone() else {
            return Ok(());
        };
        let mut file = self.0.file.lock().await;
        let new = crate::blocking::blocking(move || open_log_file(&path)).await?;
        *file = Some(Arc::new(new));
        Ok(())
    }

    /// Waits up to `timeout` for every stream to reach its end; true if they all did. Streams
    /// still copying then are stopped.
    pub async fn wait(&self, timeout: Duration) -> bool {
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.0.streams.lock().unwrap_or_else(|e| e.into_inner()));
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        let done = tokio::time::timeout(timeout, futures::future::join_all(tasks))
            .await
            .is_ok();
        if !done {
            for a in aborts {
                a.abort();
            }
        }
        done
    }

    /// Stops copying (the daemon is going away or the container is removed).
    pub fn abort(&self) {
        for t in self
            .0
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{FixedOffset, TimeZone, Utc};

    use super::*;

    fn lines(max: usize, chunks: &[&[u8]], end: bool) -> Vec<String> {
        let mut s = LineSplitter::new(Stream::Stdout, max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, "T", &mut out);
        }
        if end {
            s.finish("T", &mut out);
        }
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn full_partial_and_split_lines() {
        assert_eq!(
            lines(0, &[b"hello\nwor", b"ld\r\n\n"], true),
            ["T stdout F hello", "T stdout F world", "T stdout F "]
        );
        assert_eq!(lines(0, &[b"no newline"], true), ["T stdout P no newline"]);
        assert_eq!(
            lines(4, &[b"abcdefghij\n"], true),
            ["T stdout P abcd", "T stdout P efgh", "T stdout F ij"]
        );
        // Exactly the limit is one full line.
        assert_eq!(lines(4, &[b"ab", b"cd\n"], true), ["T stdout F abcd"]);
        assert_eq!(
            lines(4, &[b"abcde"], true),
            ["T stdout P abcd", "T stdout P e"]
        );
    }

    #[test]
    fn timestamps_are_gos_rfc3339nano() {
        let t = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(rfc3339_nano(&t), "2024-01-02T03:04:05Z");
        let t = t + chrono::Duration::nanoseconds(120_000_000);
        assert_eq!(rfc3339_nano(&t), "2024-01-02T03:04:05.12Z");
        let east = FixedOffset::east_opt(2 * 3600).unwrap();
        let t =
            east.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::nanoseconds(1);
        assert_eq!(rfc3339_nano(&t), "2024-01-02T03:04:05.000000001+02:00");
    }

    #[tokio::test]
    async fn fifo_output_lands_in_the_log_and_survives_reopen() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("stdout");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let log = d.path().join("logs/c.log");
        let logger = ContainerLogger::open(Some(log.clone()), 16 * 1024)
            .await
            .unwrap();
        logger.spawn(Stream::Stdout, open_fifo_reader(&fifo).unwrap());
        let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        w.write_all(b"one\n").unwrap();
        // Wait for the line, rename the file as the kubelet does, reopen.
        for _ in 0..100 {
            if std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("one")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let rotated = d.path().join("logs/c.log.1");
        std::fs::rename(&log, &rotated).unwrap();
        logger.reopen().await.unwrap();
        w.write_all(b"two\n").unwrap();
        drop(w);
        assert!(logger.wait(Duration::from_secs(5)).await);
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&log).unwrap();
        assert!(old.ends_with(" stdout F one\n"), "{old}");
        assert!(new.ends_with(" stdout F two\n"), "{new}");
        let ts = new.split(' ').next().unwrap();
        assert!(DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    }
}
