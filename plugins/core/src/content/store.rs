//! The local content store (containerd `content/local/store.go`): blobs addressed by digest,
//! plus resumable ingests keyed by the client's ref.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::digest::{Algorithm, Digest};
use super::error::{io_err, ContentError};
use super::ingest::{self, IngestStatus};
use super::locks::RefLocks;
use super::writer::Writer;

/// A committed blob, as `Content.Info` reports it (labels live in the metadata store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was committed (the file's mtime, set at commit).
    pub created_at: SystemTime,
    /// The same as `created_at`: a blob never changes once committed.
    pub updated_at: SystemTime,
}

/// The parts shared by a store and its writers.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) blobs: PathBuf,
    pub(crate) ingest: PathBuf,
    pub(crate) locks: Arc<RefLocks>,
    /// Bumped whenever an ingest is created or removed (see [`ContentStore::ingest_generation`]).
    pub(crate) ingest_changes: std::sync::atomic::AtomicU64,
}

/// The content store rooted at one directory (`<root>/io.containerd.content.v1.content`).
///
/// Cheap to clone (one `Arc`), `Send + Sync`; every method is blocking file I/O, so async
/// callers go through `spawn_blocking`. Open one store per root per process: ref locks live in
/// the store.
#[derive(Debug, Clone)]
pub struct ContentStore {
    pub(crate) inner: Arc<Inner>,
}

/// Creates a directory tree whose new components have mode 0700.
pub(crate) fn create_private_dir(path: &Path) -> Result<(), ContentError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err("create directory", path))
}

impl ContentStore {
    /// Opens (creating with mode 0700) `root/blobs` and `root/ingest`, and removes what a crash
    /// may have left half-made in `ingest/`.
    pub fn open(root: &Path) -> Result<ContentStore, ContentError> {
        let blobs = root.join("blobs");
        let ingest_root = root.join("ingest");
        for dir in [root, blobs.as_path(), ingest_root.as_path()] {
            create_private_dir(dir)?;
        }
        let removed = ingest::clean(&ingest_root)?;
        if removed > 0 {
            tracing::info!(root = %root.display(), removed, "removed leftovers of interrupted ingests");
        }
        Ok(ContentStore {
            inner: Arc::new(Inner {
                root: root.to_owned(),
                blobs,
                ingest: ingest_root,
                locks: Arc::default(),
                ingest_changes: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.inner.blobs.join(d.algorithm().as_str()).join(d.hex())
    }

    /// The ingest directory of a ref.
    pub(crate) fn ingest_dir(&self, reference: &str) -> PathBuf {
        self.inner.ingest.join(ingest::dir_name(reference))
    }

    /// Size and times of a committed blob.
    pub fn info(&self, d: &Digest) -> Result<BlobInfo, ContentError> {
        let path = self.blob_path(d);
        let meta = match fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Err(ContentError::NotFound { digest: d.clone() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ContentError::NotFound { digest: d.clone() })
            }
            Err(e) => return Err(io_err("stat blob", path)(e)),
        };
        Ok(blob_info(d.clone(), &meta))
    }

    /// Opens a committed blob for reading (callers read at offsets).
    pub fn open_blob(&self, d: &Digest) -> Result<fs::File, ContentError> {
        let path = self.blob_path(d);
        fs::File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ContentError::NotFound { digest: d.clone() }
            } else {
                io_err("open blob", path)(e)
            }
        })
    }

