//! The on-disk form of an ingest (an unfinished write), after containerd's local store:
//!
//! ```text
//! ingest/<sha256 hex of the ref>/data        the bytes written so far (offset = its length)
//!                                /ref         the client's ref, verbatim
//!                                /startedat   unix time, "<secs>.<nanos>"
//!                                /updatedat   unix time; status takes the later of it and
//!                                             data's mtime (it is rewritten when a writer drops)
//!                                /total       announced size in decimal (absent = unknown)
//!                                /expected    announced digest (absent = none)
//! ingest/.tmp-<sha256 hex>/                   an ingest being created, renamed into place
//! ingest/<…>/<name>.tmp                       a small file being replaced, renamed into place
//! ```
//!
//! The ref is hashed, never used as a path component, so any string (`../../x`, `a/b`) is a
//! safe ref.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::digest::Digest;
use super::error::{io_err, ContentError};

/// The data file.
pub(crate) const DATA: &str = "data";
/// The ref file.
pub(crate) const REF: &str = "ref";
/// The start time file.
pub(crate) const STARTED_AT: &str = "startedat";
/// The last-update time file.
pub(crate) const UPDATED_AT: &str = "updatedat";
/// The announced total file.
pub(crate) const TOTAL: &str = "total";
/// The announced digest file.
pub(crate) const EXPECTED: &str = "expected";
/// Present while the ingest was last opened under a lease: once no lease holds it any more,
/// the collector removes it at once (containerd aborts an ingest when the lease it belonged to
/// goes); without it the ingest expires after a time without writes.
pub(crate) const LEASED: &str = "leased";
/// Prefix of an ingest directory still being created.
pub(crate) const TMP_DIR_PREFIX: &str = ".tmp-";
/// Suffix of a small file being replaced.
pub(crate) const TMP_FILE_SUFFIX: &str = ".tmp";

/// The state of an ingest, as `Content.Status` and `ListStatuses` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestStatus {
    /// The client's ref.
    pub reference: String,
    /// Bytes written so far.
    pub offset: u64,
    /// The announced size, 0 when unknown.
    pub total: u64,
    /// The announced digest, if any.
    pub expected: Option<Digest>,
    /// When the ingest was created.
    pub started_at: SystemTime,
    /// When it was last written.
    pub updated_at: SystemTime,
}

/// The directory name of a ref's ingest: the sha256 hex of the ref, so that the client's
/// string never becomes a path component and all names have one length.
pub(crate) fn dir_name(reference: &str) -> String {
    Digest::sha256_of(reference.as_bytes()).hex().to_owned()
}

/// Formats a time for `startedat` / `updatedat`.
pub(crate) fn encode_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Parses what [`encode_time`] wrote.
pub(crate) fn decode_time(s: &str) -> Option<SystemTime> {
    let (secs, nanos) = s.trim().split_once('.')?;
    let secs: u64 = secs.parse().ok()?;
    let nanos: u32 = nanos.parse().ok()?;
    if nanos >= 1_000_000_000 {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Creates (or truncates) a private file holding `contents`. Used inside a directory that is
/// not yet visible, where atomicity comes from the directory's rename.
pub(crate) fn write_new(path: &Path, contents: &[u8]) -> Result<(), ContentError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("create ingest file", path))?;
    f.write_all(contents)
        .map_err(io_err("write ingest file", path))
}

/// Replaces a small file atomically: write `<path>.tmp`, rename over `path`. A reader sees the
/// old or the new contents, never a mix; a crash leaves at most the `.tmp`, which `open` removes.
pub(crate) fn replace(path: &Path, contents: &[u8]) -> Result<(), ContentError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(TMP_FILE_SUFFIX);
    let tmp = Path::new(&tmp);
    write_new(tmp, contents)?;
    fs::rename(tmp, path).map_err(io_err("replace ingest file", path))
}

/// Reads a whole small file as text; `None` when absent.
fn read_optional(path: &Path) -> Result<Option<String>, ContentError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read ingest file", path)(e)),
    }
}

/// Reads the ingest in `dir`. `wanted` names the ref in a NotFound error when the directory
/// or its `ref` file is missing (the caller's ref, or the directory name when listing).
pub(crate) fn read_status(dir: &Path, wanted: &str) -> Result<IngestStatus, ContentError> {
    let not_found = || ContentError::IngestNotFound {
        reference: wanted.to_owned(),
    };
    let reference = read_optional(&dir.join(REF))?.ok_or_else(not_found)?;
    let corrupt = |detail: String| ContentError::CorruptIngest {
        reference: reference.clone(),
        detail,
    };

    let data = dir.join(DATA);
    let meta = match fs::metadata(&data) {
        Ok(m) => m,
        // The data was just committed away (or the ingest half-created before a crash).
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(io_err("stat ingest data", data)(e)),
    };

    let time = |name: &str| -> Result<SystemTime, ContentError> {
        let text =
            read_optional(&dir.join(name))?.ok_or_else(|| corrupt(format!("{name} is missing")))?;
        decode_time(&text).ok_or_else(|| corrupt(format!("{name} holds {text:?}")))
    };
    let started_at = time(STARTED_AT)?;
    let mut updated_at = time(UPDATED_AT)?;
    // `updatedat` is rewritten only when a writer drops; data's mtime follows every write.
    if let Ok(mtime) = meta.modified() {
        updated_at = updated_at.max(mtime);
    }

    let total = match read_optional(&dir.join(TOTAL))? {
        None => 0,
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| corrupt(format!("total holds {text:?}")))?,
    };
    let expected = match read_optional(&dir.join(EXPECTED))? {
        None => None,
        Some(text) => Some(
            text.trim()
                .parse()
                .map_err(|_| corrupt(format!("expected holds {text:?}")))?,
        ),
    };

    Ok(IngestStatus {
        reference,
        offset: meta.len(),
        total,
        expected,
        started_at,
        updated_at,
    })
}

