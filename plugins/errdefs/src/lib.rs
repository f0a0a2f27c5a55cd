//! containerd's error classes (containerd/errdefs) as a leaf crate: every Berth crate, the
//! daemon's and the clients' alike, classifies its errors with [`ErrorKind`] without depending
//! on the plugin registry. With the `grpc` feature, [`grpc`] holds the only tables between a
//! class and a gRPC status code, both ways, side by side (containerd's `errgrpc.ToGRPC` and
//! `errgrpc.ToNative`).

mod kind;

#[cfg(feature = "grpc")]
pub mod grpc;

pub use kind::{Classify, ErrorKind};
