//! Registration, dependency order and loading of all plugins (containerd `Registry.Graph` and
//! server `New`).

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::Config;
use crate::context::{InitContext, LoadedPlugin};
use crate::errdefs::Classify;
use crate::inventory::{Inventory, PluginInfo, PluginStatus};
use crate::registration::{Instance, Registration};
use crate::types;

/// Why the registry could not load the daemon.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Two registrations share type and id.
    #[error("plugin {0} is registered twice")]
    Duplicate(String),
    /// Requirements form a cycle.
    #[error("plugin {0} depends on itself through its requirements")]
    Cycle(String),
    /// A plugin in `required_plugins` did not load.
    #[error("required plugin {uri} did not load: {reason}")]
    RequiredFailed {
        /// The plugin URI.
        uri: String,
        /// Why.
        reason: String,
    },
}

impl Classify for RegistryError {
    fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::FailedPrecondition
    }
}

/// The list of everything the daemon can load.
#[derive(Debug, Default)]
pub struct Registry {
    registrations: Vec<Registration>,
}

/// The outcome of loading: instances of the plugins that loaded, and every plugin's record.
#[derive(Debug, Clone)]
pub struct Plugins {
    loaded: Vec<LoadedPlugin>,
    inventory: Inventory,
}

impl Plugins {
    /// Every loaded plugin of a type as `(id, instance)`, in load order.
    pub fn get_all(&self, plugin_type: &str) -> Vec<(String, Instance)> {
        self.loaded
            .iter()
            .filter(|p| p.plugin_type == plugin_type)
            .map(|p| (p.id.clone(), p.instance.clone()))
            .collect()
    }

    /// All plugin records.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a registration; a duplicate type+id is refused.
    pub fn register(&mut self, reg: Registration) -> Result<(), RegistryError> {
        if self
            .registrations
            .iter()
            .any(|r| r.plugin_type == reg.plugin_type && r.id == reg.id)
        {
            return Err(RegistryError::Duplicate(reg.uri()));
        }
        self.registrations.push(reg);
        Ok(())
    }

    /// Every registration's default config section, keyed by URI (for `config default`).
    pub fn default_sections(&self) -> Vec<(String, toml::Value)> {
        self.registrations
            .iter()
            .filter_map(|r| r.default_config.map(|f| (r.uri(), f())))
            .collect()
    }

    /// Indices of the registrations in load order: requirements first, registration order
    /// breaking ties.
    fn order(&self) -> Result<Vec<usize>, RegistryError> {
        let mut ordered = Vec::with_capacity(self.registrations.len());
        let mut done = HashSet::new();
        let mut visiting = HashSet::new();
        for i in 0..self.registrations.len() {
            self.visit(i, &mut ordered, &mut done, &mut visiting)?;
        }
        Ok(ordered)
    }

    fn visit(
        &self,
        i: usize,
        ordered: &mut Vec<usize>,
        done: &mut HashSet<usize>,
        visiting: &mut HashSet<usize>,
    ) -> Result<(), RegistryError> {
        if done.contains(&i) {
            return Ok(());
        }
        if !visiting.insert(i) {
            return Err(RegistryError::Cycle(self.registrations[i].uri()));
        }
        let reg = &self.registrations[i];
        let wants_all = reg.requires.contains(&types::ALL);
        for (j, dep) in self.registrations.iter().enumerate() {
            if j == i {
                continue;
            }
            let needed = if wants_all {
                // "*" means every plugin that does not itself want everything.
                !dep.requires.contains(&types::ALL)
            } else {
                reg.requires.contains(&dep.plugin_type)
            };
            if needed {
                self.visit(j, ordered, done, visiting)?;
            }
        }
        visiting.remove(&i);
        done.insert(i);
        ordered.push(i);
        Ok(())
    }