    /// Reads up to `len` bytes at `offset`; fewer at the end of the blob, none at its end.
    /// An offset past the end is `OutOfRange` (containerd's `Read`).
    pub fn read_at(&self, d: &Digest, offset: u64, len: usize) -> Result<Vec<u8>, ContentError> {
        let file = self.open_blob(d)?;
        let path = self.blob_path(d);
        let size = file.metadata().map_err(io_err("stat blob", &path))?.len();
        if offset > size {
            return Err(ContentError::ReadOutOfRange {
                digest: d.clone(),
                offset,
                size,
            });
        }
        let want = usize::try_from(size - offset).map_or(len, |left| left.min(len));
        let mut buf = vec![0; want];
        let mut filled = 0;
        while filled < want {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("read blob", path)(e)),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    /// Removes a committed blob.
    pub fn delete(&self, d: &Digest) -> Result<(), ContentError> {
        let path = self.blob_path(d);
        fs::remove_file(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ContentError::NotFound { digest: d.clone() }
            } else {
                io_err("remove blob", path)(e)
            }
        })
    }

    /// Every committed blob, sorted by digest. Files under `blobs/` that are not valid digests
    /// are logged and skipped (containerd's `Walk` does the same).
    pub fn walk(&self) -> Result<Vec<BlobInfo>, ContentError> {
        let mut out = Vec::new();
        for alg in Algorithm::ALL {
            let dir = self.inner.blobs.join(alg.as_str());
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("read blob dir", dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io_err("read blob dir", &dir))?;
                let name = entry.file_name();
                let Some(digest) = name
                    .to_str()
                    .and_then(|hex| Digest::from_hex(alg, hex).ok())
                else {
                    tracing::warn!(path = %entry.path().display(), "invalid digest for blob path");
                    continue;
                };
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    // Deleted while we walked.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("stat blob", entry.path())(e)),
                };
                if meta.is_file() {
                    out.push(blob_info(digest, &meta));
                }
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// Begins or resumes the write identified by `reference`.
    ///
    /// `total` is the announced size (0 = unknown) and `expected` the announced digest. An
    /// empty ref is `InvalidArgument`; a ref held by a live writer is `Unavailable` after a
    /// short retry; an `expected` blob that exists already is `AlreadyExists`. An existing
    /// ingest is resumed: its bytes are hashed once and writing continues at their end. An
    /// ingest that cannot be resumed (its recorded total differs from a non-zero `total`, or
    /// its files are damaged) is discarded and started afresh, as containerd does.
    pub fn writer(
        &self,
        reference: &str,
        total: u64,
        expected: Option<Digest>,
    ) -> Result<Writer, ContentError> {
        if reference.is_empty() {
            return Err(ContentError::EmptyRef);
        }
        let lock = self.inner.locks.lock_with_retry(reference)?;
        if let Some(d) = &expected {
            if self.blob_path(d).exists() {
                return Err(ContentError::AlreadyExists { digest: d.clone() });
            }
        }
        Writer::open(self.clone(), lock, reference, total, expected)
    }

    /// The state of the ingest for `reference`.
    pub fn status(&self, reference: &str) -> Result<IngestStatus, ContentError> {
        ingest::read_status(&self.ingest_dir(reference), reference)
    }

    /// Moves whenever an ingest is created or removed in this process, so that a collector can
    /// look again only when it moved, without touching the filesystem.
    pub fn ingest_generation(&self) -> u64 {
        self.inner
            .ingest_changes
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Called after an ingest directory was published or removed.
    pub(crate) fn note_ingest_change(&self) {
        self.inner
            .ingest_changes
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Whether the ingest for `reference` was last opened under a lease
    /// ([`Writer::set_leased`](crate::content::Writer::set_leased)).
    pub fn ingest_was_leased(&self, reference: &str) -> bool {
        self.ingest_dir(reference).join(ingest::LEASED).exists()
    }

    /// Removes the ingest for `reference` if no writer holds it and nobody wrote it for
    /// `idle_for`; returns whether it went. A live writer is never cut (unlike [`abort`]).
    ///
    /// [`abort`]: ContentStore::abort
    pub fn remove_idle_ingest(
        &self,
        reference: &str,
        idle_for: Duration,
    ) -> Result<bool, ContentError> {
        let Ok(_lock) = self.inner.locks.try_lock(reference) else {
            return Ok(false);
        };
        let dir = self.ingest_dir(reference);
        let idle = match ingest::read_status(&dir, reference) {
            Ok(st) => SystemTime::now()
                .duration_since(st.updated_at)
                .is_ok_and(|age| age >= idle_for),
            Err(ContentError::IngestNotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        if !idle {
            return Ok(false);
        }
        fs::remove_dir_all(&dir).map_err(io_err("remove idle ingest", &dir))?;
        self.note_ingest_change();
        Ok(true)
    }

    /// Every ingest, sorted by ref. Ingests that vanish or are half-made while listing are
    /// skipped, as containerd's `ListStatuses` does.
    pub fn list_statuses(&self) -> Result<Vec<IngestStatus>, ContentError> {
        let mut out = Vec::new();
        for (dir, name) in self.ingest_dirs()? {
            match ingest::read_status(&dir, &name) {
                Ok(st) => out.push(st),
                Err(ContentError::IngestNotFound { .. }) => {}
                Err(e @ ContentError::CorruptIngest { .. }) => {
                    // A commit may have removed files under us; only a surviving ingest is news.
                    if dir.exists() {
                        tracing::warn!(path = %dir.display(), error = %e, "skipping damaged ingest");
                    }
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Removes the ingest for `reference` and its data. As in containerd this also cancels a
    /// live write: that writer's commit then fails with `NotFound`.
    pub fn abort(&self, reference: &str) -> Result<(), ContentError> {
        let dir = self.ingest_dir(reference);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {
                self.note_ingest_change();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ContentError::IngestNotFound {
                reference: reference.to_owned(),
            }),
            Err(e) => Err(io_err("remove ingest", dir)(e)),
        }
    }

    /// Removes every ingest not written for `older_than` or longer, except those a live writer
    /// holds, and returns their refs, sorted.
    pub fn expire_ingests(&self, older_than: Duration) -> Result<Vec<String>, ContentError> {
        let now = SystemTime::now();
        let is_old = |st: &IngestStatus| {
            now.duration_since(st.updated_at)
                .is_ok_and(|age| age >= older_than)
        };
        let mut expired = Vec::new();
        for (dir, name) in self.ingest_dirs()? {
            let Ok(st) = ingest::read_status(&dir, &name) else {
                continue;
            };
            if !is_old(&st) {
                continue;
            }
            // Holding the ref keeps a writer from resuming it while it is removed.
            let Ok(_lock) = self.inner.locks.try_lock(&st.reference) else {
                continue;
            };
            // A writer may have written and let go between the first look and the lock.
            match ingest::read_status(&dir, &name) {
                Ok(again) if is_old(&again) => {}
                _ => continue,
            }
            fs::remove_dir_all(&dir).map_err(io_err("remove expired ingest", &dir))?;
            self.note_ingest_change();
            tracing::info!(reference = %st.reference, "expired ingest removed");
            expired.push(st.reference);
        }
        expired.sort();
        Ok(expired)
    }

    /// The ingest directories (not those still being created), with their names.
    fn ingest_dirs(&self) -> Result<Vec<(PathBuf, String)>, ContentError> {
        let root = &self.inner.ingest;
        let mut out = Vec::new();
        for entry in fs::read_dir(root).map_err(io_err("read ingest dir", root))? {
            let entry = entry.map_err(io_err("read ingest dir", root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(ingest::TMP_DIR_PREFIX) {
                continue;
            }
            out.push((entry.path(), name));
        }
        Ok(out)
    }
}

fn blob_info(digest: Digest, meta: &fs::Metadata) -> BlobInfo {
    let created_at = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    BlobInfo {
        digest,
        size: meta.len(),
        created_at,
        updated_at: created_at,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use berth_registry::{Classify, ErrorKind};

    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            ContentStore::open(&dir.path().join("io.containerd.content.v1.content")).unwrap();
        (dir, store)
    }

    fn put(store: &ContentStore, data: &[u8]) -> Digest {
        let mut w = store.writer("put", 0, None).unwrap();
        w.write_at(0, data).unwrap();
        w.commit(data.len() as u64, None).unwrap()
    }

    #[test]
    fn store_and_writer_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<ContentStore>();
        send::<Writer>();
    }

    #[test]
    fn open_creates_private_dirs() {
        let (_dir, store) = store();
        for sub in ["", "blobs", "ingest"] {
            let mode = fs::metadata(store.root().join(sub))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{sub}");
        }
        // Re-opening an existing root is fine.
        ContentStore::open(store.root()).unwrap();
    }

    #[test]
    fn info_read_and_delete() {
        let (_dir, store) = store();
        let d = put(&store, b"0123456789");
        let info = store.info(&d).unwrap();
        assert_eq!(info.size, 10);
        assert_eq!(info.digest, d);
        assert_eq!(store.read_at(&d, 0, 4).unwrap(), b"0123");
        assert_eq!(store.read_at(&d, 8, 100).unwrap(), b"89");
        assert_eq!(store.read_at(&d, 10, 5).unwrap(), b"");
        let err = store.read_at(&d, 11, 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfRange);
        let mode = fs::metadata(store.blob_path(&d))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);

        store.delete(&d).unwrap();
        let err = store.info(&d).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.to_string(), format!("content {d}: not found"));
        assert_eq!(store.delete(&d).unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(
            store.read_at(&d, 0, 1).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(store.open_blob(&d).unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn walk_lists_blobs_and_skips_junk() {
        let (_dir, store) = store();
        let a = put(&store, b"a");
        let b = put(&store, b"b");
        fs::write(store.inner.blobs.join("sha256").join("not-a-digest"), b"").unwrap();
        fs::create_dir_all(store.inner.blobs.join("md5")).unwrap();
        let mut want = vec![a, b];
        want.sort();
        let got: Vec<_> = store
            .walk()
            .unwrap()
            .into_iter()
            .map(|i| i.digest)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn open_cleans_leftovers() {
        let (_dir, store) = store();
        let mut w = store.writer("keep", 0, None).unwrap();
        w.write_at(0, b"abc").unwrap();
        drop(w);
        let leftover = store
            .inner
            .ingest
            .join(format!("{}x", ingest::TMP_DIR_PREFIX));
        fs::create_dir(&leftover).unwrap();
        let stale = store.ingest_dir("keep").join("updatedat.tmp");
        fs::write(&stale, b"").unwrap();

        let reopened = ContentStore::open(store.root()).unwrap();
        assert!(!leftover.exists());
        assert!(!stale.exists());
        assert_eq!(reopened.status("keep").unwrap().offset, 3);
    }
}
