//! Registration of the btrfs snapshotter as `io.containerd.snapshotter.v1.btrfs`
//! (containerd `snapshots/btrfs/plugin/plugin.go`).

use std::path::PathBuf;
use std::sync::Arc;

use berth_registry::{types, Platform, PluginError, Registration};
use serde::{Deserialize, Serialize};

use super::{check_btrfs, BtrfsSnapshotter};
use crate::error::SnapshotError;
use crate::snapshotter::Snapshotter;

/// The plugin id.
pub const ID: &str = "btrfs";

/// The `[plugins."io.containerd.snapshotter.v1.btrfs"]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Root directory; empty means the plugin's own `<root>/<type>.<id>`.
    pub root_path: String,
}

/// The `io.containerd.snapshotter.v1.btrfs` plugin; skipped when its root is not on btrfs.
/// Its instance is an `Arc<dyn Snapshotter>` (see the crate docs).
pub fn registration() -> Registration {
    Registration::new(types::SNAPSHOTTER, ID)
        .config::<Config>()
        .init(|ctx| {
            let config: Config = ctx.config()?;
            ctx.meta.platforms.push(Platform::host());
            let root = if config.root_path.is_empty() {
                ctx.create_root()?
            } else {
                // Created first, as containerd does, so that a root_path inside a btrfs mount
                // need not exist yet.
                let root = PathBuf::from(&config.root_path);
                berth_registry::context::create_private_dir(&root)?;
                root
            };
            match check_btrfs(&root) {
                Ok(()) => {}
                Err(SnapshotError::Unsupported { reason }) => {
                    return Err(PluginError::Skip(reason))
                }
                Err(e) => return Err(PluginError::init(e)),
            }
            let snapshotter = BtrfsSnapshotter::new(&root).map_err(PluginError::init)?;
            if let Err(e) = snapshotter.cleanup() {
                tracing::warn!(root = %root.display(), error = %e, "btrfs cleanup failed");
            }
            ctx.meta
                .exports
                .insert("root".into(), root.display().to_string());
            let snapshotter: Arc<dyn Snapshotter> = Arc::new(snapshotter);
            Ok(Arc::new(snapshotter))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_refuses_unknown_keys() {
        let config: Config = toml::from_str("root_path = \"/b\"").unwrap();
        assert_eq!(config.root_path, "/b");
        assert!(toml::from_str::<Config>("device = \"/dev/x\"").is_err());
    }
}
