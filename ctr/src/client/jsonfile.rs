//! Docker's `json-file` log format (moby `daemon/logger/jsonfilelog`): one JSON object per line,
//! `{"log":"line\n","stream":"stdout","time":"2006-01-02T15:04:05.000000000Z"}`, appended to
//! `<id>-json.log`; with `max-size` the file is rotated before a write once it has reached the
//! size, to `<file>.1`, `<file>.1` to `<file>.2`, ... keeping `max-file` files in all (moby
//! `loggerutils.LogFile`). Sizes are Docker's (`units.RAMInBytes`: `k`, `m`, `g` are powers of
//! 1024).
//!
//! The writer runs in the logging process the shim starts ([`super::logdriver`]); the reader
//! serves `berth logs` across the rotated files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One log line as Docker stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The line, with its `\n` unless it was a partial line.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 with nanoseconds, UTC.
    pub time: String,
}

/// A size or count that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptError {
    /// `max-size` not a size.
    #[error("invalid max-size {0:?}: want a size such as 10k, 1m or 2g")]
    Size(String),
    /// `max-file` not a positive integer.
    #[error("invalid max-file {0:?}: want an integer of at least 1")]
    Count(String),
}

/// Parses Docker's `max-size` (`units.RAMInBytes`): a number with an optional `b`, `k`, `m`,
/// `g`, `t` (powers of 1024) and an optional trailing `b`.
pub fn parse_size(text: &str) -> Result<u64, OptError> {
    let bad = || OptError::Size(text.to_owned());
    let lower = text.trim().to_ascii_lowercase();
    let digits = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.strip_suffix('b').unwrap_or(unit) {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Parses `max-file`.
pub fn parse_count(text: &str) -> Result<u32, OptError> {
    match text.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(OptError::Count(text.to_owned())),
    }
}

/// Docker's timestamp: UTC with nine fraction digits.
pub fn format_time(secs: i64, nanos: u32) -> String {
    let base = crate::timefmt::rfc3339(secs);
    format!("{}.{nanos:09}Z", &base[..base.len() - 1])
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 time (`Z` or `±HH:MM`, any fraction) to seconds and nanoseconds since
/// the epoch.
pub fn parse_time(text: &str) -> Option<(i64, u32)> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<u32>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let len = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        if len == 0 {
            return None;
        }
        let digits: String = frac[..len]
            .chars()
            .chain("000000000".chars())
            .take(9)
            .collect();
        nanos = digits.parse().ok()?;
        rest = &frac[len..];
    }
    let offset: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s) - offset;
    Some((secs, nanos))
}

/// The rotated file `n` of `path` (`n` = 0 is `path` itself).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return path.to_owned();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Appends entries to a json-file log, rotating by size.
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    /// Rotate once the file has reached this many bytes (`None`: never).
    max_size: Option<u64>,
    /// Files kept, the current one included.
    max_file: u32,
    file: File,
    size: u64,
}

