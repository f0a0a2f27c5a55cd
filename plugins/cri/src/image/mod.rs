//! The image RPCs, one module each.

pub mod fs_info;
pub mod list;
pub mod lookup;
pub mod pull;
pub mod reference;
pub mod remove;
pub mod status;
