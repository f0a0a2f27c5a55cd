//! End-to-end harness for Berth: starts a real `berthd` on a private temporary root, state dir and
//! socket, then drives it with the real `ctr` and with gRPC clients, as containerd's
//! `integration/client/client_test.go` `TestMain` does for containerd.

pub mod bench;
pub mod berth_cli;
mod command;
pub mod containerd;
pub mod cri;
mod ctr;
mod daemon;
mod grpc;
pub mod guest;
pub mod image;
pub mod killpoints;
pub mod layers;
mod prereq;
pub mod procs;
pub mod registry;

pub use command::{run_with_timeout, CmdOutput};
pub use ctr::{client_at, ctr, ctr_at, parse_table, BackgroundCtr, Row, CTR_BIN, CTR_TIMEOUT};
pub use daemon::{berthd_bin, spawn_raw, Daemon, READY_TIMEOUT};
pub use grpc::{channel, channel_at, minimal_container, namespaced, NAMESPACE_HEADER};
pub use prereq::{
    find_executable, on_path, require_binary, require_python_module, require_root, skip,
};
