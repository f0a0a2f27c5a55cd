//! Berth's mount library (containerd `core/mount`): the domain [`Mount`] every snapshotter
//! returns and every runtime mounts, and the Linux mount and unmount calls the daemon, the shim
//! and the CLI share.
//!
//! - [`types`]: [`Mount`] and its conversions to and from the wire type.
//! - [`linux`]: [`mount_all`], [`mount_one`], [`unmount_all`]; long overlay `lowerdir` lists
//!   are shortened as containerd does, and what still does not fit one page is refused.
//! - [`error`]: the one error type, [`MountError`].

pub mod error;
pub mod linux;
pub mod types;

pub use error::MountError;
pub use linux::{mount_all, mount_one, unmount_all, MAX_DATA_LEN};
pub use types::Mount;
