//! `[plugins."io.containerd.runtime.v2.task"]`: the runtime v2 plugin's config section
//! (containerd `runtime/v2/manager.go` `Config`, plus Berth's runtime → shim overrides).

use std::collections::BTreeMap;
use std::time::Duration;

use berth_registry::config as daemon;
use berth_registry::Platform;
use serde::{Deserialize, Serialize};

/// The runtime name ctr and the CRI plugin use by default.
pub const RUNC_V2: &str = "io.containerd.runc.v2";

/// Berth's own shim binary.
pub const BERTH_SHIM: &str = "containerd-shim-berth-v2";

/// The runtime v2 plugin's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Platforms served, `os/arch[/variant]`; introspection lists them.
    pub platforms: Vec<String>,
    /// Runtime name → shim binary: a name looked up on PATH and next to the daemon, or an
    /// absolute path used as is. Runtimes not listed follow containerd's naming rule.
    pub runtimes: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            platforms: vec![Platform::host().to_string()],
            runtimes: BTreeMap::from([(RUNC_V2.to_owned(), BERTH_SHIM.to_owned())]),
        }
    }
}

/// The shim timeouts of the daemon's `[timeouts]` (containerd `runtime/v2/shim.go`,
/// `services/tasks/local.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `io.containerd.timeout.shim.load`: a restarted daemon's wait for a shim's Connect.
    pub load: Duration,
    /// `io.containerd.timeout.shim.cleanup`: a shim's `delete` action.
    pub cleanup: Duration,
    /// `io.containerd.timeout.shim.shutdown`: a shim's Shutdown.
    pub shutdown: Duration,
    /// `io.containerd.timeout.task.state`: a shim's State.
    pub state: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::from_daemon_config(&berth_registry::Config::default())
    }
}

impl Timeouts {
    /// The timeouts the daemon config sets, Berth's defaults for the others.
    pub fn from_daemon_config(config: &berth_registry::Config) -> Timeouts {
        let get = |key: &str| config.timeout(key).unwrap_or(Duration::from_secs(5));
        Timeouts {
            load: get(daemon::TIMEOUT_SHIM_LOAD),
            cleanup: get(daemon::TIMEOUT_SHIM_CLEANUP),
            shutdown: get(daemon::TIMEOUT_SHIM_SHUTDOWN),
            state: get(daemon::TIMEOUT_TASK_STATE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_maps_runc_v2_to_the_berth_shim() {
        let c = Config::default();
        assert_eq!(
            c.runtimes.get(RUNC_V2).map(String::as_str),
            Some(BERTH_SHIM)
        );
        assert_eq!(c.platforms.len(), 1);
    }

    #[test]
    fn timeouts_come_from_the_daemon_config() {
        let d = Timeouts::default();
        assert_eq!(
            (d.load, d.cleanup, d.shutdown, d.state),
            (
                Duration::from_secs(5),
                Duration::from_secs(10),
                Duration::from_secs(3),
                Duration::from_secs(2)
            )
        );
        let config = berth_registry::Config::parse(
            "[timeouts]\n\"io.containerd.timeout.task.state\" = \"500ms\"\n",
            std::path::Path::new("c"),
        )
        .unwrap();
        let t = Timeouts::from_daemon_config(&config);
        assert_eq!(t.state, Duration::from_millis(500));
        assert_eq!(t.load, Duration::from_secs(5));
    }
}
