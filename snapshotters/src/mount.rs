//! Mounting the mounts a snapshotter returns, and a guard that mounts into a temporary
//! directory and unmounts on drop. The mount calls themselves live in the one mount library,
//! `berth-mount` (which shortens long overlay `lowerdir` lists as containerd does); this module
//! re-exports them with [`SnapshotError`] as the error, so callers keep importing them here.

use std::path::{Path, PathBuf};

use nix::mount::MntFlags;

use crate::error::SnapshotError;
use crate::snapshotter::Mount;

/// The mount library's error in the snapshotters' terms.
fn snapshot_error(err: berth_mount::MountError) -> SnapshotError {
    match err {
        berth_mount::MountError::Sys { op, target, source } => {
            SnapshotError::sys(op, target, source)
        }
        berth_mount::MountError::OptionsTooLong { target, len, .. } => {
            SnapshotError::OptionsTooLong { target, len }
        }
        berth_mount::MountError::Unsupported { what } => SnapshotError::UnsupportedMount { what },
    }
}

/// Mounts every mount in order onto `target` (plus each mount's own relative `target`).
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), SnapshotError> {
    berth_mount::mount_all(mounts, target).map_err(snapshot_error)
}

/// Mounts one mount at `target` (containerd `Mount.Mount`).
pub fn mount_one(m: &Mount, target: &Path) -> Result<(), SnapshotError> {
    berth_mount::mount_one(m, target).map_err(snapshot_error)
}

/// Unmounts everything stacked on `target` (containerd `UnmountAll`): repeats until the path
/// is no longer a mount point. A missing path or a path that is not a mount point is fine.
pub fn unmount(target: &Path) -> Result<(), SnapshotError> {
    berth_mount::unmount_all(target, MntFlags::empty()).map_err(snapshot_error)
}

/// The name prefix of [`TempMount`] directories.
const TEMP_MOUNT_PREFIX: &str = "berth-mount-";

/// Unmounts and removes every [`TempMount`] directory left in `parent` by a daemon that was
/// killed while one was mounted (containerd `mount.CleanupTempMounts`, run at start-up): nobody
/// else would ever release them. Returns how many were removed; one that cannot be unmounted is
/// logged and left (never removed through a live mount).
pub fn cleanup_temp_mounts(parent: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(TEMP_MOUNT_PREFIX)
        {
            continue;
        }
        let dir = entry.path();
        let released = berth_mount::unmount_all(&dir, MntFlags::MNT_DETACH)
            .map_err(snapshot_error)
            .and_then(|()| {
                std::fs::remove_dir(&dir).map_err(|e| SnapshotError::io("remove", &dir, e))
            });
        match released {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "cannot release a stale temp mount")
            }
        }
    }
    removed
}

/// Mounts a snapshot's mounts on a fresh temporary directory and unmounts them on drop
/// (containerd `mount.WithTempMount`). If the unmount fails the directory is left in place
/// rather than deleting through a live mount.
#[derive(Debug)]
pub struct TempMount {
    dir: PathBuf,
    mounted: bool,
}

impl TempMount {
    /// Mounts `mounts` on a new directory under the system temp dir.
    pub fn new(mounts: &[Mount]) -> Result<TempMount, SnapshotError> {
        Self::new_in(&std::env::temp_dir(), mounts)
    }

    /// Mounts `mounts` on a new directory under `parent`.
    pub fn new_in(parent: &Path, mounts: &[Mount]) -> Result<TempMount, SnapshotError> {
        let dir = tempfile::Builder::new()
            .prefix(TEMP_MOUNT_PREFIX)
            .tempdir_in(parent)
            .map_err(|e| SnapshotError::io("create temp mount dir in", parent, e))?
            .keep();
        let guard = TempMount { dir, mounted: true };
        // On failure, drop unmounts whatever part of the stack did mount and removes the dir.
        mount_all(mounts, &guard.dir)?;
        Ok(guard)
    }

    /// Where the mounts are.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Unmounts and removes the directory, reporting failures that drop would only log.
    pub fn close(mut self) -> Result<(), SnapshotError> {
        self.release()
    }

    fn release(&mut self) -> Result<(), SnapshotError> {
        if !self.mounted {
            return Ok(());
        }
        unmount(&self.dir)?;
        self.mounted = false;
        // remove_dir, never remove_dir_all: if anything is still mounted it fails safely.
        std::fs::remove_dir(&self.dir).map_err(|e| SnapshotError::io("remove", &self.dir, e))
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!(path = %self.dir.display(), error = %e, "failed to release temp mount");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temp_mounts_are_released_and_others_kept() {
        if !berth_testutil::require_root() {
            return;
        }
        let parent = tempfile::tempdir().expect("tempdir");
        let src = parent.path().join("src");
        std::fs::create_dir(&src).expect("mkdir src");
        std::fs::write(src.join("f"), "x").expect("write");
        let bind = Mount {
            mount_type: "bind".into(),
            source: src.to_string_lossy().into_owned(),
            options: vec!["rbind".into(), "ro".into()],
            ..Mount::default()
        };
        // A killed daemon's temp mount: mounted, never dropped.
        let stale = TempMount::new_in(parent.path(), &[bind]).expect("mount");
        let path = stale.path().to_owned();
        std::mem::forget(stale);
        assert!(path.join("f").exists());
        std::fs::create_dir(parent.path().join("other")).expect("mkdir other");

        assert_eq!(cleanup_temp_mounts(parent.path()), 1);
        assert!(!path.exists(), "{} still there", path.display());
        assert!(src.join("f").exists(), "the bind source must survive");
        assert!(parent.path().join("other").exists());
        assert_eq!(cleanup_temp_mounts(parent.path()), 0);
    }

    #[test]
    fn too_long_options_keep_the_snapshot_error_class() {
        // The library's own tests cover the limit; this one checks only the error's class.
        let lower = (0..500).map(|i| format!("/l{i:04}/fs")).collect::<Vec<_>>();
        let overlay = Mount {
            options: vec![format!("lowerdir={}", lower.join(":"))],
            ..Mount::default()
        };
        let result = mount_one(&overlay, Path::new("/nonexistent-berth-target"));
        assert!(matches!(result, Err(SnapshotError::OptionsTooLong { .. })));
    }
}
