//! Room for an embedded database on a full disk.
//!
//! sled writes when it opens and when it deletes, and after a write fails with ENOSPC it fails
//! (or hangs) on every later call until the process restarts. So a store keeps a [`Reserve`]:
//! a preallocated file next to its database that it gives back to the filesystem when it has
//! to open or delete with less than [`MIN_FREE_BYTES`] free, and makes again once there is room.
//! Writes that add records are refused before the database is touched when the filesystem has
//! less than [`MIN_FREE_BYTES`] free ([`NoSpace`]), so that the database never sees ENOSPC
//! from its own writes while other writers (ingests, unpacks) fill the disk.
//!
//! Measured on a 20 MB ext4 loop filesystem: sled 0.34 fails to open with 78 KB free and opens
//! and deletes with 512 KB free, so a few MB of reserve is ample.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use berth_registry::{Classify, ErrorKind};

/// Size of the reserve file each store keeps.
pub const RESERVE_BYTES: u64 = 4 << 20;

/// Below this much free space (as an unprivileged user sees it) writes that add records are
/// refused, and opening or deleting first releases the reserve.
pub const MIN_FREE_BYTES: u64 = 4 << 20;

/// A write refused because the filesystem holding `path` is full, before the database was
/// touched; the wording is ENOSPC's as containerd prints it.
#[derive(Debug, thiserror::Error)]
#[error("{}: no space left on device", path.display())]
pub struct NoSpace {
    /// The database the write was for.
    pub path: PathBuf,
}

impl Classify for NoSpace {
    fn kind(&self) -> ErrorKind {
        ErrorKind::ResourceExhausted
    }
}

/// True if `err` says the disk or the quota is full.
pub fn is_no_space(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// True if sled failed because the disk or the quota is full.
pub fn sled_no_space(err: &sled::Error) -> bool {
    matches!(err, sled::Error::Io(e) if is_no_space(e))
}

/// The reserve of one database: a preallocated file, released under pressure.
#[derive(Debug)]
pub struct Reserve {
    /// The reserve file.
    file: PathBuf,
    /// The database it keeps room for, named in [`NoSpace`].
    guarded: PathBuf,
    size: u64,
    min_free: u64,
    /// Serialises release and re-creation.
    lock: Mutex<()>,
}

impl Reserve {
    /// The reserve for the database at `guarded`, kept in `<dir of guarded>/<file name>.reserve`.
    pub fn new(guarded: &Path) -> Reserve {
        Reserve::with_sizes(guarded, RESERVE_BYTES, MIN_FREE_BYTES)
    }

    /// As [`Reserve::new`] with other sizes (tests).
    pub fn with_sizes(guarded: &Path, size: u64, min_free: u64) -> Reserve {
        let mut name = guarded.file_name().unwrap_or_default().to_os_string();
        name.push(".reserve");
        Reserve {
            file: guarded.with_file_name(name),
            guarded: guarded.to_owned(),
            size,
            min_free,
            lock: Mutex::new(()),
        }
    }

    /// The reserve file's path.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Free bytes on the filesystem of the reserve, or `None` if it cannot be told.
    fn free(&self) -> Option<u64> {
        let dir = self.file.parent()?;
        let st = nix::sys::statvfs::statvfs(dir).ok()?;
        Some(st.blocks_available().saturating_mul(st.fragment_size()))
    }

    fn low(&self) -> bool {
        self.free().is_some_and(|free| free < self.min_free)
    }

    /// Before opening or deleting: gives the reserve back to the filesystem if it is nearly
    /// full, so that the database has room to write.
    pub fn make_room(&self) {
        if !self.low() {
            return;
        }
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        match fs::remove_file(&self.file) {
            Ok(()) => tracing::warn!(
                reserve = %self.file.display(),
                "filesystem nearly full: released the reserve"
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(reserve = %self.file.display(), error = %e, "cannot release the reserve")
            }
        }
    }

    /// Before a write that adds records: refused if the filesystem is nearly full.
    pub fn admit_write(&self) -> Result<(), NoSpace> {
        if self.low() {
            return Err(NoSpace {
                path: self.guarded.clone(),
            });
        }
        Ok(())
    }

    /// After a change: makes the reserve again if it is missing and the filesystem has room
    /// for it and [`MIN_FREE_BYTES`] more. Cheap when the reserve is there.
    pub fn replenish(&self) {
        if self.file.exists() {
            return;
        }
        if self
            .free()
            .is_none_or(|free| free < self.size.saturating_add(self.min_free))
        {
            return;
        }
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.file.exists() {
            return;
        }
        if let Err(e) = self.allocate() {
            tracing::warn!(reserve = %self.file.display(), error = %e, "cannot make the reserve");
            let _ = fs::remove_file(self.tmp());
        }
    }

    fn tmp(&self) -> PathBuf {
        let mut name = self.file.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        self.file.with_file_name(name)
    }

    /// Allocates the whole file (blocks, not a sparse hole) under a temporary name, then
    /// renames it into place, so that a present reserve file is always a whole one.
    fn allocate(&self) -> io::Result<()> {
        let tmp = self.tmp();
        let file = File::create(&tmp)?;
        let len = i64::try_from(self.size).map_err(io::Error::other)?;
        nix::fcntl::fallocate(&file, nix::fcntl::FallocateFlags::empty(), 0, len)
            .map_err(io::Error::from)?;
        file.sync_all()?;
        fs::rename(&tmp, &self.file)?;
        tracing::debug!(reserve = %self.file.display(), "reserve made");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_made_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("meta.db");
        let r = Reserve::with_sizes(&db, 64 << 10, 0);
        assert_eq!(r.file(), dir.path().join("meta.db.reserve"));
        r.replenish();
        let meta = fs::metadata(r.file()).unwrap();
        assert_eq!(meta.len(), 64 << 10);
        // Room enough: nothing is released, writes are admitted.
        r.make_room();
        assert!(r.file().exists());
        r.admit_write().unwrap();
    }

    #[test]
    fn a_full_filesystem_refuses_writes_and_releases_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("meta.db");
        // Made while there is room, then "full": more free space asked than any disk has.
        Reserve::with_sizes(&db, 4096, 0).replenish();
        let r = Reserve::with_sizes(&db, 4096, u64::MAX);
        let err = r.admit_write().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
        assert_eq!(
            err.to_string(),
            format!("{}: no space left on device", db.display())
        );
        r.make_room();
        assert!(!r.file().exists());
        // No room to make it again.
        r.replenish();
        assert!(!r.file().exists());
    }
}
