//! `[plugins."io.containerd.runtime.v2.task"]`: the runtime v2 plugin's config section
//! (containerd `runtime/v2/manager.go` `Config`, plus Berth's runtime → shim overrides).

use std::collections::BTreeMap;

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
}
