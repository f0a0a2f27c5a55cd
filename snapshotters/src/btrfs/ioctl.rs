//! The few btrfs ioctls the snapshotter needs (containerd/btrfs `btrfs.go`), declared with
//! nix's ioctl macros from the kernel's `include/uapi/linux/btrfs.h`.
//!
//! Ioctls rather than the `btrfs` CLI: four fixed-size structs and four calls are less to get
//! wrong than parsing a tool's output, and the daemon does not depend on btrfs-progs.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::errno::Errno;

use crate::error::SnapshotError;

const BTRFS_IOCTL_MAGIC: u8 = 0x94;
const BTRFS_PATH_NAME_MAX: usize = 4087;
const BTRFS_SUBVOL_NAME_MAX: usize = 4039;
const BTRFS_INO_LOOKUP_PATH_MAX: usize = 4080;
const BTRFS_SUBVOL_RDONLY: u64 = 1 << 1;
/// The inode number of every subvolume's root directory.
pub(crate) const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
pub(crate) struct VolArgs {
    fd: i64,
    name: [u8; BTRFS_PATH_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args_v2` (the qgroup/size union left zero).
#[repr(C)]
pub(crate) struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; BTRFS_SUBVOL_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
pub(crate) struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; BTRFS_INO_LOOKUP_PATH_MAX],
}

// The kernel encodes the struct size in the ioctl number; all three are one page.
const _: () = assert!(std::mem::size_of::<VolArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<VolArgsV2>() == 4096);
const _: () = assert!(std::mem::size_of::<InoLookupArgs>() == 4096);

nix::ioctl_write_ptr!(
    /// `BTRFS_IOC_SUBVOL_CREATE`: on the parent directory, creates subvolume `name`.
    btrfs_subvol_create,
    BTRFS_IOCTL_MAGIC,
    14,
    VolArgs
);
nix::ioctl_write_ptr!(
    /// `BTRFS_IOC_SNAP_DESTROY`: on the parent directory, deletes subvolume `name`.
    btrfs_snap_destroy,
    BTRFS_IOCTL_MAGIC,
    15,
    VolArgs
);
nix::ioctl_readwrite!(
    /// `BTRFS_IOC_INO_LOOKUP`: with objectid 256, answers the subvolume (tree) id of the fd.
    btrfs_ino_lookup,
    BTRFS_IOCTL_MAGIC,
    18,
    InoLookupArgs
);
nix::ioctl_write_ptr!(
    /// `BTRFS_IOC_SNAP_CREATE_V2`: on the destination's parent directory, snapshots the
    /// subvolume open at `fd` as `name`, read-only with `BTRFS_SUBVOL_RDONLY`.
    btrfs_snap_create_v2,
    BTRFS_IOCTL_MAGIC,
    23,
    VolArgsV2
);

fn open_dir(path: &Path) -> Result<File, SnapshotError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY)
        .open(path)
        .map_err(|e| SnapshotError::io("open", path, e))
}

/// The parent directory, opened, and the last component as a NUL-padded name.
fn split<const N: usize>(path: &Path) -> Result<(File, [u8; N]), SnapshotError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(SnapshotError::sys(
            "btrfs subvolume path",
            path,
            Errno::EINVAL,
        ));
    };
    Ok((open_dir(parent)?, name_buf::<N>(path, name)?))
}

fn name_buf<const N: usize>(path: &Path, name: &OsStr) -> Result<[u8; N], SnapshotError> {
    let bytes = name.as_bytes();
    // Leave room for the terminating NUL.
    if bytes.len() >= N || bytes.contains(&0) {
        return Err(SnapshotError::sys(
            "btrfs subvolume name",
            path,
            Errno::ENAMETOOLONG,
        ));
    }
    let mut buf = [0u8; N];
    buf[..bytes.len()].copy_from_slice(bytes);
    Ok(buf)
}

/// Creates an empty subvolume at `path`.
pub(crate) fn subvol_create(path: &Path) -> Result<(), SnapshotError> {
    let (dir, name) = split::<{ BTRFS_PATH_NAME_MAX + 1 }>(path)?;
    let args = VolArgs { fd: 0, name };
    // SAFETY: `dir` is an open directory fd and `args` a live, correctly sized
    // btrfs_ioctl_vol_args the kernel only reads.
    unsafe { btrfs_subvol_create(dir.as_raw_fd(), &args) }
        .map_err(|e| SnapshotError::sys("btrfs subvolume create", path, e))?;
    Ok(())
}

/// Snapshots the subvolume at `src` as `dst`, read-only if asked.
pub(crate) fn subvol_snapshot(dst: &Path, src: &Path, readonly: bool) -> Result<(), SnapshotError> {
    let source = open_dir(src)?;
    let (dir, name) = split::<{ BTRFS_SUBVOL_NAME_MAX + 1 }>(dst)?;
    let args = VolArgsV2 {
        fd: i64::from(source.as_raw_fd()),
        transid: 0,
        flags: if readonly { BTRFS_SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name,
    };
    // SAFETY: both fds are open for the duration of the call and `args` is a live, correctly
    // sized btrfs_ioctl_vol_args_v2 the kernel only reads.
    unsafe { btrfs_snap_create_v2(dir.as_raw_fd(), &args) }
        .map_err(|e| SnapshotError::sys(format!("btrfs snapshot {} as", src.display()), dst, e))?;
    Ok(())
}

/// Deletes the subvolume at `path` (read-only ones too, as root).
pub(crate) fn subvol_delete(path: &Path) -> Result<(), SnapshotError> {
    let (dir, name) = split::<{ BTRFS_PATH_NAME_MAX + 1 }>(path)?;
    let args = VolArgs { fd: 0, name };
    // SAFETY: `dir` is an open directory fd and `args` a live, correctly sized
    // btrfs_ioctl_vol_args the kernel only reads.
    unsafe { btrfs_snap_destroy(dir.as_raw_fd(), &args) }
        .map_err(|e| SnapshotError::sys("btrfs subvolume delete", path, e))?;
    Ok(())
}

/// The subvolume id of the subvolume whose root is `path`, for `subvolid=` mounts.
pub(crate) fn subvol_id(path: &Path) -> Result<u64, SnapshotError> {
    let dir = open_dir(path)?;
    let mut args = InoLookupArgs {
        treeid: 0,
        objectid: BTRFS_FIRST_FREE_OBJECTID,
        name: [0; BTRFS_INO_LOOKUP_PATH_MAX],
    };
    // SAFETY: `dir` is an open fd and `args` a live, correctly sized
    // btrfs_ioctl_ino_lookup_args the kernel reads and writes in place.
    unsafe { btrfs_ino_lookup(dir.as_raw_fd(), &mut args) }
        .map_err(|e| SnapshotError::sys("btrfs inode lookup", path, e))?;
    Ok(args.treeid)
}

/// True when `path` is the root directory of a subvolume.
pub(crate) fn is_subvolume(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .map(|md| md.is_dir() && md.ino() == BTRFS_FIRST_FREE_OBJECTID)
        .unwrap_or(false)
}
