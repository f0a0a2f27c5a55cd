//! Berth's snapshotters: the `Snapshotter` trait, the shared snapshot metastore, the drivers
//! (overlayfs, native, btrfs, proxy) and layer apply.
//!
//! - [`snapshotter`]: domain types ([`Kind`], [`Info`], [`Usage`], [`Mount`]) and the
//!   synchronous [`Snapshotter`] trait; async callers use `spawn_blocking`.
//! - [`storage`]: the metastore the local drivers share (containerd `snapshots/storage`).
//! - [`overlay`], [`native`], [`btrfs`]: the drivers; each `mod.rs` knows nothing of the
//!   registry, each `plugin.rs` holds its `Config` and `registration()`.
//! - [`mount`]: mounting what a snapshotter returns, and the [`TempMount`] guard.
//! - [`testsuite`]: the conformance checks every driver runs.
//!
//! # Plugin instances
//!
//! Every snapshotter plugin's instance is an `Arc<dyn Snapshotter>` wrapped in the registry's
//! `Arc<dyn Any>`, i.e. the init function returns `Arc::new(snapshotter as Arc<dyn
//! Snapshotter>)`. Consumers take them all with
//! `ctx.get_all(berth_registry::types::SNAPSHOTTER)` and downcast each instance to
//! `Arc<dyn Snapshotter>` (`instance.downcast::<Arc<dyn Snapshotter>>()`), or ask for one with
//! `ctx.get_by_id::<Arc<dyn Snapshotter>>(types::SNAPSHOTTER, "overlayfs")`.

pub mod apply;
pub mod btrfs;
mod common;
pub mod error;
mod fsutil;
pub mod mount;
pub mod native;
pub mod overlay;
pub mod proxy;
pub mod snapshotter;
pub mod storage;
pub mod testsuite;

pub use error::SnapshotError;
pub use mount::{mount_all, unmount, TempMount};
pub use snapshotter::{Info, Kind, Mount, Snapshotter, Usage};
