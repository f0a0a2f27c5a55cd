//! containerd's error classes, re-exported from their leaf crate `berth-errdefs` so that the
//! registry's users keep importing them from here (`berth_registry::ErrorKind`).

pub use berth_errdefs::{Classify, ErrorKind};
