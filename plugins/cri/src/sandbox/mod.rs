//! The sandbox RPCs, one module each.

pub mod list;
pub mod port_forward;
pub mod remove;
pub mod run;
pub mod stats;
pub mod status;
pub mod stop;
