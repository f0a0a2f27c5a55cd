//! Berth's CRI plugin (`io.containerd.grpc.v1` `cri`): the kubelet's `runtime.v1`
//! RuntimeService and ImageService, built on the daemon's own metadata store, snapshotters,
//! transfer library and runtime v2 manager, as containerd's CRI plugin is built on containerd.
//!
//! Layout: `server` dispatches each RPC to its module (`sandbox::*`, `container::*`,
//! `image::*`, `runtime_info`); `store` keeps the CRI's records; `spec` builds OCI specs;
//! `netns` and `cni` give pods their network; `logs` writes CRI log files.

pub mod blocking;
pub mod cni;
pub mod config;
pub mod container;
pub mod error;
pub mod image;
pub mod logs;
pub mod netns;
pub mod plugin;
pub mod rootfs;
pub mod runtime_info;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod spec;
pub mod stats;
pub mod store;
pub mod streaming;

pub use config::CriConfig;
pub use error::CriError;
pub use plugin::registration;
pub use service::{Cri, K8S_NAMESPACE};
