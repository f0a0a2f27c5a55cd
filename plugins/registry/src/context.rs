//! What a plugin sees while it initialises: its directories, its config section, its metadata
//! and typed look-ups of the plugins loaded before it (containerd `plugin/context.go`).

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::inventory::{Inventory, Platform, PluginInfo, PluginStatus};
use crate::registration::{Instance, PluginError};

/// Platforms, exports and capabilities a plugin reports to introspection.
#[derive(Debug, Clone, Default)]
pub struct PluginMeta {
    /// Platforms the plugin serves.
    pub platforms: Vec<Platform>,
    /// Key/value facts (e.g. a snapshotter's `root`).
    pub exports: BTreeMap<String, String>,
    /// Capabilities (e.g. `remap-ids`).
    pub capabilities: Vec<String>,
}

/// A plugin that finished init successfully.
#[derive(Debug, Clone)]
pub(crate) struct LoadedPlugin {
    pub(crate) plugin_type: &'static str,
    pub(crate) id: String,
    pub(crate) instance: Instance,
}

/// The init context handed to each plugin.
#[derive(Debug)]
pub struct InitContext<'a> {
    pub(crate) uri: String,
    pub(crate) root: PathBuf,
    pub(crate) state: PathBuf,
    pub(crate) config: &'a Config,
    pub(crate) section: Option<&'a toml::Value>,
    pub(crate) loaded: &'a [LoadedPlugin],
    pub(crate) inventory: Inventory,
    /// What the plugin reports to introspection; init fills it.
    pub meta: PluginMeta,
}

impl<'a> InitContext<'a> {
    /// `<type>.<id>`.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The plugin's persistent directory, `<root>/<type>.<id>` (not created).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The plugin's runtime-state directory, `<state>/<type>.<id>` (not created).
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// The whole daemon config (addresses, root, state).
    pub fn daemon_config(&self) -> &Config {
        self.config
    }

    /// All plugins' introspection records, including those loaded later; read it at request time.
    pub fn inventory(&self) -> Inventory {
        self.inventory.clone()
    }

    /// Creates the plugin's root directory with mode 0700 and returns it.
    pub fn create_root(&self) -> Result<PathBuf, PluginError> {
        create_private_dir(&self.root)?;
        Ok(self.root.clone())
    }

    /// Creates the plugin's state directory with mode 0700 and returns it.
    pub fn create_state(&self) -> Result<PathBuf, PluginError> {
        create_private_dir(&self.state)?;
        Ok(self.state.clone())
    }

    /// Decodes the plugin's config section (or `Default` when absent); unknown keys are errors
    /// when `C` says `deny_unknown_fields`.
    pub fn config<C: DeserializeOwned + Default>(&self) -> Result<C, PluginError> {
        match self.section {
            None => Ok(C::default()),
            Some(value) => {
                value
                    .clone()
                    .try_into()
                    .map_err(|e: toml::de::Error| PluginError::Config {
                        uri: self.uri.clone(),
                        message: e.message().trim().to_owned(),
                    })
            }
        }
    }

    /// The first loaded plugin of a type, downcast to `T`.
    pub fn get_single<T: Send + Sync + 'static>(
        &self,
        plugin_type: &str,
    ) -> Result<std::sync::Arc<T>, PluginError> {
        let found = self
            .loaded
            .iter()
            .find(|p| p.plugin_type == plugin_type)
            .ok_or_else(|| self.missing(plugin_type, |p| p.plugin_type == plugin_type))?;
        downcast(found)
    }

    /// The loaded plugin with this type and id, downcast to `T`.
    pub fn get_by_id<T: Send + Sync + 'static>(
        &self,
        plugin_type: &str,
        id: &str,
    ) -> Result<std::sync::Arc<T>, PluginError> {
        let found = self
            .loaded
            .iter()
            .find(|p| p.plugin_type == plugin_type && p.id == id)
            .ok_or_else(|| {
                self.missing(&format!("{plugin_type}.{id}"), |p| {
                    p.plugin_type == plugin_type && p.id == id
                })
            })?;
        downcast(found)
    }

    /// Why no loaded plugin matches `wanted`: the error of the first matching plugin that
    /// failed (not skipped), so that this plugin's record names the cause and is retried with
    /// it; otherwise a plain missing dependency.
    fn missing(&self, wanted: &str, matches: impl Fn(&PluginInfo) -> bool) -> PluginError {
        let failed = self
            .inventory
            .snapshot()
            .into_iter()
            .find_map(|p| match &p.status {
                PluginStatus::Error { message, .. } if matches(&p) && !p.status.is_skip() => {
                    Some((format!("{}.{}", p.plugin_type, p.id), message.clone()))
                }
                _ => None,
            });
        match failed {
            Some((dependency, reason)) => PluginError::DependencyFailed {
                uri: self.uri.clone(),
                dependency,
                reason,
            },
            None => PluginError::Dependency {
                uri: self.uri.clone(),
                wanted: wanted.to_owned(),
            },
        }
    }

    /// Every loaded plugin of a type as `(id, instance)`, in load order.
    pub fn get_all(&self, plugin_type: &str) -> Vec<(String, Instance)> {
        self.loaded
            .iter()
            .filter(|p| p.plugin_type == plugin_type)
            .map(|p| (p.id.clone(), p.instance.clone()))
            .collect()
    }
}

fn downcast<T: Send + Sync + 'static>(p: &LoadedPlugin) -> Result<std::sync::Arc<T>, PluginError> {
    p.instance
        .clone()
        .downcast::<T>()
        .map_err(|_| PluginError::WrongType {
            wanted: format!("{}.{}", p.plugin_type, p.id),
            expected: std::any::type_name::<T>(),
        })
}

/// Creates a directory tree whose last component has mode 0700.
pub fn create_private_dir(path: &Path) -> Result<(), PluginError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| PluginError::CreateDir {
            path: path.to_owned(),
            source,
        })
}
