//! Loop devices over regular files, for development pools (containerd's devmapper docs make
//! them with `losetup`; Berth does it with the loop ioctls of `include/uapi/linux/loop.h`).
//!
//! An attachment is made without `LO_FLAGS_AUTOCLEAR`, so it outlives the process (the pool
//! on it stays usable across berthd restarts), and [`attach`] first looks for an existing
//! attachment of the same file in `/sys/block/loop*/loop/backing_file`, so a restart reuses it
//! instead of stacking a second loop device on the file.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::error::SnapshotError;

const LOOP_CONTROL: &str = "/dev/loop-control";
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

nix::ioctl_none_bad!(
    /// `LOOP_CTL_GET_FREE`: the number of a free loop device (made if needed).
    loop_ctl_get_free,
    0x4C82
);
nix::ioctl_write_int_bad!(
    /// `LOOP_SET_FD`: binds the file descriptor's file to the loop device.
    loop_set_fd,
    0x4C00
);
nix::ioctl_none_bad!(
    /// `LOOP_CLR_FD`: unbinds the loop device.
    loop_clr_fd,
    0x4C01
);
nix::ioctl_write_ptr_bad!(
    /// `LOOP_SET_STATUS64`.
    loop_set_status64,
    0x4C04,
    LoopInfo64
);

/// A loop device bound to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: PathBuf,
    /// The file behind it, as the kernel names it.
    pub backing: PathBuf,
}

fn sys(op: &str, path: &Path, errno: Errno) -> SnapshotError {
    SnapshotError::sys(op, path, errno)
}

/// The loop device bound to `file`, if any.
pub fn find(file: &Path) -> Result<Option<LoopDevice>, SnapshotError> {
    let file = file
        .canonicalize()
        .map_err(|e| SnapshotError::io("resolve", file, e))?;
    let entries = match std::fs::read_dir("/sys/block") {
        Ok(entries) => entries,
        Err(e) => return Err(SnapshotError::io("read", "/sys/block", e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else {
            continue;
        };
        // Unbound loop devices have no loop/backing_file.
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = PathBuf::from(backing.trim_end_matches('\n'));
        if backing == file {
            return Ok(Some(LoopDevice {
                path: Path::new("/dev").join(name),
                backing,
            }));
        }
    }
    Ok(None)
}

/// Binds `file` to a loop device, or returns the one it is bound to already.
pub fn attach(file: &Path) -> Result<LoopDevice, SnapshotError> {
    if let Some(existing) = find(file)? {
        return Ok(existing);
    }
    let backing = file
        .canonicalize()
        .map_err(|e| SnapshotError::io("resolve", file, e))?;
    let target = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&backing)
        .map_err(|e| SnapshotError::io("open", &backing, e))?;
    let control =
        File::open(LOOP_CONTROL).map_err(|e| SnapshotError::io("open", LOOP_CONTROL, e))?;
    // Another process may take the free device between GET_FREE and SET_FD (EBUSY): ask again.
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument.
        let number = unsafe { loop_ctl_get_free(control.as_raw_fd()) }
            .map_err(|e| sys("LOOP_CTL_GET_FREE", Path::new(LOOP_CONTROL), e))?;
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| SnapshotError::io("open", &path, e))?;
        // SAFETY: LOOP_SET_FD takes a file descriptor, open for the call's duration.
        match unsafe { loop_set_fd(device.as_raw_fd(), target.as_raw_fd()) } {
            Err(Errno::EBUSY) => continue,
            Err(e) => return Err(sys("LOOP_SET_FD", &path, e)),
            Ok(_) => {}
        }
        let mut info = LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        };
        let name = backing.as_os_str().as_encoded_bytes();
        let len = name.len().min(LO_NAME_SIZE - 1);
        info.lo_file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: LOOP_SET_STATUS64 reads one loop_info64.
        if let Err(e) = unsafe { loop_set_status64(device.as_raw_fd(), &info) } {
            // SAFETY: LOOP_CLR_FD takes no argument; undo the bind.
            let _ = unsafe { loop_clr_fd(device.as_raw_fd()) };
            return Err(sys("LOOP_SET_STATUS64", &path, e));
        }
        return Ok(LoopDevice { path, backing });
    }
    Err(sys("LOOP_SET_FD", Path::new(LOOP_CONTROL), Errno::EBUSY))
}

/// Unbinds the loop device `dev` (`/dev/loopN`); one not bound is fine.
pub fn detach(dev: &Path) -> Result<(), SnapshotError> {
    let device = File::open(dev).map_err(|e| SnapshotError::io("open", dev, e))?;
    // SAFETY: LOOP_CLR_FD takes no argument.
    match unsafe { loop_clr_fd(device.as_raw_fd()) } {
        Ok(_) | Err(Errno::ENXIO) => Ok(()),
        Err(e) => Err(sys("LOOP_CLR_FD", dev, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devmapper::pool::device_size;

    #[test]
    fn loop_info64_matches_loop_h() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::offset_of!(LoopInfo64, lo_flags), 52);
        assert_eq!(std::mem::offset_of!(LoopInfo64, lo_file_name), 56);
        assert_eq!(std::mem::offset_of!(LoopInfo64, lo_init), 216);
    }

    /// Attaches a file for real (root and /dev/loop-control; CI runs tests as root).
    #[test]
    fn attach_reuses_an_attachment_and_detach_unbinds() {
        if !berth_testutil::require_root_for("loop devices") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data");
        std::fs::File::create(&file)
            .unwrap()
            .set_len(8 * 1024 * 1024)
            .unwrap();
        let dev = attach(&file).unwrap();
        let _guard = Detach(dev.path.clone());
        assert!(
            dev.path.to_str().unwrap().starts_with("/dev/loop"),
            "{dev:?}"
        );
        assert_eq!(dev.backing, file.canonicalize().unwrap());
        assert_eq!(device_size(&dev.path).unwrap(), 8 * 1024 * 1024);
        assert_eq!(find(&file).unwrap().as_ref(), Some(&dev));
        // A second attach (a restart) finds the same device.
        assert_eq!(attach(&file).unwrap(), dev);
        detach(&dev.path).unwrap();
        // While anyone else still has the device open (a probe, a parallel test scanning
        // block devices), the kernel defers the unbinding to its last close (autoclear): CI
        // once still found the binding right after LOOP_CLR_FD.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while find(&file).unwrap().is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(find(&file).unwrap(), None);
    }

    /// Detaches on drop when a test assertion fails midway.
    struct Detach(PathBuf);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = detach(&self.0);
        }
    }
}
