//! Running the real containerd `ctr` client against a [`Daemon`].

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::command::{run_with_timeout, CmdOutput};
use crate::daemon::Daemon;

/// The containerd client the daemon must satisfy (Debian `containerd` 1.6.20).
pub const CTR_BIN: &str = "/usr/bin/ctr";

/// How long one `ctr` invocation may take before it is killed.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `ctr --address <daemon socket> <args>` and captures its output. Namespace and address
/// variables from the environment are removed so that only `args` choose them (`-n <ns>` as
/// the first argument selects a namespace).
pub fn ctr(daemon: &Daemon, args: &[&str]) -> CmdOutput {
    ctr_at(daemon.address(), args)
}

/// Like [`ctr`] for any socket (a real containerd too).
pub fn ctr_at(address: &Path, args: &[&str]) -> CmdOutput {
    client_at(Path::new(CTR_BIN), address, args)
}

/// Runs the ctr-compatible client `program` (`ctr` or `berth`) as `<program> --address
/// <address> <args>`, with the environment's address, namespace and snapshotter removed.
pub fn client_at(program: &Path, address: &Path, args: &[&str]) -> CmdOutput {
    let mut cmd = Command::new(program);
    cmd.arg("--address")
        .arg(address)
        .args(args)
        .env_remove("CONTAINERD_ADDRESS")
        .env_remove("CONTAINERD_NAMESPACE")
        .env_remove("CONTAINERD_SNAPSHOTTER");
    run_with_timeout(cmd, CTR_TIMEOUT)
}

/// One row of a `ctr` table: column header → trimmed cell (empty when the cell is blank).
pub type Row = BTreeMap<String, String>;

/// Parses the tabwriter tables `ctr ... ls` prints (`TYPE  ID  PLATFORMS  STATUS`, `NAME
/// LABELS`, ...). Cells are cut at the header words' columns rather than split on whitespace,
/// so blank cells (a namespace without labels) stay in their column. Returns the header words
/// and the rows; panics when the text is empty.
pub fn parse_table(text: &str) -> (Vec<String>, Vec<Row>) {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("no table in {text:?}"));
    // Column starts: byte offsets of the header words (ctr only prints ASCII headers).
    let mut starts = Vec::new();
    let mut names = Vec::new();
    let mut prev_space = true;
    for (i, c) in header.char_indices() {
        if !c.is_whitespace() && prev_space {
            starts.push(i);
        }
        prev_space = c.is_whitespace();
    }
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(header.len());
        names.push(header[start..end].trim().to_owned());
    }
    let rows = lines
        .map(|line| {
            let cell = |n: usize| {
                let start = starts[n].min(line.len());
                let end = starts.get(n + 1).map_or(line.len(), |&e| e.min(line.len()));
                line.get(start..end).unwrap_or("").trim().to_owned()
            };
            names
                .iter()
                .enumerate()
                .map(|(n, name)| (name.clone(), cell(n)))
                .collect()
        })
        .collect();
    (names, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from ctr 1.6.20 against containerd 1.6.20.
    const PLUGINS: &str = "\
TYPE                            ID                       PLATFORMS      STATUS    
io.containerd.content.v1        content                  -              ok        
io.containerd.snapshotter.v1    devmapper                linux/amd64    error     
";
    const NAMESPACES: &str = "NAME LABELS  \na            \nb    x=y,z=w \n";

    #[test]
    fn parses_plugins_table() {
        let (header, rows) = parse_table(PLUGINS);
        assert_eq!(header, ["TYPE", "ID", "PLATFORMS", "STATUS"]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["TYPE"], "io.containerd.snapshotter.v1");
        assert_eq!(rows[1]["ID"], "devmapper");
        assert_eq!(rows[1]["PLATFORMS"], "linux/amd64");
        assert_eq!(rows[1]["STATUS"], "error");
    }

    #[test]
    fn keeps_blank_cells() {
        let (header, rows) = parse_table(NAMESPACES);
        assert_eq!(header, ["NAME", "LABELS"]);
        assert_eq!(rows[0]["NAME"], "a");
        assert_eq!(rows[0]["LABELS"], "");
        assert_eq!(rows[1]["LABELS"], "x=y,z=w");
    }
}

/// How long [`BackgroundCtr`] waits for a line or for its exit.
const BACKGROUND_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// A `ctr` process left running (an open stream: `events`, an attached `run`), its stdout and
/// stderr lines arriving on a channel. Killed and reaped when dropped.
#[derive(Debug)]
pub struct BackgroundCtr {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl BackgroundCtr {
    /// Starts `ctr --address <address> <args…>` (no `CONTAINERD_NAMESPACE` from the
    /// environment).
    pub fn spawn(address: &std::path::Path, args: &[&str]) -> BackgroundCtr {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(CTR_BIN)
            .arg("--address")
            .arg(address)
            .args(args)
            .env_remove("CONTAINERD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ctr");
        let (tx, lines) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        BackgroundCtr { child, lines }
    }

    /// Waits for a line satisfying `want`; panics with what came otherwise.
    #[track_caller]
    pub fn wait_line(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + BACKGROUND_WAIT;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("no {what} within {BACKGROUND_WAIT:?}; got {seen:?}");
    }

    /// Waits for the process to exit; returns its exit code and the lines it printed that no
    /// [`BackgroundCtr::wait_line`] took.
    #[track_caller]
    pub fn wait_exit(&mut self) -> (Option<i32>, String) {
        let deadline = std::time::Instant::now() + BACKGROUND_WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll ctr") {
                // The reader threads may still be passing on the last lines.
                std::thread::sleep(std::time::Duration::from_millis(100));
                let text: Vec<String> = self.lines.try_iter().collect();
                return (status.code(), text.join("\n"));
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ctr still running after {BACKGROUND_WAIT:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for BackgroundCtr {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
