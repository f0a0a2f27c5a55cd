//! Mounting snapshot mounts locally and unmounting a target completely, through the one mount
//! library (`berth-mount`, containerd `mount.All` and `mount.UnmountAll`).

use std::path::Path;

use anyhow::{Context as _, Result};
use berth_proto::containerd::types::Mount;
use nix::mount::MntFlags;

/// Mounts every mount in order on `target`.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    let mounts: Vec<berth_mount::Mount> = mounts.iter().map(berth_mount::Mount::from).collect();
    berth_mount::mount_all(&mounts, target)
        .with_context(|| format!("cannot mount on {}", target.display()))
}

/// Unmounts everything stacked on `target` (containerd `mount.UnmountAll`).
pub fn unmount_all(target: &Path) -> Result<()> {
    berth_mount::unmount_all(target, MntFlags::empty())
        .with_context(|| format!("cannot unmount {}", target.display()))
}
