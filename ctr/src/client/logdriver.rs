//! `berth` as a shim logging binary, the way nerdctl is its own (`pkg/logging`,
//! `_NERDCTL_INTERNAL_LOGGING`): `berth run --log-driver json-file` gives the task the log URI
//! `binary:///path/to/berth?_BERTH_INTERNAL_LOGGING=<config as JSON>`. The shim (Berth's or
//! containerd's, `NewBinaryCmd`) runs `berth _BERTH_INTERNAL_LOGGING <config>` with the
//! process's stdout on fd 3, its stderr on fd 4 and fd 5 to close once ready; `main.rs` sends
//! that invocation here before any argument parsing or daemon connection.
//!
//! One query key only: containerd turns the query into arguments in Go map order, so a second
//! key could come first. The logger is the shim's child, not berthd's: it lives on across
//! daemon restarts and ends when both streams reach EOF (the process and the shim's copies
//! closed them).

use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;

use serde::{Deserialize, Serialize};

use super::jsonfile::{format_time, Entry, Writer};

/// The first argument that makes `berth` a logging binary.
pub const MAGIC_ARG: &str = "_BERTH_INTERNAL_LOGGING";

/// A Docker partial line: output longer than this without a newline is written as it is.
const MAX_LINE: usize = 16 * 1024;

/// What the logger writes, carried in the log URI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// The driver (`json-file`).
    pub driver: String,
    /// The log file.
    pub path: PathBuf,
    /// `max-size` in bytes (absent: no rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// `max-file`.
    #[serde(default = "one")]
    pub max_file: u32,
}

fn one() -> u32 {
    1
}

/// Query-value encoding (Go's `url.QueryEscape` minus the `+` for spaces, which it decodes the
/// same): every byte but the unreserved ones as `%XX`.
pub fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl LogConfig {
    /// The log URI that makes the berth binary at `exe` this logger.
    pub fn uri(&self, exe: &std::path::Path) -> io::Result<String> {
        let json = serde_json::to_string(self).map_err(io::Error::other)?;
        let path: String = exe
            .to_string_lossy()
            .split('/')
            .map(query_escape)
            .collect::<Vec<_>>()
            .join("/");
        Ok(format!(
            "binary://{path}?{MAGIC_ARG}={}",
            query_escape(&json)
        ))
    }
}

/// Why the logger stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    /// The config argument is not one.
    #[error("logging config: {0}")]
    Config(#[from] serde_json::Error),
    /// A driver other than json-file.
    #[error("unknown log driver {0:?}")]
    Driver(String),
    /// The log file could not be opened or written.
    #[error("log file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Reads `from` and sends one entry per line (or per [`MAX_LINE`] bytes) of `stream`.
fn pump(mut from: File, stream: &'static str, to: mpsc::Sender<Entry>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    let send = |bytes: &[u8]| {
        let (secs, nanos) = crate::timefmt::now();
        let _ = to.send(Entry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream: stream.to_owned(),
            time: format_time(secs, nanos),
        });
    };
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        loop {
            let window = &pending[..pending.len().min(MAX_LINE)];
            let end = match window.iter().position(|b| *b == b'\n') {
                Some(i) => i + 1,
                None if pending.len() >= MAX_LINE => MAX_LINE,
                None => break,
            };
            send(&pending[..end]);
            pending.drain(..end);
        }
    }
    if !pending.is_empty() {
        send(&pending);
    }
}

/// Runs the logger with `config` (the argument after [`MAGIC_ARG`]) until both streams end.
pub fn run(config: &str) -> Result<(), LoggerError> {
    let config: LogConfig = serde_json::from_str(config)?;
    if config.driver != "json-file" {
        return Err(LoggerError::Driver(config.driver));
    }
    let file_err = |source| LoggerError::File {
        path: config.path.clone(),
        source,
    };
    let mut writer =
        Writer::open(&config.path, config.max_size, config.max_file).map_err(file_err)?;
    // SAFETY: the shim's logging protocol (containerd `NewBinaryIO`) starts this process with
    // the read ends of the stdout and stderr pipes on fds 3 and 4 and the write end of the
    // readiness pipe on fd 5; nothing else in this process owns them.
    let (stdout, stderr, ready) = unsafe {
        (
            File::from_raw_fd(3),
            File::from_raw_fd(4),
            OwnedFd::from_raw_fd(5),
        )
    };
    // Ready: the file is open.
    drop(ready);
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let out = thread::spawn(move || pump(stdout, "stdout", tx));
    let err = thread::spawn(move || pump(stderr, "stderr", tx2));
    let mut failed = None;
    for entry in rx {
        if let Err(e) = writer.write(&entry) {
            failed.get_or_insert(e);
        }
    }
    let _ = out.join();
    let _ = err.join();
    match failed {
        Some(e) => Err(file_err(e)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uri_carries_one_key() {
        let config = LogConfig {
            driver: "json-file".into(),
            path: "/var/lib/berth/berth/containers/default/c1/c1-json.log".into(),
            max_size: Some(1 << 20),
            max_file: 3,
        };
        let uri = config
            .uri(std::path::Path::new("/usr/local/bin/berth"))
            .unwrap();
        let (head, query) = uri.split_once('?').unwrap();
        assert_eq!(head, "binary:///usr/local/bin/berth");
        let (key, value) = query.split_once('=').unwrap();
        assert_eq!(key, MAGIC_ARG);
        assert!(!value.contains(['&', '=', '"', ' ', '/']), "{value}");
        // What the shim hands the logger decodes back to the config.
        let decoded = percent_decode(value);
        assert_eq!(serde_json::from_str::<LogConfig>(&decoded).unwrap(), config);
    }

    fn percent_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_and_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        let mut long = vec![b'x'; MAX_LINE + 5];
        long.extend_from_slice(b"\na\nb\nend");
        std::fs::write(&path, &long).unwrap();
        let (tx, rx) = mpsc::channel();
        pump(File::open(&path).unwrap(), "stderr", tx);
        let got: Vec<Entry> = rx.iter().collect();
        let logs: Vec<usize> = got.iter().map(|e| e.log.len()).collect();
        assert_eq!(logs, [MAX_LINE, 6, 2, 2, 3]);
        assert_eq!(got[2].log, "a\n");
        assert_eq!(got[4].log, "end");
        assert!(got.iter().all(|e| e.stream == "stderr"));
    }
}
