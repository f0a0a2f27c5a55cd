//! External snapshotters: a [`ProxySnapshotter`] that forwards every call to another process
//! serving containerd's Snapshots gRPC API on a unix socket, and the adapter that serves any
//! [`Snapshotter`](crate::Snapshotter) over that API (used by `berth-native-snapshotter`).

mod client;
mod convert;
pub mod plugin;
mod server;

pub use client::ProxySnapshotter;
pub use server::SnapshotterService;

#[cfg(test)]
mod tests;