impl Writer {
    /// Opens (creating it and its directory) the log at `path`.
    pub fn open(path: &Path, max_size: Option<u64>, max_file: u32) -> io::Result<Writer> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path: path.to_owned(),
            max_size,
            max_file: max_file.max(1),
            file,
            size,
        })
    }

    /// Writes one entry (rotating first when the file is full).
    pub fn write(&mut self, entry: &Entry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.max_size.is_some_and(|max| self.size >= max) {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// `<file>.N-1` → `<file>.N`, ..., `<file>` → `<file>.1`, a new empty `<file>`; with one
    /// file kept, the file is emptied.
    fn rotate(&mut self) -> io::Result<()> {
        if self.max_file > 1 {
            for n in (1..self.max_file - 1).rev() {
                match fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(&self.path, rotated(&self.path, 1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        } else {
            self.file.set_len(0)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// Every entry of the log at `path` and its rotated files, oldest first; unreadable lines are
/// skipped. Also returns how far `path` itself was read, for following it.
pub fn read_all(path: &Path) -> io::Result<(Vec<Entry>, u64)> {
    let mut entries = Vec::new();
    let mut n = 1;
    while rotated(path, n).exists() {
        n += 1;
    }
    for i in (1..n).rev() {
        match File::open(rotated(path, i)) {
            Ok(f) => {
                read_entries(f, &mut entries)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let current = File::open(path)?;
    let len = read_entries(current, &mut entries)?;
    Ok((entries, len))
}

/// Reads complete lines of `f` into `out`; returns the bytes consumed (a trailing partial line,
/// still being written, is left for later).
fn read_entries(f: File, out: &mut Vec<Entry>) -> io::Result<u64> {
    let mut reader = BufReader::new(f);
    let mut consumed = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(consumed);
        }
        consumed += n as u64;
        if let Ok(entry) = serde_json::from_slice::<Entry>(&line) {
            out.push(entry);
        }
    }
}

/// Follows the log at `path` from byte `offset`: new entries as they are appended; after a
/// rotation (the file shorter than the offset, or another file), from the new file's start.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    offset: u64,
    inode: Option<u64>,
}

impl Follower {
    /// A follower of `path` that has read `offset` bytes of it.
    pub fn new(path: &Path, offset: u64) -> Follower {
        Follower {
            path: path.to_owned(),
            offset,
            inode: inode(path),
        }
    }

    /// The entries appended since the last call.
    pub fn poll(&mut self) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let now = inode(&self.path);
        if now != self.inode {
            // Rotated: finish the old file (now `.1`), then start on the new one.
            if let Some(old) = self.inode {
                let first = rotated(&self.path, 1);
                if inode(&first) == Some(old) {
                    let mut f = File::open(first)?;
                    f.seek(SeekFrom::Start(self.offset))?;
                    read_entries(f, &mut out)?;
                }
            }
            self.inode = now;
            self.offset = 0;
        }
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        if len < self.offset {
            self.offset = 0;
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.take(len - self.offset).read_to_end(&mut buf)?;
        let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        for line in buf[..complete].split(|b| *b == b'\n') {
            if let Ok(entry) = serde_json::from_slice::<Entry>(line) {
                out.push(entry);
            }
        }
        self.offset += complete as u64;
        Ok(out)
    }
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata(path).ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> Entry {
        Entry {
            log: format!("line {i}\n"),
            stream: if i.is_multiple_of(2) {
                "stdout"
            } else {
                "stderr"
            }
            .into(),
            time: format_time(1_700_000_000 + i as i64, 5),
        }
    }

    #[test]
    fn sizes_and_counts_parse_like_docker() {
        assert_eq!(parse_size("1m").unwrap(), 1 << 20);
        assert_eq!(parse_size("10k").unwrap(), 10 << 10);
        assert_eq!(parse_size("2KB").unwrap(), 2048);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("1x").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(parse_count("3").unwrap(), 3);
        assert!(parse_count("0").is_err());
        assert!(parse_count("a").is_err());
    }

    #[test]
    fn times_round_trip() {
        let t = format_time(1_700_000_000, 42);
        assert_eq!(t, "2023-11-14T22:13:20.000000042Z");
        assert_eq!(parse_time(&t), Some((1_700_000_000, 42)));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_time("2023-11-15T00:13:20.5+02:00"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2023-13-14T22:13:20Z"), None);
    }

    #[test]
    fn the_format_is_dockers() {
        let line = serde_json::to_string(&entry(0)).unwrap();
        assert_eq!(
            line,
            r#"{"log":"line 0\n","stream":"stdout","time":"2023-11-14T22:13:20.000000005Z"}"#
        );
    }

    #[test]
    fn rotates_at_max_size_and_reads_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/c-json.log");
        let line_len = serde_json::to_vec(&entry(0)).unwrap().len() as u64 + 1;
        let mut w = Writer::open(&path, Some(line_len * 3), 3).unwrap();
        for i in 0..10 {
            w.write(&entry(i)).unwrap();
        }
        // 10 lines, rotated before the 4th, 7th and 10th: `.2` = 3..=5, `.1` = 6..=8, 9.
        assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        assert!(fs::metadata(&path).unwrap().len() <= line_len * 3);
        let (all, offset) = read_all(&path).unwrap();
        let logs: Vec<String> = all.iter().map(|e| e.log.clone()).collect();
        let want: Vec<String> = (3..10).map(|i| format!("line {i}\n")).collect();
        assert_eq!(logs, want);
        assert_eq!(offset, fs::metadata(&path).unwrap().len());
        // A writer opened again goes on from the file's size.
        drop(w);
        let mut w = Writer::open(&path, Some(line_len * 3), 3).unwrap();
        w.write(&entry(10)).unwrap();
        assert_eq!(read_all(&path).unwrap().0.last().unwrap(), &entry(10));
    }

    #[test]
    fn one_file_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut w = Writer::open(&path, Some(10), 1).unwrap();
        for i in 0..3 {
            w.write(&entry(i)).unwrap();
        }
        assert!(!rotated(&path, 1).exists());
        assert_eq!(read_all(&path).unwrap().0, vec![entry(2)]);
    }

    #[test]
    fn follower_sees_appends_and_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let line_len = serde_json::to_vec(&entry(0)).unwrap().len() as u64 + 1;
        let mut w = Writer::open(&path, Some(line_len * 2), 3).unwrap();
        w.write(&entry(0)).unwrap();
        let (seen, offset) = read_all(&path).unwrap();
        assert_eq!(seen.len(), 1);
        let mut f = Follower::new(&path, offset);
        assert!(f.poll().unwrap().is_empty());
        w.write(&entry(1)).unwrap();
        assert_eq!(f.poll().unwrap(), vec![entry(1)]);
        // Entry 2 goes to a new file: the old one is now `.1`.
        w.write(&entry(2)).unwrap();
        w.write(&entry(3)).unwrap();
        assert_eq!(f.poll().unwrap(), vec![entry(2), entry(3)]);
    }
}
