//! Berth's snapshotters: the `Snapshotter` trait, the shared snapshot metastore, the drivers
//! (overlayfs, native, btrfs, devmapper, proxy) and the layer applier.
//!
//! - [`snapshotter`]: domain types ([`Kind`], [`Info`], [`Usage`]; [`Mount`] is the one mount
//!   type of `berth-mount`, `plugins/base/mount`) and the synchronous [`Snapshotter`] trait; async
//!   callers use `spawn_blocking`.
//! - [`storage`]: the metastore the local drivers share (containerd `snapshots/storage`).
//! - [`space`]: the reserve that lets a database open and delete on a full disk.
//! - [`overlay`], [`native`], [`btrfs`], [`devmapper`]: the drivers; each `mod.rs` knows
//!   nothing of the registry, each `plugin.rs` holds its `Config` and `registration()`.
//! - [`proxy`]: an external snapshotter over the Snapshots gRPC API, and the adapter serving
//!   any driver over it.
//! - [`apply`]: layer apply and diff, and the [`LayerDiffer`](apply::LayerDiffer) the Diff
//!   service and in-daemon unpack call (containerd `core/diff/apply`, `diff/walking`).
//! - [`mount`]: the mount calls of `berth-mount` with [`SnapshotError`], and the [`TempMount`]
//!   guard.
//! - [`error`]: [`SnapshotError`], classed with containerd's error classes (`berth-errdefs`,
//!   through the registry).
//! - [`testsuite`]: the conformance checks every driver, the proxy included, runs.
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
pub mod devmapper;
pub mod error;
mod fsutil;
pub mod mount;
pub mod native;
pub mod overlay;
pub mod proxy;
pub mod snapshotter;
pub mod space;
pub mod storage;
pub mod testsuite;

pub use error::SnapshotError;
pub use mount::{mount_all, unmount, TempMount};
pub use snapshotter::{Info, Kind, Mount, Snapshotter, Usage};
