//! The container RPCs, one module each.

pub mod create;
pub mod exec_sync;
pub mod list;
pub mod remove;
pub mod reopen_log;
pub mod start;
pub mod stats;
pub mod status;
pub mod stop;
pub mod stream;
pub mod update;
