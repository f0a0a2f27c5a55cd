//! One write transaction against the store (containerd `content/local/writer.go`): bytes are
//! appended to `ingest/<h>/data` and hashed as they pass; commit verifies size and digest and
//! renames the data into `blobs/<alg>/<hex>`.

use std::fs::{self, File, FileTimes, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::digest::{Algorithm, Digest, Digester};
use super::error::{io_err, ContentError};
use super::ingest::{self, IngestStatus};
use super::locks::RefLock;
use super::store::{create_private_dir, ContentStore};

/// Mode of a committed blob: read-only for everyone who may enter the store.
const BLOB_MODE: u32 = 0o444;
/// Mode of ingest data while it is written.
const DATA_MODE: u32 = 0o600;
/// Read size when hashing existing bytes.
const HASH_BUF: usize = 1 << 20;

/// A live write to the ingest of one ref. It holds the ref until dropped; dropping it without
/// committing keeps the ingest for a later writer to resume.
#[derive(Debug)]
pub struct Writer {
    store: ContentStore,
    reference: String,
    dir: PathBuf,
    file: File,
    offset: u64,
    total: u64,
    expected: Option<Digest>,
    digester: Digester,
    started_at: SystemTime,
    updated_at: SystemTime,
    /// Set once the ingest is gone (committed, or found to exist as a blob).
    finished: bool,
    /// Released after `Drop::drop` has run, so nobody resumes the ingest while we record
    /// `updatedat`.
    _lock: RefLock,
}

/// What resuming or creating an ingest produced.
struct Opened {
    file: File,
    offset: u64,
    total: u64,
    expected: Option<Digest>,
    digester: Digester,
    started_at: SystemTime,
    updated_at: SystemTime,
}

impl Writer {
    /// Resumes the ref's ingest or creates it. The caller holds `lock` for `reference`.
    pub(crate) fn open(
        store: ContentStore,
        lock: RefLock,
        reference: &str,
        total: u64,
        expected: Option<Digest>,
    ) -> Result<Writer, ContentError> {
        let dir = store.ingest_dir(reference);
        let opened = match resume(&dir, reference, total, expected.clone()) {
            Ok(Some(opened)) => opened,
            Ok(None) => create(&store, &dir, reference, total, expected)?,
            Err(e) => {
                tracing::info!(reference, error = %e, "cannot resume ingest, starting it again");
                fs::remove_dir_all(&dir).map_err(io_err("remove unusable ingest", &dir))?;
                create(&store, &dir, reference, total, expected)?
            }
        };
        Ok(Writer {
            store,
            reference: reference.to_owned(),
            dir,
            file: opened.file,
            offset: opened.offset,
            total: opened.total,
            expected: opened.expected,
            digester: opened.digester,
            started_at: opened.started_at,
            updated_at: opened.updated_at,
            finished: false,
            _lock: lock,
        })
    }

    /// The ref this writer holds.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The ingest's state as this writer sees it.
    pub fn status(&self) -> IngestStatus {
        IngestStatus {
            reference: self.reference.clone(),
            offset: self.offset,
            total: self.total,
            expected: self.expected.clone(),
            started_at: self.started_at,
            updated_at: self.updated_at,
        }
    }

    /// Records whether the ingest is written under a lease (see
    /// [`ContentStore::ingest_was_leased`]): a leased ingest is aborted by the collector as
    /// soon as no lease holds it; an unleased one once it was not written for a while.
    pub fn set_leased(&self, leased: bool) -> Result<(), ContentError> {
        let marker = self.dir.join(ingest::LEASED);
        if leased {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
            {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(io_err("mark ingest leased", &marker)(e)),
            }
        } else {
            match fs::remove_file(&marker) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err("unmark leased ingest", &marker)(e)),
            }
        }
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The digest of the bytes written so far, in the expected digest's algorithm (sha256 when
    /// none was given).
    pub fn digest(&self) -> Digest {
        self.digester.digest()
    }

    /// Announces a new total (0 = unknown), e.g. from a later `Content.Write` message. A total
    /// below the bytes already written is `InvalidArgument`.
    pub fn set_total(&mut self, total: u64) -> Result<(), ContentError> {
        if total == self.total {
            return Ok(());
        }
        if total > 0 && total < self.offset {
            return Err(ContentError::TotalExceeded {
                reference: self.reference.clone(),
                size: self.offset,
                total,
            });
        }
        let path = self.dir.join(ingest::TOTAL);
        if total == 0 {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove ingest total", path)(e)),
            }
        } else {
            ingest::replace(&path, total.to_string().as_bytes())?;
        }
        self.total = total;
        Ok(())
    }

    /// Writes `data` at `offset` and returns the new offset.
    ///
    /// `offset` must be the current offset (append) or 0, which truncates what was written and
    /// starts again (containerd's rule); anything else is `OutOfRange` naming both offsets.
    /// Growing past a known total is `InvalidArgument` and changes nothing.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<u64, ContentError> {
        let base = if offset == self.offset || offset == 0 {
            offset
        } else {
            return Err(ContentError::OffsetMismatch {
                reference: self.reference.clone(),
                offset,
                current: self.offset,
            });
        };
        let end = base.saturating_add(data.len() as u64);
        if self.total > 0 && end > self.total {
            return Err(ContentError::TotalExceeded {
                reference: self.reference.clone(),
                size: end,
                total: self.total,
            });
        }
        let data_path = || self.dir.join(ingest::DATA);
        if base == 0 && self.offset > 0 {
            self.file
                .set_len(0)
                .map_err(io_err("truncate ingest data", data_path()))?;
            self.digester.reset();
            self.offset = 0;
        }
        if !data.is_empty() {
            if let Err(e) = self.file.write_all_at(data, base) {
                // Cut the file back to what the digester has seen so the ingest stays
                // consistent; commit checks the length again in case this fails too.
                if let Err(cut) = self.file.set_len(self.offset) {
                    tracing::warn!(reference = %self.reference, error = %cut, "cannot cut back ingest data after a failed write");
                }
                return Err(io_err("write ingest data", data_path())(e));
            }
            self.digester.update(data);
            self.offset = end;
        }
        self.updated_at = SystemTime::now();
        Ok(self.offset)
    }

    /// Verifies and commits the ingest as a blob, returning its digest.
    ///
    /// `size` (0 = don't check) and `expected` (falling back to the digest given when the
    /// writer was opened) must match the bytes written, else `FailedPrecondition`; the ingest
    /// is then kept, as in containerd, so the client can fix it up or abort. If the blob exists
    /// already the ingest is removed and the answer is `AlreadyExists`, which clients count as
    /// success. Otherwise the data is fsynced, made read-only and renamed into
    /// `blobs/<alg>/<hex>` (atomic), and the ingest directory is removed.
    pub fn commit(mut self, size: u64, expected: Option<&Digest>) -> Result<Digest, ContentError> {
        let data_path = self.dir.join(ingest::DATA);
        let on_disk = self
            .file
            .metadata()
            .map_err(io_err("stat ingest data", &data_path))?
            .len();
        if on_disk != self.offset {
            return Err(ContentError::CorruptIngest {
                reference: self.reference.clone(),
                detail: format!(
                    "data holds {on_disk} bytes but {} were written",
                    self.offset
                ),
            });
        }
        if size > 0 && size != on_disk {
            return Err(ContentError::SizeMismatch {
                reference: self.reference.clone(),
                size: on_disk,
                expected: size,
            });
        }
        let expected = expected.cloned().or_else(|| self.expected.clone());
        let actual = match &expected {
            // Asked for another algorithm than we hashed with: hash once more in that one.
            Some(e) if e.algorithm() != self.digester.algorithm() => {
                hash_file(&self.file, e.algorithm(), &data_path)?.0.digest()
            }
            _ => self.digester.digest(),
        };
        if let Some(expected) = expected {
            if expected != actual {
                return Err(ContentError::DigestMismatch {
                    reference: self.reference.clone(),
                    actual,
                    expected,
                });
            }
        }

        let target = self.store.blob_path(&actual);
        let blob_dir = target
            .parent()
            .expect("a blob path is blobs/<alg>/<hex>")
            .to_owned();
        create_private_dir(&blob_dir)?;
        if target.exists() {
            self.finish();
            return Err(ContentError::AlreadyExists { digest: actual });
        }

        self.publish(&data_path, &target)?;
        // The blob is in place: from here on, failures are logged, not returned, since the
        // commit cannot be rolled back (containerd's writer does the same).
        if let Err(e) = File::open(&blob_dir).and_then(|d| d.sync_all()) {
            tracing::warn!(digest = %actual, error = %e, "cannot sync blob directory");
        }
        self.finish();
        tracing::debug!(reference = %self.reference, digest = %actual, size = on_disk, "content committed");
        Ok(actual)
    }

    /// Stamps, seals, syncs and renames the data into place; on failure the ingest is left as
    /// it was, writable.
    fn publish(&self, data_path: &Path, target: &Path) -> Result<(), ContentError> {
        let now = SystemTime::now();
        self.file
            .set_times(FileTimes::new().set_accessed(now).set_modified(now))
            .map_err(io_err("stamp ingest data", data_path))?;
        self.file
            .set_permissions(Permissions::from_mode(BLOB_MODE))
            .map_err(io_err("seal ingest data", data_path))?;
        let moved = self
            .file
            .sync_all()
            .map_err(io_err("sync ingest data", data_path))
            .and_then(|()| {
                fs::rename(data_path, target).map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        // Aborted while we held it.
                        ContentError::IngestNotFound {
                            reference: self.reference.clone(),
                        }
                    } else {
                        io_err("rename ingest data to blob", target)(e)
                    }
                })
            });
        if moved.is_err() {
            if let Err(e) = self.file.set_permissions(Permissions::from_mode(DATA_MODE)) {
                tracing::warn!(reference = %self.reference, error = %e, "cannot make ingest data writable again");
            }
        }
        moved
    }

    /// Removes the ingest directory once its data is a blob or redundant.
    fn finish(&mut self) {
        self.finished = true;
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => self.store.note_ingest_change(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(reference = %self.reference, path = %self.dir.display(), error = %e, "cannot remove ingest directory");
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Record the last write so status survives without the data's mtime; the data itself
        // needs no sync, since a resume hashes whatever is on disk.
        let path = self.dir.join(ingest::UPDATED_AT);
        if let Err(e) = ingest::replace(&path, ingest::encode_time(self.updated_at).as_bytes()) {
            tracing::debug!(reference = %self.reference, error = %e, "cannot record ingest update time");
        }
    }
}

