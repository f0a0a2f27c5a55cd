//! Registration of the overlay snapshotter as `io.containerd.snapshotter.v1.overlayfs`
//! (containerd `snapshots/overlay/plugin/plugin.go`).

use std::path::PathBuf;
use std::sync::Arc;

use berth_registry::{types, Platform, PluginError, Registration};
use serde::{Deserialize, Serialize};

use super::{supported, OverlayOptions, OverlaySnapshotter};
use crate::error::SnapshotError;
use crate::snapshotter::Snapshotter;

/// The plugin id.
pub const ID: &str = "overlayfs";

/// The `[plugins."io.containerd.snapshotter.v1.overlayfs"]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Root directory; empty means the plugin's own `<root>/<type>.<id>`.
    pub root_path: String,
    /// Report each snapshot's upper directory as the `containerd.io/snapshot/overlay.upperdir`
    /// label.
    pub upperdir_label: bool,
    /// Extra options for every overlay mount.
    pub mount_options: Vec<String>,
}

/// The `io.containerd.snapshotter.v1.overlayfs` plugin. Its instance is an
/// `Arc<dyn Snapshotter>` (see the crate docs).
pub fn registration() -> Registration {
    Registration::new(types::SNAPSHOTTER, ID)
        .config::<Config>()
        .init(|ctx| {
            let config: Config = ctx.config()?;
            ctx.meta.platforms.push(Platform::host());
            let root = if config.root_path.is_empty() {
                ctx.create_root()?
            } else {
                PathBuf::from(&config.root_path)
            };
            match supported(&root) {
                Ok(()) => {}
                Err(SnapshotError::Unsupported { reason }) => {
                    return Err(PluginError::Skip(reason))
                }
                // The host failed the probe (no space to make its directories, say): no verdict
                // on overlay, so a failure, which the daemon retries, not a skip.
                Err(other) => return Err(PluginError::init(other)),
            }
            let options = OverlayOptions {
                upperdir_label: config.upperdir_label,
                mount_options: config.mount_options,
            };
            let snapshotter = OverlaySnapshotter::new(&root, options).map_err(PluginError::init)?;
            // The startup pass: directories left by a crash or an interrupted remove.
            if let Err(e) = snapshotter.cleanup() {
                tracing::warn!(root = %root.display(), error = %e, "overlay cleanup failed");
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
    fn config_uses_containerd_keys_and_refuses_unknown_ones() {
        let config: Config = toml::from_str(
            "root_path = \"/x\"\nupperdir_label = true\nmount_options = [\"volatile\"]",
        )
        .unwrap();
        assert_eq!(config.root_path, "/x");
        assert!(config.upperdir_label);
        assert_eq!(config.mount_options, ["volatile"]);
        assert!(toml::from_str::<Config>("rootpath = \"/x\"").is_err());
        assert_eq!(toml::from_str::<Config>("").unwrap(), Config::default());
    }
}
