//! Berth's snapshotters: the `Snapshotter` trait, the shared snapshot metastore, the drivers
//! (overlayfs, native, btrfs, proxy) and layer apply.

pub mod apply;
