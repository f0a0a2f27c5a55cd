//! Registration of the metadata store as `io.containerd.metadata.v1.sled`.

use std::sync::Arc;

use berth_registry::{types, PluginError, Registration};
use serde::{Deserialize, Serialize};

use super::MetadataStore;

/// The metadata plugin's config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `shared` (a blob committed in one namespace can be claimed by another without its data)
    /// or `isolated`, as containerd's bolt plugin.
    pub content_sharing_policy: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            content_sharing_policy: "shared".into(),
        }
    }
}

/// The plugin id.
pub const ID: &str = "sled";

/// The `io.containerd.metadata.v1.sled` plugin.
pub fn registration() -> Registration {
    Registration::new(types::METADATA, ID)
        .requires(&[types::CONTENT, types::SNAPSHOTTER])
        .config::<Config>()
        .init(|ctx| {
            let config: Config = ctx.config()?;
            if !matches!(
                config.content_sharing_policy.as_str(),
                "shared" | "isolated"
            ) {
                return Err(PluginError::Config {
                    uri: ctx.uri().to_owned(),
                    message: format!(
                        "content_sharing_policy must be \"shared\" or \"isolated\", not {:?}",
                        config.content_sharing_policy
                    ),
                });
            }
            let dir = ctx.create_root()?;
            let store = MetadataStore::open(&dir).map_err(PluginError::init)?;
            ctx.meta
                .exports
                .insert("path".into(), dir.join("meta.db").display().to_string());
            Ok(Arc::new(store))
        })
}
