//! What mounting and unmounting can fail with.

use std::path::PathBuf;

use nix::errno::Errno;

/// A failed mount or unmount; every variant names the mount point.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A system call failed.
    #[error("{op} {}: {source}", target.display())]
    Sys {
        /// What was being done (`mount overlay overlay on`, `unmount`, ...).
        op: String,
        /// The mount point.
        target: PathBuf,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// The options do not fit the kernel's one-page limit even after compaction.
    #[error(
        "mount options is too long ({len} bytes, the limit is {limit}) for {}: invalid argument",
        target.display()
    )]
    OptionsTooLong {
        /// The mount point.
        target: PathBuf,
        /// The length of the data string.
        len: usize,
        /// The most the kernel takes.
        limit: usize,
    },
    /// A mount type or option this library does not handle.
    #[error("unsupported mount {what}: not implemented")]
    Unsupported {
        /// What was refused.
        what: String,
    },
}

impl MountError {
    /// A failed system call on `target`.
    pub fn sys(op: impl Into<String>, target: impl Into<PathBuf>, source: Errno) -> MountError {
        MountError::Sys {
            op: op.into(),
            target: target.into(),
            source,
        }
    }
}
