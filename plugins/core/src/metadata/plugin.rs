//! Registration of the metadata store as `io.containerd.metadata.v1.sled`, and the namespaced
//! content and snapshot views it gives out to the plugins that require it (containerd
//! `core/metadata/db.go`: `DB.ContentStore`, `DB.Snapshotter`), so that no service builds
//! them or reads this plugin's config section.

use std::sync::Arc;

use berth_registry::{types, InitContext, PluginError, Registration};
use serde::{Deserialize, Serialize};

use super::MetadataStore;
use crate::content::ContentStore;
use crate::namespaced_content::NamespacedContent;
use crate::namespaced_snapshots::{loaded_snapshotters, NamespacedSnapshots};

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
            let mut store = MetadataStore::open(&dir).map_err(PluginError::init)?;
            store.content_shared = config.content_sharing_policy == "shared";
            ctx.meta
                .exports
                .insert("path".into(), dir.join("meta.db").display().to_string());
            Ok(Arc::new(store))
        })
}

/// The content store as seen through the loaded metadata plugin: namespaced, under its
/// content sharing policy. For plugins requiring `METADATA` and `CONTENT`.
pub fn content_view(ctx: &InitContext<'_>) -> Result<NamespacedContent, PluginError> {
    let meta: Arc<MetadataStore> = ctx.get_single(types::METADATA)?;
    let store: Arc<ContentStore> = ctx.get_single(types::CONTENT)?;
    let shared = meta.content_shared();
    Ok(NamespacedContent::new(meta, store, shared))
}

/// Every loaded snapshotter as seen through the loaded metadata plugin, namespaced. For
/// plugins requiring `METADATA` and `SNAPSHOTTER`.
pub fn snapshot_view(ctx: &InitContext<'_>) -> Result<NamespacedSnapshots, PluginError> {
    let meta: Arc<MetadataStore> = ctx.get_single(types::METADATA)?;
    Ok(NamespacedSnapshots::new(meta, loaded_snapshotters(ctx)))
}
