//! Network namespaces created and pinned (bind-mounted) under the CRI state dir (containerd
//! `pkg/netns/netns_linux.go`): `<cri state>/netns/<sandbox id>`.
//!
//! The pin file is created before the namespace, so that the file itself records it: a restart
//! after a crash at any point finds it, and [`remove`] undoes whatever stage was reached (an
//! empty file, or a mount). Everything here blocks.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use crate::error::{CriError, Result};

/// `<cri state>/netns`.
pub fn netns_dir(state: &Path) -> PathBuf {
    state.join("netns")
}

/// The pin of sandbox `id`'s namespace.
pub fn netns_path(state: &Path, id: &str) -> PathBuf {
    netns_dir(state).join(id)
}

/// Creates a new network namespace and pins it at `path`: the file is made first, then a
/// thread of its own unshares its network namespace and bind-mounts
/// `/proc/self/task/<tid>/ns/net` on it, and exits (the namespace lives on through the mount).
pub fn create(path: &Path) -> Result<()> {
    let dir = path.parent().ok_or_else(|| {
        CriError::Internal(format!("netns path {} has no parent", path.display()))
    })?;
    std::fs::create_dir_all(dir).map_err(|e| CriError::io("create netns dir", dir, e))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| CriError::io("create netns pin", path, e))?;
    let target = path.to_owned();
    let pinned = std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || -> std::io::Result<()> {
            // This thread alone changes namespace; it ends right after, so no other work ever
            // runs in the pod's namespace.
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            let tid = nix::unistd::gettid();
            let source = format!("/proc/self/task/{tid}/ns/net");
            nix::mount::mount(
                Some(source.as_str()),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(std::io::Error::from)
        })
        .map_err(|e| CriError::io("start netns thread", path, e))?
        .join()
        .map_err(|_| CriError::Internal("netns thread panicked".into()))?;
    if let Err(e) = pinned {
        let _ = std::fs::remove_file(path);
        return Err(CriError::io("create and pin network namespace", path, e));
    }
    Ok(())
}

pub use berth_cni::netns::is_pinned;

/// Unpins and removes `path`; a missing file or an unmounted one is fine (idempotent).
pub fn remove(path: &Path) -> Result<()> {
    Ok(berth_cni::netns::unpin(path)?)
}

/// The ids of every pin under `<state>/netns` (for recovery).
pub fn pinned_ids(state: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(netns_dir(state)) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_pin_and_remove() {
        if !berth_testutil::require_root_for("network namespaces") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = netns_path(dir.path(), "abc");
        create(&path).unwrap();
        assert!(is_pinned(&path));
        assert_eq!(pinned_ids(dir.path()), vec!["abc".to_owned()]);
        // A different namespace from ours.
        let ours = std::fs::metadata("/proc/self/ns/net").unwrap();
        let pod = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(ours.ino(), pod.ino());
        remove(&path).unwrap();
        assert!(!path.exists());
        remove(&path).unwrap();
    }
}