/// Hashes a whole file from its start; returns the digester and the byte count.
fn hash_file(file: &File, alg: Algorithm, path: &Path) -> Result<(Digester, u64), ContentError> {
    let mut digester = Digester::new(alg);
    let mut buf = vec![0; HASH_BUF];
    let mut offset = 0u64;
    loop {
        match file.read_at(&mut buf, offset) {
            Ok(0) => break,
            Ok(n) => {
                digester.update(&buf[..n]);
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("read ingest data", path)(e)),
        }
    }
    Ok((digester, offset))
}

/// Reopens an existing ingest: `Ok(None)` when there is none, an error when it cannot be
/// resumed (the caller then starts afresh).
fn resume(
    dir: &Path,
    reference: &str,
    total: u64,
    expected: Option<Digest>,
) -> Result<Option<Opened>, ContentError> {
    match fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("stat ingest", dir)(e)),
    }
    let status = ingest::read_status(dir, reference)?;
    let corrupt = |detail: String| ContentError::CorruptIngest {
        reference: reference.to_owned(),
        detail,
    };
    if status.reference != reference {
        // A layout corruption (or a sha256 collision between two refs).
        return Err(corrupt(format!("ref file holds {:?}", status.reference)));
    }
    if total > 0 && status.total > 0 && total != status.total {
        return Err(corrupt(format!(
            "provided total {total} differs from recorded total {}",
            status.total
        )));
    }
    let total = if status.total > 0 {
        status.total
    } else {
        if total > 0 {
            ingest::replace(&dir.join(ingest::TOTAL), total.to_string().as_bytes())?;
        }
        total
    };
    let expected = match expected {
        Some(e) => {
            if status.expected.as_ref() != Some(&e) {
                ingest::replace(&dir.join(ingest::EXPECTED), e.to_string().as_bytes())?;
            }
            Some(e)
        }
        None => status.expected,
    };

    let data = dir.join(ingest::DATA);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&data)
        .map_err(io_err("open ingest data", &data))?;
    let alg = expected
        .as_ref()
        .map_or(Algorithm::Sha256, Digest::algorithm);
    // The one time bytes are read twice: rebuild the hash of what is already there.
    let (digester, offset) = hash_file(&file, alg, &data)?;
    Ok(Some(Opened {
        file,
        offset,
        total,
        expected,
        digester,
        started_at: status.started_at,
        updated_at: status.updated_at,
    }))
}

