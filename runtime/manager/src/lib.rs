//! Runtime v2 manager (containerd `runtime/v2`): task bundles under the state dir, shim
//! binaries resolved from runtime names and launched with their `start`/`delete` actions, a
//! ttrpc client per task, and the [`TaskManager`] the Tasks service drives. The manager knows
//! nothing of the metadata store or the events exchange: it publishes through an
//! [`EventSink`], which [`plugin`] (the `io.containerd.runtime.v2.task` registration) sets
//! over the daemon's exchange.

pub mod binary;
pub mod bundle;
pub mod config;
pub mod error;
pub mod events;
pub mod legacy;
pub mod manager;
pub mod orphan;
pub mod plugin;
mod restore;
pub mod shim;
pub mod task;

/// The rootfs mounts a task is created with: the one domain mount of `berth-mount`.
pub use berth_mount::Mount;
pub use bundle::Bundle;
pub use config::{Config, Timeouts};
pub use error::RuntimeError;
pub use events::{DiscardEvents, EventSink};
pub use manager::{CreateOpts, ManagerConfig, TaskManager};
pub use shim::Exit;
pub use task::{Task, TaskIo};

/// The plugin id of the runtime v2 task manager (`io.containerd.runtime.v2.task`).
pub const PLUGIN_ID: &str = "task";

/// The debug abort points of the task manager ([`berth_abortpoint`]): inert unless berthd
/// runs with `BERTH_DEBUG_ABORT_AT` naming one.
pub mod abort_points {
    pub use berth_abortpoint::ENV;

    /// Task create: the shim was started (its binary and address are in the bundle), its
    /// task is not created yet.
    pub const CREATE_SHIM_STARTED: &str = "runtime.create.shim-started";
    /// Task delete: the shim deleted the task, it is not shut down and its bundle is still
    /// there.
    pub const DELETE_SHIM_DELETED: &str = "runtime.delete.shim-deleted";
}
