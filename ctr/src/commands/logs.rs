//! `berth logs [-f] [--since T] [--until T] [--tail N] [-t] CONTAINER`: Docker's `logs` over the
//! json-file log a `run --log-driver json-file` container writes (its path in the
//! `berth/log-path` label), read across the rotated files; each line goes to stdout or stderr as
//! it was written. A container logging to a `file://` URI has its file printed as it is (no
//! streams or times there, so `--since`/`--until`/`-t` do not apply).
//!
//! `-f` follows the file (and its rotations) until the task has stopped for good: stopped or
//! gone, and not kept running by the restart monitor.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use berth_proto::containerd::services::containers::v1::Container;
use berth_proto::containerd::v1::types::Status;

use crate::client::jsonfile::{parse_time, read_all, Entry, Follower};
use crate::client::restart::{label, LOG_PATH_LABEL};
use crate::client::{tasks, Client};

/// How often `-f` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How often `-f` asks whether the task is still there.
const FOLLOW_STATUS_EVERY: u32 = 5;

/// Flags of `logs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Follow the log output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only lines since a time: RFC 3339, Unix seconds, or relative (`10m`, `1h30m`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines before a time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// Number of lines to show from the end (`all` for every line).
    #[arg(long, default_value = "all")]
    pub tail: String,
    /// Show the time of each line.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Container id.
    pub id: String,
}

/// A `--since`/`--until` value as (seconds, nanoseconds) since the epoch.
fn parse_when(text: &str, now: (i64, u32)) -> Result<(i64, u32)> {
    if let Some(t) = parse_time(text) {
        return Ok(t);
    }
    if let Some((secs, frac)) = text.split_once('.').or(Some((text, ""))) {
        if !secs.is_empty()
            && secs.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
        {
            let nanos: String = frac.chars().chain("000000000".chars()).take(9).collect();
            return Ok((secs.parse()?, nanos.parse()?));
        }
    }
    let ago = crate::cli::parse_duration(text).map_err(|e| {
        anyhow::anyhow!("invalid time {text:?}: want RFC 3339, Unix seconds or a duration ({e})")
    })?;
    let total = i128::from(now.0) * 1_000_000_000 + i128::from(now.1) - ago.as_nanos() as i128;
    Ok((
        total.div_euclid(1_000_000_000) as i64,
        total.rem_euclid(1_000_000_000) as u32,
    ))
}

/// `--tail`: `None` for all.
fn parse_tail(text: &str) -> Result<Option<usize>> {
    if text == "all" || text.is_empty() {
        return Ok(None);
    }
    match text.parse::<i64>() {
        Ok(n) if n < 0 => Ok(None),
        Ok(n) => Ok(Some(usize::try_from(n)?)),
        Err(_) => bail!("invalid --tail {text:?}: want a number or \"all\""),
    }
}

/// Where the container's log is.
enum Source {
    /// A json-file log.
    Json(PathBuf),
    /// A plain file (`file://` log URI).
    Raw(PathBuf),
}

fn source(c: &Container) -> Result<Source> {
    if let Some(path) = c.labels.get(LOG_PATH_LABEL).filter(|p| !p.is_empty()) {
        return Ok(Source::Json(PathBuf::from(path)));
    }
    if let Some(path) = c
        .labels
        .get(label::LOG_URI)
        .and_then(|u| u.strip_prefix("file://"))
    {
        return Ok(Source::Raw(PathBuf::from(path)));
    }
    bail!(
        "container {} has no log berth can read: run it with --log-driver json-file or --log-uri file:///PATH",
        c.id
    )
}

/// Prints entries, each to the stream it came from.
fn print(entries: &[Entry], timestamps: bool) -> Result<()> {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for e in entries {
        let w: &mut dyn std::io::Write = if e.stream == "stderr" {
            &mut err
        } else {
            &mut out
        };
        if timestamps {
            write!(w, "{} ", e.time)?;
        }
        w.write_all(e.log.as_bytes())?;
    }
    out.flush()?;
    err.flush()?;
    Ok(())
}

