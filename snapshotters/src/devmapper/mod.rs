//! The devmapper snapshotter (containerd `snapshots/devmapper`): the kernel interface so far;
//! the snapshotter itself follows.

pub mod dm;
pub mod loopdev;
pub mod pool;
