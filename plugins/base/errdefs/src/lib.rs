//! containerd's error classes (containerd/errdefs) as a leaf crate: every Berth crate, the
//! daemon's and the clients' alike, classifies its errors with [`ErrorKind`] without depending
//! on the plugin registry. [`code`] holds the only table between a class and a status code, both
//! ways, side by side (containerd's `errgrpc.ToGRPC` and `errgrpc.ToNative`), by code number as
//! ttrpc sends it; with the `grpc` feature, [`grpc`] reads the same table in tonic's `Code`, and
//! with `grpc-body`, [`outcome`] reads the status a server's HTTP response ends its call with.

pub mod code;
mod kind;

#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "grpc-body")]
pub mod outcome;

pub use kind::{Classify, ErrorKind};
