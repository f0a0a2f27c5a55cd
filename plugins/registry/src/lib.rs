//! The Berth plugin registry: plugin types and ids, registration and dependency order, config
//! loading, error classes (re-exported from their leaf crate, `berth-errdefs`) and identifier
//! validation. Small and free of storage.

pub mod config;
pub mod context;
pub mod duration;
pub mod errdefs;
pub mod identifiers;
pub mod inventory;
pub mod registration;
pub mod registry;
pub mod types;

pub use config::{CgroupConfig, Config, ConfigError};
pub use context::{InitContext, PluginMeta};
pub use errdefs::{Classify, ErrorKind};
pub use identifiers::IdentifierError;
pub use inventory::{Inventory, Platform, PluginInfo, PluginStatus};
pub use registration::{Instance, PluginError, Registration};
pub use registry::{Backoff, Plugins, Registry, RegistryError, Started};
