//! The restart monitor (containerd `runtime/restart` and `runtime/restart/monitor`, the
//! `io.containerd.internal.v1.restart` plugin): containers carrying the
//! `containerd.io/restart.status` label have their task kept in that status.
//!
//! Labels, as containerd reads them:
//! - 1.6 and 1.7: [`label::STATUS`] (desired status, `running` or `stopped`), [`label::LOG_URI`]
//!   (the restarted task's stdout and stderr), [`label::LOG_PATH`] (deprecated in 1.5: a file).
//! - 1.7 only: [`label::POLICY`] (`always`, `on-failure[:N]`, `unless-stopped`, `no`),
//!   [`label::COUNT`] (restarts so far, written by the monitor) and
//!   [`label::EXPLICITLY_STOPPED`] (written by clients such as nerdctl's `stop`/`kill`, read
//!   for `unless-stopped`). A 1.6 monitor ignores them and restarts always; Berth reads them as
//!   1.7 does, which is the same for containers without a policy label.
//!
//! Beyond containerd, which only reconciles every `interval`, Berth's monitor also reacts to
//! `/tasks/exit` at once, with a back-off for crash loops.

#[cfg(feature = "monitor")]
pub mod monitor;
#[cfg(feature = "monitor")]
pub mod plugin;
pub mod policy;

#[cfg(feature = "monitor")]
pub use monitor::Monitor;
pub use policy::{Policy, PolicyError};

/// The plugin id (`io.containerd.internal.v1.restart`).
pub const PLUGIN_ID: &str = "restart";

/// The restart labels (containerd `runtime/restart/restart.go`).
pub mod label {
    /// Desired status of the container's task: `running` or `stopped`.
    pub const STATUS: &str = "containerd.io/restart.status";
    /// Log URI the restarted task's stdout and stderr go to.
    pub const LOG_URI: &str = "containerd.io/restart.loguri";
    /// Log file of the restarted task (deprecated since containerd 1.5; `LOG_URI` wins).
    pub const LOG_PATH: &str = "containerd.io/restart.logpath";
    /// Restart policy (containerd 1.7).
    pub const POLICY: &str = "containerd.io/restart.policy";
    /// Restarts done by the monitor (containerd 1.7).
    pub const COUNT: &str = "containerd.io/restart.count";
    /// `true` once a user stopped the container (containerd 1.7; `unless-stopped`).
    pub const EXPLICITLY_STOPPED: &str = "containerd.io/restart.explicitly-stopped";
}