/// Whether the task may still write: running (or about to be), or to be restarted.
async fn still_going(client: &Client, id: &str) -> bool {
    let Ok(c) = tasks::container(client, id).await else {
        return false;
    };
    if c.labels.get(label::STATUS).map(String::as_str) == Some("running") {
        return true;
    }
    match tasks::get(client, id, "").await {
        Ok(p) => p.status != Status::Stopped as i32,
        Err(_) => false,
    }
}

fn print_raw(path: &Path, tail: Option<usize>) -> Result<()> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    std::io::stdout().write_all(&text[raw_tail_start(&text, tail)..])?;
    Ok(())
}

/// Where the last `tail` lines of `text` start.
fn raw_tail_start(text: &[u8], tail: Option<usize>) -> usize {
    let Some(n) = tail else { return 0 };
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let starts: Vec<usize> = std::iter::once(0)
        .chain(
            body.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    match n {
        0 => text.len(),
        n if n >= starts.len() => 0,
        n => starts[starts.len() - n],
    }
}

/// Prints the log.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let tail = parse_tail(&args.tail)?;
    let now = crate::timefmt::now();
    let since = args
        .since
        .as_deref()
        .map(|t| parse_when(t, now))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|t| parse_when(t, now))
        .transpose()?;
    let c = tasks::container(client, &args.id).await?;
    let path = match source(&c)? {
        Source::Json(path) => path,
        Source::Raw(path) => {
            if args.since.is_some() || args.until.is_some() || args.timestamps || args.follow {
                bail!("--since, --until, -t and -f need a json-file log (--log-driver json-file)");
            }
            return print_raw(&path, tail);
        }
    };
    let in_range = |e: &Entry| {
        let Some(t) = parse_time(&e.time) else {
            return true;
        };
        since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u)
    };
    let (entries, offset) = match read_all(&path) {
        Ok(read) => read,
        // The logger has not written yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), 0),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut entries: Vec<Entry> = entries.into_iter().filter(|e| in_range(e)).collect();
    if let Some(n) = tail {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    print(&entries, args.timestamps)?;
    if !args.follow || until.is_some() {
        return Ok(());
    }
    let mut follower = Follower::new(&path, offset);
    let mut idle = 0u32;
    loop {
        let fresh: Vec<Entry> = follower
            .poll()
            .with_context(|| format!("cannot read {}", path.display()))?
            .into_iter()
            .filter(|e| in_range(e))
            .collect();
        if fresh.is_empty() {
            idle += 1;
            if idle.is_multiple_of(FOLLOW_STATUS_EVERY) && !still_going(client, &args.id).await {
                // What was written before the end.
                let last = follower.poll()?;
                return print(&last, args.timestamps);
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        } else {
            idle = 0;
            print(&fresh, args.timestamps)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_take_three_forms() {
        let now = (1_700_000_000, 0);
        assert_eq!(
            parse_when("2023-11-14T22:13:20Z", now).unwrap(),
            (1_700_000_000, 0)
        );
        assert_eq!(
            parse_when("1699999999.5", now).unwrap(),
            (1_699_999_999, 500_000_000)
        );
        assert_eq!(parse_when("10m", now).unwrap(), (1_699_999_400, 0));
        assert!(parse_when("last tuesday", now).is_err());
    }

    #[test]
    fn raw_tails() {
        let text = b"a\nb\nc\n";
        assert_eq!(raw_tail_start(text, None), 0);
        assert_eq!(&text[raw_tail_start(text, Some(2))..], b"b\nc\n");
        assert_eq!(raw_tail_start(text, Some(9)), 0);
        assert_eq!(raw_tail_start(text, Some(0)), text.len());
    }

    #[test]
    fn tail_values() {
        assert_eq!(parse_tail("all").unwrap(), None);
        assert_eq!(parse_tail("5").unwrap(), Some(5));
        assert_eq!(parse_tail("-1").unwrap(), None);
        assert!(parse_tail("five").is_err());
    }
}