/// Creates a fresh ingest: built under `ingest/.tmp-<h>`, then renamed into place, so the ingest
/// is either complete or absent after a crash.
fn create(
    store: &ContentStore,
    dir: &Path,
    reference: &str,
    total: u64,
    expected: Option<Digest>,
) -> Result<Opened, ContentError> {
    let name = dir
        .file_name()
        .expect("an ingest dir is ingest/<hex>")
        .to_string_lossy();
    let tmp = store
        .inner
        .ingest
        .join(format!("{}{name}", ingest::TMP_DIR_PREFIX));
    match fs::remove_dir_all(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove stale ingest", &tmp)(e)),
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(io_err("create ingest", &tmp))?;

    let now = SystemTime::now();
    let stamp = ingest::encode_time(now);
    ingest::write_new(&tmp.join(ingest::REF), reference.as_bytes())?;
    ingest::write_new(&tmp.join(ingest::STARTED_AT), stamp.as_bytes())?;
    ingest::write_new(&tmp.join(ingest::UPDATED_AT), stamp.as_bytes())?;
    if total > 0 {
        ingest::write_new(&tmp.join(ingest::TOTAL), total.to_string().as_bytes())?;
    }
    if let Some(e) = &expected {
        ingest::write_new(&tmp.join(ingest::EXPECTED), e.to_string().as_bytes())?;
    }
    let data = tmp.join(ingest::DATA);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(DATA_MODE)
        .open(&data)
        .map_err(io_err("create ingest data", &data))?;
    // The handle stays valid across the rename of its directory.
    fs::rename(&tmp, dir).map_err(io_err("publish ingest", dir))?;
    store.note_ingest_change();

    let alg = expected
        .as_ref()
        .map_or(Algorithm::Sha256, Digest::algorithm);
    Ok(Opened {
        file,
        offset: 0,
        total,
        expected,
        digester: Digester::new(alg),
        started_at: now,
        updated_at: now,
    })
}

#[cfg(test)]
mod tests {
    use berth_registry::{Classify, ErrorKind};

    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn streams_and_commits() {
        let (_dir, store) = store();
        let mut w = store.writer("r", 11, None).unwrap();
        assert_eq!(w.write_at(0, b"hello ").unwrap(), 6);
        assert_eq!(w.digest(), Digest::sha256_of(b"hello "));
        assert_eq!(w.write_at(6, b"world").unwrap(), 11);
        assert_eq!(w.status().offset, 11);
        assert_eq!(w.status().total, 11);
        let d = w
            .commit(11, Some(&Digest::sha256_of(b"hello world")))
            .unwrap();
        assert_eq!(d, Digest::sha256_of(b"hello world"));
        assert_eq!(fs::read(store.blob_path(&d)).unwrap(), b"hello world");
        assert_eq!(store.status("r").unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(fs::read_dir(&store.inner.ingest).unwrap().count(), 0);
    }

    #[test]
    fn hashes_in_the_expected_algorithm() {
        let (_dir, store) = store();
        let want = Digest::compute(Algorithm::Sha512, b"data");
        let mut w = store.writer("r", 0, Some(want.clone())).unwrap();
        w.write_at(0, b"data").unwrap();
        assert_eq!(w.digest(), want);
        assert_eq!(w.commit(0, None).unwrap(), want);
        assert!(store
            .blob_path(&want)
            .starts_with(store.root().join("blobs/sha512")));
        assert_eq!(store.info(&want).unwrap().size, 4);
    }

    #[test]
    fn commit_in_another_algorithm_rehashes() {
        let (_dir, store) = store();
        let mut w = store.writer("r", 0, None).unwrap();
        w.write_at(0, b"data").unwrap();
        let want = Digest::compute(Algorithm::Sha384, b"data");
        assert_eq!(w.commit(4, Some(&want)).unwrap(), want);
    }

    #[test]
    fn commit_uses_the_digest_given_at_open() {
        let (_dir, store) = store();
        let mut w = store
            .writer("r", 0, Some(Digest::sha256_of(b"other")))
            .unwrap();
        w.write_at(0, b"data").unwrap();
        let err = w.commit(0, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        // The expected digest is part of the ingest and survives into a resumed writer.
        let w = store.writer("r", 0, None).unwrap();
        assert_eq!(w.status().expected, Some(Digest::sha256_of(b"other")));
        assert_eq!(w.offset(), 4);
    }

    #[test]
    fn set_total_is_checked_and_recorded() {
        let (_dir, store) = store();
        let mut w = store.writer("r", 2, None).unwrap();
        w.write_at(0, b"ab").unwrap();
        assert_eq!(
            w.write_at(2, b"c").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            w.set_total(1).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        w.set_total(3).unwrap();
        assert_eq!(store.status("r").unwrap().total, 3);
        assert_eq!(w.write_at(2, b"c").unwrap(), 3);
        w.set_total(0).unwrap();
        assert_eq!(store.status("r").unwrap().total, 0);
        assert_eq!(w.write_at(3, b"d").unwrap(), 4);
    }

    #[test]
    fn resume_with_another_total_starts_again() {
        let (_dir, store) = store();
        let mut w = store.writer("r", 10, None).unwrap();
        w.write_at(0, b"abc").unwrap();
        drop(w);
        let w = store.writer("r", 20, None).unwrap();
        assert_eq!(w.offset(), 0);
        assert_eq!(w.status().total, 20);
        drop(w);
        // Unknown total resumes and keeps the recorded one.
        let w = store.writer("r", 0, None).unwrap();
        assert_eq!(w.status().total, 20);
    }

    #[test]
    fn damaged_ingest_starts_again() {
        let (_dir, store) = store();
        let mut w = store.writer("r", 0, None).unwrap();
        w.write_at(0, b"abc").unwrap();
        drop(w);
        fs::write(store.ingest_dir("r").join(ingest::STARTED_AT), b"garbage").unwrap();
        let mut w = store.writer("r", 0, None).unwrap();
        assert_eq!(w.offset(), 0);
        w.write_at(0, b"xyz").unwrap();
        assert_eq!(w.commit(3, None).unwrap(), Digest::sha256_of(b"xyz"));
    }

    #[test]
    fn abort_cancels_a_live_writer() {
        let (_dir, store) = store();
        let mut w = store.writer("r", 0, None).unwrap();
        w.write_at(0, b"abc").unwrap();
        store.abort("r").unwrap();
        let err = w.commit(3, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(store.walk().unwrap().is_empty());
        // Nothing was recreated by the writer's drop.
        assert_eq!(fs::read_dir(&store.inner.ingest).unwrap().count(), 0);
    }

    #[test]
    fn drop_records_the_update_time() {
        let (_dir, store) = store();
        let mut w = store.writer("r", 0, None).unwrap();
        w.write_at(0, b"abc").unwrap();
        let updated = w.status().updated_at;
        drop(w);
        let recorded = fs::read_to_string(store.ingest_dir("r").join(ingest::UPDATED_AT)).unwrap();
        assert_eq!(ingest::decode_time(&recorded), Some(updated));
        assert!(store.status("r").unwrap().updated_at >= updated);
    }
}
