//! Pinned network namespaces (a namespace file bind-mounted on a file of its own), so that DEL
//! runs inside a namespace whose processes are gone: the bridge plugin removes the masquerade
//! rules it made only when it can enter the namespace. Used by the CRI plugin's pod namespaces
//! and by `berth run`'s OCI hook. Everything here blocks.

use std::path::Path;

use nix::mount::{umount2, MntFlags, MsFlags};

use crate::{CniError, Result};

/// Pins the namespace file `source` (e.g. `/proc/<pid>/ns/net`) on `pin`, making `pin` (and its
/// directory) first; on failure `pin` is removed again.
pub fn pin(source: &Path, pin: &Path) -> Result<()> {
    if let Some(dir) = pin.parent() {
        std::fs::create_dir_all(dir).map_err(|e| CniError::io("create netns dir", dir, e))?;
    }
    std::fs::File::create(pin).map_err(|e| CniError::io("create netns pin", pin, e))?;
    nix::mount::mount(
        Some(source),
        pin,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        let _ = std::fs::remove_file(pin);
        CniError::io("pin network namespace", pin, e.into())
    })
}

/// Whether `path` is a pinned namespace (a mount of an nsfs inode), not just the empty file.
pub fn is_pinned(path: &Path) -> bool {
    // The pin is a bind mount of an nsfs file: its device differs from its directory's.
    use std::os::unix::fs::MetadataExt;
    let (Ok(file), Some(Ok(dir))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    file.dev() != dir.dev()
}

/// Unpins and removes `path`; a missing file or an unmounted one is fine (idempotent).
pub fn unpin(path: &Path) -> Result<()> {
    if is_pinned(path) {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(CniError::io("unmount network namespace", path, e.into())),
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CniError::io("remove network namespace pin", path, e)),
    }
}
