//! Registration of the native snapshotter as `io.containerd.snapshotter.v1.native`
//! (containerd `snapshots/native/plugin/plugin.go`).

use std::path::PathBuf;
use std::sync::Arc;

use berth_registry::{types, Platform, PluginError, Registration};
use serde::{Deserialize, Serialize};

use super::NativeSnapshotter;
use crate::snapshotter::Snapshotter;

/// The plugin id.
pub const ID: &str = "native";

/// The `[plugins."io.containerd.snapshotter.v1.native"]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Root directory; empty means the plugin's own `<root>/<type>.<id>`.
    pub root_path: String,
}

/// The `io.containerd.snapshotter.v1.native` plugin. Its instance is an
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
            let snapshotter = NativeSnapshotter::new(&root).map_err(PluginError::init)?;
            if let Err(e) = snapshotter.cleanup() {
                tracing::warn!(root = %root.display(), error = %e, "native cleanup failed");
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
        let config: Config = toml::from_str("root_path = \"/n\"").unwrap();
        assert_eq!(config.root_path, "/n");
        assert!(toml::from_str::<Config>("root = \"/n\"").is_err());
    }

    #[test]
    fn snapshotter_plugins_load_through_the_registry() {
        use berth_registry::{PluginStatus, Registry};

        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "root = {:?}\nstate = {:?}\n",
            dir.path().join("root"),
            dir.path().join("state")
        );
        let config = berth_registry::Config::parse(&text, std::path::Path::new("test")).unwrap();
        let mut registry = Registry::new();
        registry.register(registration()).unwrap();
        registry
            .register(crate::btrfs::plugin::registration())
            .unwrap();
        let plugins = registry.load(&config).unwrap();

        let loaded = plugins.get_all(types::SNAPSHOTTER);
        let (id, instance) = loaded.iter().find(|(id, _)| id == ID).unwrap();
        assert_eq!(id, "native");
        let sn = instance.clone().downcast::<Arc<dyn Snapshotter>>().unwrap();
        sn.prepare("k", None, Default::default()).unwrap();

        let records = plugins.inventory().snapshot();
        let native = records.iter().find(|p| p.id == "native").unwrap();
        assert_eq!(native.status, PluginStatus::Ok);
        assert!(native.exports["root"].ends_with("io.containerd.snapshotter.v1.native"));
        assert_eq!(native.platforms, [Platform::host()]);
        let btrfs = records.iter().find(|p| p.id == "btrfs").unwrap();
        if nix::sys::statfs::statfs(dir.path())
            .unwrap()
            .filesystem_type()
            != nix::sys::statfs::BTRFS_SUPER_MAGIC
        {
            match &btrfs.status {
                PluginStatus::Error { message, .. } => {
                    assert!(
                        message.contains("must be a btrfs filesystem")
                            && message.ends_with("skip plugin"),
                        "{message}"
                    );
                }
                other => panic!("btrfs should skip, got {other:?}"),
            }
        }
    }
}