    /// Initialises every plugin that is not disabled, in dependency order. A plugin that fails
    /// or skips is recorded and the rest go on; only a failed `required_plugins` entry stops
    /// the load.
    pub fn load(self, config: &Config) -> Result<Plugins, RegistryError> {
        let order = self.order()?;
        let inventory = Inventory::default();
        let mut loaded: Vec<LoadedPlugin> = Vec::new();
        let disabled: HashSet<&str> = config.disabled_plugins.iter().map(|s| s.as_str()).collect();
        let mut slots: Vec<Option<Registration>> =
            self.registrations.into_iter().map(Some).collect();
        for i in order {
            let Some(reg) = slots[i].take() else { continue };
            let uri = reg.uri();
            if disabled.contains(uri.as_str()) {
                tracing::info!(plugin = %uri, "plugin disabled");
                continue;
            }
            let mut ctx = InitContext {
                root: config.root.join(&uri),
                state: config.state.join(&uri),
                uri: uri.clone(),
                config,
                section: config.plugins.get(&uri),
                loaded: &loaded,
                inventory: inventory.clone(),
                meta: Default::default(),
            };
            tracing::info!(id = %reg.id, r#type = reg.plugin_type, "loading plugin");
            let result = (reg.init)(&mut ctx);
            let meta = std::mem::take(&mut ctx.meta);
            let status = match result {
                Ok(instance) => {
                    loaded.push(LoadedPlugin {
                        plugin_type: reg.plugin_type,
                        id: reg.id.clone(),
                        instance: Arc::clone(&instance),
                    });
                    PluginStatus::Ok
                }
                Err(err) => {
                    let message = err.display_chain();
                    if err.is_skip() {
                        tracing::info!(id = %reg.id, r#type = reg.plugin_type, error = %message, "skip loading plugin");
                    } else {
                        tracing::warn!(id = %reg.id, r#type = reg.plugin_type, error = %message, "failed to load plugin");
                    }
                    PluginStatus::Error {
                        kind: err.kind(),
                        message,
                    }
                }
            };
            inventory.push(PluginInfo {
                plugin_type: reg.plugin_type.to_owned(),
                id: reg.id,
                requires: reg.requires.iter().map(|s| (*s).to_owned()).collect(),
                platforms: meta.platforms,
                exports: meta.exports,
                capabilities: meta.capabilities,
                status,
            });
        }
        check_required(config, &inventory)?;
        Ok(Plugins { loaded, inventory })
    }
}

fn check_required(config: &Config, inventory: &Inventory) -> Result<(), RegistryError> {
    let records = inventory.snapshot();
    for uri in &config.required_plugins {
        let record = records
            .iter()
            .find(|p| format!("{}.{}", p.plugin_type, p.id) == *uri);
        let reason = match record {
            Some(PluginInfo {
                status: PluginStatus::Ok,
                ..
            }) => continue,
            Some(PluginInfo {
                status: PluginStatus::Error { message, .. },
                ..
            }) => message.clone(),
            None if config.disabled_plugins.contains(uri) => "it is disabled".to_owned(),
            None => "no such plugin is registered".to_owned(),
        };
        return Err(RegistryError::RequiredFailed {
            uri: uri.clone(),
            reason,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::registration::PluginError;

    fn config(dir: &std::path::Path, extra: &str) -> Config {
        let text = format!(
            "root = {:?}\nstate = {:?}\n{extra}",
            dir.join("root"),
            dir.join("state")
        );
        Config::parse(&text, std::path::Path::new("test")).unwrap()
    }

    fn recorder(
        log: &Arc<Mutex<Vec<String>>>,
        t: &'static str,
        id: &str,
        requires: &[&'static str],
    ) -> Registration {
        let log = log.clone();
        let uri = format!("{t}.{id}");
        Registration::new(t, id).requires(requires).init(move |_| {
            log.lock().unwrap().push(uri);
            Ok(Arc::new(()))
        })
    }

    #[test]
    fn loads_requirements_first_and_keeps_registration_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut r = Registry::new();
        r.register(recorder(&log, types::GRPC, "a", &[types::METADATA]))
            .unwrap();
        r.register(recorder(&log, types::GRPC, "b", &[])).unwrap();
        r.register(recorder(&log, types::METADATA, "m", &[types::CONTENT]))
            .unwrap();
        r.register(recorder(&log, types::CONTENT, "c", &[]))
            .unwrap();
        r.register(recorder(&log, types::INTERNAL, "all", &[types::ALL]))
            .unwrap();
        r.load(&config(dir.path(), "")).unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            [
                "io.containerd.content.v1.c",
                "io.containerd.metadata.v1.m",
                "io.containerd.grpc.v1.a",
                "io.containerd.grpc.v1.b",
                "io.containerd.internal.v1.all",
            ]
        );
    }

    #[test]
    fn duplicates_and_cycles_are_refused() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut r = Registry::new();
        r.register(recorder(&log, types::GRPC, "a", &[])).unwrap();
        let err = r
            .register(recorder(&log, types::GRPC, "a", &[]))
            .unwrap_err();
        assert!(err.to_string().contains("io.containerd.grpc.v1.a"));

        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::new();
        r.register(recorder(&log, types::GRPC, "x", &[types::CONTENT]))
            .unwrap();
        r.register(recorder(&log, types::CONTENT, "y", &[types::GRPC]))
            .unwrap();
        let err = r.load(&config(dir.path(), "")).unwrap_err();
        assert!(matches!(err, RegistryError::Cycle(_)), "{err}");
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        size: u32,
    }

    fn configured() -> Registration {
        Registration::new(types::GRPC, "cfg")
            .config::<Cfg>()
            .init(|ctx| {
                let c: Cfg = ctx.config()?;
                Ok(Arc::new(c.size))
            })
    }

    #[test]
    fn statuses_are_recorded_and_failures_do_not_stop_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::new();
        r.register(configured()).unwrap();
        r.register(
            Registration::new(types::SNAPSHOTTER, "skipper")
                .init(|_| Err(PluginError::Skip("not on btrfs".into()))),
        )
        .unwrap();
        r.register(
            Registration::new(types::GRPC, "user")
                .requires(&[types::GRPC])
                .init(|ctx| {
                    let size: Arc<u32> = ctx.get_by_id(types::GRPC, "cfg")?;
                    Ok(Arc::new(*size + 1))
                }),
        )
        .unwrap();
        let plugins = r
            .load(&config(
                dir.path(),
                "[plugins.\"io.containerd.grpc.v1.cfg\"]\nsize = 1\nbogus = 2\n",
            ))
            .unwrap();
        let records = plugins.inventory().snapshot();
        let status = |id: &str| {
            records
                .iter()
                .find(|p| p.id == id)
                .map(|p| p.status.clone())
                .unwrap()
        };
        match status("cfg") {
            PluginStatus::Error { message, .. } => assert!(message.contains("bogus"), "{message}"),
            s => panic!("{s:?}"),
        }
        match status("skipper") {
            PluginStatus::Error { message, .. } => {
                assert_eq!(message, "not on btrfs: skip plugin")
            }
            s => panic!("{s:?}"),
        }
        // The dependent plugin fails because its dependency did not load.
        assert!(matches!(status("user"), PluginStatus::Error { .. }));
        assert!(plugins.get_all(types::GRPC).is_empty());
    }

    #[test]
    fn init_failures_list_their_whole_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("open store")]
        struct StoreFailed(#[source] std::io::Error);

        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let mut r = Registry::new();
        r.register(Registration::new(types::CONTENT, "store").init(|_| {
            Err(PluginError::init(StoreFailed(std::io::Error::other(
                "disk gone",
            ))))
        }))
        .unwrap();
        let under_file = blocker.join("dir");
        r.register(Registration::new(types::METADATA, "dirs").init(move |_| {
            crate::context::create_private_dir(&under_file)?;
            Ok(Arc::new(()))
        }))
        .unwrap();
        let plugins = r.load(&config(dir.path(), "")).unwrap();
        let records = plugins.inventory().snapshot();
        let message = |id: &str| match &records.iter().find(|p| p.id == id).unwrap().status {
            PluginStatus::Error { kind, message } => {
                assert_eq!(*kind, crate::ErrorKind::Internal);
                message.clone()
            }
            s => panic!("{s:?}"),
        };
        assert_eq!(message("store"), "open store: disk gone");
        assert_eq!(
            message("dirs"),
            format!(
                "create {}: Not a directory (os error 20)",
                blocker.join("dir").display()
            )
        );
    }

    #[test]
    fn required_and_disabled_plugins() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::new();
        r.register(configured()).unwrap();
        let err = r
            .load(&config(
                dir.path(),
                "required_plugins = [\"io.containerd.grpc.v1.cfg\"]\n[plugins.\"io.containerd.grpc.v1.cfg\"]\nbogus = 1\n",
            ))
            .unwrap_err();
        assert!(
            err.to_string().contains("io.containerd.grpc.v1.cfg"),
            "{err}"
        );
        assert!(err.to_string().contains("bogus"), "{err}");

        let mut r = Registry::new();
        r.register(configured()).unwrap();
        let plugins = r
            .load(&config(
                dir.path(),
                "disabled_plugins = [\"io.containerd.grpc.v1.cfg\"]\n",
            ))
            .unwrap();
        assert!(plugins.inventory().snapshot().is_empty());
    }
}
