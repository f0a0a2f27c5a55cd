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
pub mod plugin;
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
