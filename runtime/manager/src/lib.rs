//! Runtime v2 manager (containerd `runtime/v2`): task bundles under the state dir, shim
//! binaries resolved from runtime names and launched with their `start`/`delete` actions, a
//! ttrpc client per task, and the [`TaskManager`] the Tasks service drives. Knows nothing of
//! the metadata store or the events exchange: the daemon hands it an [`EventSink`].

pub mod binary;
pub mod bundle;
pub mod config;
pub mod error;
pub mod events;
pub mod legacy;
pub mod manager;
pub mod shim;
pub mod task;

pub use bundle::Bundle;
pub use config::{Config, Timeouts};
pub use error::RuntimeError;
pub use events::{DiscardEvents, EventSink};
pub use manager::{CreateOpts, ManagerConfig, RootfsMount, TaskManager};
pub use shim::Exit;
pub use task::{Task, TaskIo};

/// The plugin id of the runtime v2 task manager (`io.containerd.runtime.v2.task`).
pub const PLUGIN_ID: &str = "task";