/// Startup pass over `ingest/`: removes directories still being created when the daemon
/// stopped, `.tmp` files left by [`replace`], and ingests that lost their `ref` or `data`
/// (a crash between a commit's rename and its cleanup). Returns how many entries went.
pub(crate) fn clean(ingest_root: &Path) -> Result<usize, ContentError> {
    let mut removed = 0;
    let entries = fs::read_dir(ingest_root).map_err(io_err("read ingest dir", ingest_root))?;
    for entry in entries {
        let entry = entry.map_err(io_err("read ingest dir", ingest_root))?;
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(io_err("stat ingest entry", &path))?
            .is_dir();
        if !is_dir {
            continue;
        }
        let name = entry.file_name();
        let incomplete = name.to_string_lossy().starts_with(TMP_DIR_PREFIX)
            || !path.join(REF).exists()
            || !path.join(DATA).exists();
        if incomplete {
            fs::remove_dir_all(&path).map_err(io_err("remove incomplete ingest", &path))?;
            removed += 1;
            continue;
        }
        let files = fs::read_dir(&path).map_err(io_err("read ingest", &path))?;
        for file in files {
            let file = file.map_err(io_err("read ingest", &path))?;
            if file
                .file_name()
                .to_string_lossy()
                .ends_with(TMP_FILE_SUFFIX)
            {
                let p = file.path();
                fs::remove_file(&p).map_err(io_err("remove temp file", &p))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_to_the_nanosecond() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(encode_time(t), "1700000000.123456789");
        assert_eq!(decode_time(&encode_time(t)), Some(t));
        assert_eq!(decode_time("12"), None);
        assert_eq!(decode_time("1.x"), None);
        assert_eq!(decode_time("1.1000000000"), None);
    }

    #[test]
    fn ref_names_are_hashed() {
        let n = dir_name("../../etc/passwd");
        assert_eq!(n.len(), 64);
        assert!(n.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(n, dir_name("../../etc/passwd2"));
    }

    #[test]
    fn replace_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        replace(&p, b"one").unwrap();
        replace(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn status_reads_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let t0 = UNIX_EPOCH + Duration::from_secs(10);
        write_new(&d.join(REF), b"my/ref").unwrap();
        write_new(&d.join(STARTED_AT), encode_time(t0).as_bytes()).unwrap();
        write_new(&d.join(UPDATED_AT), encode_time(t0).as_bytes()).unwrap();
        write_new(&d.join(TOTAL), b"5").unwrap();
        let want = Digest::sha256_of(b"hello");
        write_new(&d.join(EXPECTED), want.to_string().as_bytes()).unwrap();
        write_new(&d.join(DATA), b"hel").unwrap();
        let st = read_status(d, "x").unwrap();
        assert_eq!(st.reference, "my/ref");
        assert_eq!(st.offset, 3);
        assert_eq!(st.total, 5);
        assert_eq!(st.expected, Some(want));
        assert_eq!(st.started_at, t0);
        // data's mtime is newer than the recorded update time.
        assert!(st.updated_at > t0);

        write_new(&d.join(TOTAL), b"five").unwrap();
        let err = read_status(d, "x").unwrap_err();
        assert!(matches!(err, ContentError::CorruptIngest { .. }), "{err}");

        fs::remove_file(d.join(DATA)).unwrap();
        let err = read_status(d, "x").unwrap_err();
        assert!(matches!(err, ContentError::IngestNotFound { .. }), "{err}");
    }

    #[test]
    fn clean_removes_leftovers_only() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // A complete ingest with a stale temp file.
        let good = r.join(dir_name("good"));
        fs::create_dir(&good).unwrap();
        write_new(&good.join(REF), b"good").unwrap();
        write_new(&good.join(DATA), b"").unwrap();
        write_new(&good.join("updatedat.tmp"), b"").unwrap();
        // A half-created ingest and one whose data was committed away.
        let creating = r.join(format!("{TMP_DIR_PREFIX}{}", dir_name("c")));
        fs::create_dir(&creating).unwrap();
        let committed = r.join(dir_name("committed"));
        fs::create_dir(&committed).unwrap();
        write_new(&committed.join(REF), b"committed").unwrap();

        assert_eq!(clean(r).unwrap(), 3);
        assert!(good.join(REF).exists());
        assert!(!good.join("updatedat.tmp").exists());
        assert!(!creating.exists());
        assert!(!committed.exists());
        assert_eq!(clean(r).unwrap(), 0);
    }
}
