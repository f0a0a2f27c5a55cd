//! Registration of the content store as `io.containerd.content.v1.content`.

use std::sync::Arc;

use berth_registry::{types, PluginError, Registration};
use serde::{Deserialize, Serialize};

use super::ContentStore;

/// The content plugin's config; containerd's has no keys either.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {}

/// The plugin id.
pub const ID: &str = "content";

/// The `io.containerd.content.v1.content` plugin: a [`ContentStore`] on the plugin's root.
pub fn registration() -> Registration {
    Registration::new(types::CONTENT, ID)
        .config::<Config>()
        .init(|ctx| {
            let _config: Config = ctx.config()?;
            let dir = ctx.create_root()?;
            let store = ContentStore::open(&dir).map_err(PluginError::init)?;
            ctx.meta
                .exports
                .insert("root".into(), dir.display().to_string());
            Ok(Arc::new(store))
        })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use berth_registry::Registry;

    use super::*;

    fn load(extra: &str) -> (tempfile::TempDir, berth_registry::Plugins) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "version = 2\nroot = {:?}\nstate = {:?}\n{extra}",
            dir.path().join("root"),
            dir.path().join("state"),
        );
        let config = berth_registry::Config::parse(&text, Path::new("test.toml")).unwrap();
        let mut registry = Registry::new();
        registry.register(registration()).unwrap();
        let plugins = registry.load(&config).unwrap();
        (dir, plugins)
    }

    #[test]
    fn loads_a_store_on_the_plugin_root() {
        let (dir, plugins) = load("");
        let all = plugins.get_all(types::CONTENT);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, ID);
        let store = all[0].1.clone().downcast::<ContentStore>().unwrap();
        let root = dir.path().join("root/io.containerd.content.v1.content");
        assert_eq!(store.root(), root);
        assert!(root.join("blobs").is_dir());
        assert!(root.join("ingest").is_dir());
    }

    #[test]
    fn unknown_config_keys_fail_the_plugin() {
        let (_dir, plugins) = load("[plugins.\"io.containerd.content.v1.content\"]\nbogus = 1\n");
        assert!(plugins.get_all(types::CONTENT).is_empty());
    }
}
