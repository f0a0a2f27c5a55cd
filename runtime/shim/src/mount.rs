//! Mounting the task's rootfs into `<bundle>/rootfs` and taking it down again, through the one
//! mount library (`berth-mount`, containerd `mount/mount_linux.go` `All`, `UnmountAll`), which
//! shortens long overlay `lowerdir` lists as containerd does. Sync: call through `asyncify`.

use std::path::Path;

use berth_proto::containerd::types::Mount as ProtoMount;
use nix::mount::MntFlags;

use crate::error::Result;

/// Mounts all of `mounts` on `target` in order; undoes them on failure.
pub fn mount_all(mounts: &[ProtoMount], target: &Path) -> Result<()> {
    let mounts: Vec<berth_mount::Mount> = mounts.iter().map(berth_mount::Mount::from).collect();
    Ok(berth_mount::mount_all(&mounts, target)?)
}

/// Unmounts everything mounted on `target` (no error if nothing is); a mount still busy after
/// containerd's retries is detached rather than left behind.
pub fn unmount_all(target: &Path) -> Result<()> {
    match berth_mount::unmount_all(target, MntFlags::empty()) {
        Err(berth_mount::MountError::Sys {
            source: nix::errno::Errno::EBUSY,
            ..
        }) => Ok(berth_mount::unmount_all(target, MntFlags::MNT_DETACH)?),
        other => Ok(other?),
    }
}
