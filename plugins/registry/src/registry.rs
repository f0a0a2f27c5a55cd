//! Registration, dependency order and loading of all plugins (containerd `Registry.Graph` and
//! server `New`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::config::Config;
use crate::context::{InitContext, LoadedPlugin, PluginMeta};
use crate::errdefs::Classify;
use crate::inventory::{Inventory, PluginInfo, PluginStatus};
use crate::registration::{Instance, PluginError, Registration};
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

/// The outcome of loading: instances of the plugins that loaded, every plugin's record, and
/// the registrations kept for [`Plugins::retry_failed`]: the plugins that failed in a way a
/// later attempt may mend, and the reloadable ones that loaded. Clones share all of it.
#[derive(Debug, Clone)]
pub struct Plugins {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: Config,
    inventory: Inventory,
    loaded: RwLock<Vec<LoadedPlugin>>,
    /// In load order; the lock also keeps two retries from overlapping.
    kept: Mutex<Vec<Kept>>,
    /// `(gRPC service, plugin URI)` of every registration that was not disabled.
    services: Vec<(&'static str, String)>,
}

/// A registration kept after loading.
#[derive(Debug)]
struct Kept {
    reg: Registration,
    /// False while it has a retryable failure; true for a reloadable plugin that loaded.
    loaded: bool,
}

/// A plugin that loaded, or loaded anew, on a retry.
#[derive(Debug, Clone)]
pub struct Started {
    /// Its type.
    pub plugin_type: &'static str,
    /// Its id.
    pub id: String,
    /// Its instance, replacing any earlier one.
    pub instance: Instance,
}

impl Plugins {
    /// Every loaded plugin of a type as `(id, instance)`, in load order.
    pub fn get_all(&self, plugin_type: &str) -> Vec<(String, Instance)> {
        read(&self.shared.loaded)
            .iter()
            .filter(|p| p.plugin_type == plugin_type)
            .map(|p| (p.id.clone(), p.instance.clone()))
            .collect()
    }

    /// All plugin records.
    pub fn inventory(&self) -> &Inventory {
        &self.shared.inventory
    }

    /// Every gRPC service a plugin that was not disabled declared, as `(service, plugin URI)`:
    /// those of plugins that did not load included.
    pub fn services(&self) -> &[(&'static str, String)] {
        &self.shared.services
    }

    /// How many plugins failed in a way that a later attempt may mend.
    pub fn failed(&self) -> usize {
        lock(&self.shared.kept).iter().filter(|k| !k.loaded).count()
    }

    /// Initialises again, in load order, every plugin that failed in a way a later attempt may
    /// mend: a plugin whose requirement comes up earlier in the pass finds it. A reloadable
    /// plugin that loaded while a requirement of its had failed is initialised anew once that
    /// requirement comes up, so that it uses it. Returns the plugins that loaded (anew): their
    /// records say `ok`, the failed ones' records carry their latest error. Blocking (plugin
    /// init does I/O); one pass at a time.
    pub fn retry_failed(&self) -> Vec<Started> {
        let mut kept = lock(&self.shared.kept);
        let mut started = Vec::new();
        // Types of which a plugin came up in this pass.
        let mut came_up: Vec<&'static str> = Vec::new();
        let mut next: Vec<Kept> = Vec::with_capacity(kept.len());
        for mut k in kept.drain(..) {
            if k.loaded {
                if needs_any(&k.reg, &came_up) {
                    if let Some(instance) = self.reload(&k.reg) {
                        came_up.push(k.reg.plugin_type);
                        started.push(started_plugin(&k.reg, instance));
                    }
                }
                next.push(k);
                continue;
            }
            let reg = &k.reg;
            let before = self.shared.inventory.get(reg.plugin_type, &reg.id);
            let loaded = read(&self.shared.loaded).clone();
            let (result, meta) =
                init_one(reg, &self.shared.config, &loaded, &self.shared.inventory);
            set_record(&self.shared.inventory, reg, meta, &result);
            match result {
                Ok(instance) => {
                    tracing::info!(id = %reg.id, r#type = reg.plugin_type, "plugin loaded on retry");
                    write(&self.shared.loaded).push(LoadedPlugin {
                        plugin_type: reg.plugin_type,
                        id: reg.id.clone(),
                        instance: Arc::clone(&instance),
                    });
                    came_up.push(reg.plugin_type);
                    started.push(started_plugin(reg, instance));
                    if reg.reloadable {
                        k.loaded = true;
                        next.push(k);
                    }
                }
                Err(err) => {
                    // Said again only when the class of error changed: the same failure every
                    // 30 s is noise (and its text may differ by a temporary name).
                    let kind = |p: Option<PluginInfo>| match p.map(|p| p.status) {
                        Some(PluginStatus::Error { kind, .. }) => Some(kind),
                        _ => None,
                    };
                    if kind(before) != Some(err.kind()) {
                        tracing::warn!(id = %reg.id, r#type = reg.plugin_type, error = %err.display_chain(), "plugin failed again");
                    } else {
                        tracing::debug!(id = %reg.id, r#type = reg.plugin_type, error = %err.display_chain(), "plugin still failing");
                    }
                    if worth_retrying(&err, &next) {
                        next.push(k);
                    }
                }
            }
        }
        *kept = next;
        started
    }

    /// Initialises a loaded reloadable plugin anew and puts the new instance in the old one's
    /// place; on failure the old one stays, and so does its record.
    fn reload(&self, reg: &Registration) -> Option<Instance> {
        let loaded = read(&self.shared.loaded).clone();
        let (result, meta) = init_one(reg, &self.shared.config, &loaded, &self.shared.inventory);
        match result {
            Ok(instance) => {
                set_record(&self.shared.inventory, reg, meta, &Ok(()));
                let mut loaded = write(&self.shared.loaded);
                if let Some(p) = loaded
                    .iter_mut()
                    .find(|p| p.plugin_type == reg.plugin_type && p.id == reg.id)
                {
                    p.instance = Arc::clone(&instance);
                }
                tracing::info!(id = %reg.id, r#type = reg.plugin_type, "plugin loaded anew with a requirement that came up");
                Some(instance)
            }
            Err(err) => {
                tracing::warn!(id = %reg.id, r#type = reg.plugin_type, error = %err.display_chain(), "plugin could not load anew; the earlier instance stays");
                None
            }
        }
    }
}

fn started_plugin(reg: &Registration, instance: Instance) -> Started {
    Started {
        plugin_type: reg.plugin_type,
        id: reg.id.clone(),
        instance,
    }
}

/// True when `reg` requires a type in `types`.
fn needs_any(reg: &Registration, types: &[&'static str]) -> bool {
    if reg.requires.contains(&types::ALL) {
        return types.iter().any(|t| *t != reg.plugin_type);
    }
    reg.requires.iter().any(|r| types.contains(r))
}

/// True when `err` may go away on its own: a host error, or a requirement that failed and is
/// itself still failing among `kept` (the registrations kept before this one in load order).
fn worth_retrying(err: &PluginError, kept: &[Kept]) -> bool {
    match err {
        PluginError::DependencyFailed { dependency, .. } => {
            kept.iter().any(|k| !k.loaded && k.reg.uri() == *dependency)
        }
        err => err.is_retryable(),
    }
}

/// Initialises one plugin against the plugins loaded so far.
fn init_one(
    reg: &Registration,
    config: &Config,
    loaded: &[LoadedPlugin],
    inventory: &Inventory,
) -> (Result<Instance, PluginError>, PluginMeta) {
    let uri = reg.uri();
    let mut ctx = InitContext {
        root: config.root.join(&uri),
        state: config.state.join(&uri),
        section: config.plugins.get(&uri),
        uri,
        config,
        loaded,
        inventory: inventory.clone(),
        meta: Default::default(),
    };
    let result = (reg.init)(&mut ctx);
    (result, ctx.meta)
}

/// Records how a plugin's init ended.
fn set_record<T>(
    inventory: &Inventory,
    reg: &Registration,
    meta: PluginMeta,
    result: &Result<T, PluginError>,
) {
    let status = match result {
        Ok(_) => PluginStatus::Ok,
        Err(err) => PluginStatus::Error {
            kind: err.kind(),
            message: err.display_chain(),
        },
    };
    inventory.set(PluginInfo {
        plugin_type: reg.plugin_type.to_owned(),
        id: reg.id.clone(),
        requires: reg.requires.iter().map(|s| (*s).to_owned()).collect(),
        platforms: meta.platforms,
        exports: meta.exports,
        capabilities: meta.capabilities,
        status,
    });
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The wait before each retry of failed plugins: `initial`, doubling up to `max`, back to
/// `initial` after a retry that brought a plugin up (the host changed; more may follow).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits of `initial`, `2 × initial`, ... up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial.min(max),
        }
    }

    /// The wait before the next attempt; each call doubles the following one, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// Starts again from `initial`.
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
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
    /// the load. Failures that a later attempt may mend are kept for
    /// [`Plugins::retry_failed`].
    pub fn load(self, config: &Config) -> Result<Plugins, RegistryError> {
        let order = self.order()?;
        let inventory = Inventory::default();
        let mut loaded: Vec<LoadedPlugin> = Vec::new();
        let mut kept: Vec<Kept> = Vec::new();
        let mut services = Vec::new();
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
            services.extend(reg.serves.iter().map(|name| (*name, uri.clone())));
            tracing::info!(id = %reg.id, r#type = reg.plugin_type, "loading plugin");
            let (result, meta) = init_one(&reg, config, &loaded, &inventory);
            set_record(&inventory, &reg, meta, &result);
            match result {
                Ok(instance) => {
                    loaded.push(LoadedPlugin {
                        plugin_type: reg.plugin_type,
                        id: reg.id.clone(),
                        instance,
                    });
                    if reg.reloadable {
                        kept.push(Kept { reg, loaded: true });
                    }
                }
                Err(err) => {
                    let message = err.display_chain();
                    if err.is_skip() {
                        tracing::info!(id = %reg.id, r#type = reg.plugin_type, error = %message, "skip loading plugin");
                    } else {
                        tracing::warn!(id = %reg.id, r#type = reg.plugin_type, error = %message, "failed to load plugin");
                    }
                    if worth_retrying(&err, &kept) {
                        kept.push(Kept { reg, loaded: false });
                    }
                }
            }
        }
        check_required(config, &inventory)?;
        Ok(Plugins {
            shared: Arc::new(Shared {
                config: config.clone(),
                inventory,
                loaded: RwLock::new(loaded),
                kept: Mutex::new(kept),
                services,
            }),
        })
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
            log.lock().unwrap().push(uri.clone());
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

    /// A host error that goes away when `broken` is cleared.
    #[derive(Debug, thiserror::Error)]
    #[error("metadata database: no space left on device")]
    struct DiskFull;

    #[test]
    fn failed_plugins_are_retried_with_their_dependents_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let attempt = |uri: &str| {
            let log = log.clone();
            let uri = uri.to_owned();
            move || log.lock().unwrap().push(uri.clone())
        };
        let mut r = Registry::new();
        // Registered dependents first: the order must come from the requirements.
        let note = attempt("grpc.svc");
        r.register(
            Registration::new(types::GRPC, "svc")
                .requires(&[types::METADATA])
                .serves(&["test.v1.Svc"])
                .init(move |ctx| {
                    note();
                    let m: Arc<u32> = ctx.get_single(types::METADATA)?;
                    Ok(Arc::new(*m + 1))
                }),
        )
        .unwrap();
        let note = attempt("metadata.m");
        r.register(
            Registration::new(types::METADATA, "m")
                .requires(&[types::CONTENT])
                .init(move |ctx| {
                    note();
                    let c: Arc<u32> = ctx.get_single(types::CONTENT)?;
                    Ok(Arc::new(*c + 1))
                }),
        )
        .unwrap();
        let note = attempt("content.store");
        let flag = broken.clone();
        r.register(Registration::new(types::CONTENT, "store").init(move |_| {
            note();
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(PluginError::init(DiskFull));
            }
            Ok(Arc::new(1_u32))
        }))
        .unwrap();
        let note = attempt("snapshotter.skipper");
        r.register(
            Registration::new(types::SNAPSHOTTER, "skipper").init(move |_| {
                note();
                Err(PluginError::Skip("not on btrfs".into()))
            }),
        )
        .unwrap();
        let note = attempt("grpc.cfg");
        r.register(
            Registration::new(types::GRPC, "cfg")
                .config::<Cfg>()
                .serves(&["test.v1.Cfg"])
                .init(move |ctx| {
                    note();
                    let c: Cfg = ctx.config()?;
                    Ok(Arc::new(c.size))
                }),
        )
        .unwrap();
        let note = attempt("internal.after-cfg");
        r.register(
            Registration::new(types::INTERNAL, "after-cfg")
                .requires(&[types::GRPC])
                .init(move |ctx| {
                    note();
                    let _: Arc<u32> = ctx.get_by_id(types::GRPC, "cfg")?;
                    Ok(Arc::new(()))
                }),
        )
        .unwrap();
        r.register(
            Registration::new(types::GRPC, "gone")
                .serves(&["test.v1.Gone"])
                .init(|_| Ok(Arc::new(()))),
        )
        .unwrap();
        let plugins = r
            .load(&config(
                dir.path(),
                "disabled_plugins = [\"io.containerd.grpc.v1.gone\"]\n\
                 [plugins.\"io.containerd.grpc.v1.cfg\"]\nbogus = 1\n",
            ))
            .unwrap();
        let status = |id: &str| {
            plugins
                .inventory()
                .snapshot()
                .into_iter()
                .find(|p| p.id == id)
                .unwrap()
                .status
        };
        // The dependents name the plugin that failed and its own error.
        match status("svc") {
            PluginStatus::Error { kind, message } => {
                assert_eq!(kind, crate::ErrorKind::Unavailable);
                assert!(
                    message.ends_with("metadata database: no space left on device"),
                    "{message}"
                );
                assert!(
                    message.contains("io.containerd.content.v1.store"),
                    "{message}"
                );
            }
            s => panic!("{s:?}"),
        }
        // Only host errors and what they brought down are kept for retry: not the skip, not
        // the bad config section, not what needs the bad config section.
        assert_eq!(plugins.failed(), 3);
        assert!(!plugins
            .inventory()
            .get(types::GRPC, "cfg")
            .unwrap()
            .status
            .is_skip());
        assert!(status("skipper").is_skip());
        assert_eq!(
            plugins.services(),
            [
                ("test.v1.Svc", "io.containerd.grpc.v1.svc".to_owned()),
                ("test.v1.Cfg", "io.containerd.grpc.v1.cfg".to_owned()),
            ]
        );
        log.lock().unwrap().clear();

        // Still broken: everything is tried again, in dependency order, and nothing starts.
        assert!(plugins.retry_failed().is_empty());
        assert_eq!(
            *log.lock().unwrap(),
            ["content.store", "metadata.m", "grpc.svc"]
        );
        assert_eq!(plugins.failed(), 3);
        log.lock().unwrap().clear();

        // Mended: the pass brings up the store, then what needs it, each finding the one
        // before.
        broken.store(false, std::sync::atomic::Ordering::SeqCst);
        let started: Vec<String> = plugins
            .retry_failed()
            .into_iter()
            .map(|p| format!("{}.{}", p.plugin_type, p.id))
            .collect();
        assert_eq!(
            started,
            [
                "io.containerd.content.v1.store",
                "io.containerd.metadata.v1.m",
                "io.containerd.grpc.v1.svc",
            ]
        );
        assert_eq!(
            *log.lock().unwrap(),
            ["content.store", "metadata.m", "grpc.svc"]
        );
        for id in ["store", "m", "svc"] {
            assert_eq!(status(id), PluginStatus::Ok, "{id}");
        }
        let svc = plugins.get_all(types::GRPC);
        assert_eq!(svc.len(), 1);
        assert_eq!(*svc[0].1.clone().downcast::<u32>().unwrap(), 3);
        // Records keep their load-order places.
        let order: Vec<String> = plugins
            .inventory()
            .snapshot()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(order, ["store", "m", "svc", "skipper", "cfg", "after-cfg"]);
        assert_eq!(plugins.failed(), 0);
        log.lock().unwrap().clear();
        assert!(plugins.retry_failed().is_empty());
        assert!(log.lock().unwrap().is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_its_bound_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let waits: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(2));
    }

    #[test]
    fn reloadable_plugins_take_up_a_requirement_that_loads_late() {
        let dir = tempfile::tempdir().unwrap();
        let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let inits = Arc::new(Mutex::new(Vec::new()));
        let mut r = Registry::new();
        let flag = broken.clone();
        r.register(
            Registration::new(types::SNAPSHOTTER, "late").init(move |_| {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(PluginError::init(DiskFull));
                }
                Ok(Arc::new(()))
            }),
        )
        .unwrap();
        r.register(Registration::new(types::SNAPSHOTTER, "early").init(|_| Ok(Arc::new(()))))
            .unwrap();
        // Two plugins that take whatever snapshotters are loaded, one reloadable.
        for (id, reloadable) in [("view", true), ("fixed", false)] {
            let inits = inits.clone();
            let mut b = Registration::new(types::GRPC, id).requires(&[types::SNAPSHOTTER]);
            if reloadable {
                b = b.reloadable();
            }
            r.register(b.init(move |ctx| {
                inits.lock().unwrap().push(id);
                Ok(Arc::new(ctx.get_all(types::SNAPSHOTTER).len()))
            }))
            .unwrap();
        }
        let plugins = r.load(&config(dir.path(), "")).unwrap();
        let seen = |id: &str| {
            let all = plugins.get_all(types::GRPC);
            let (_, i) = all.iter().find(|(i, _)| i == id).unwrap();
            *i.clone().downcast::<usize>().unwrap()
        };
        assert_eq!((seen("view"), seen("fixed")), (1, 1));
        assert_eq!(plugins.failed(), 1);
        inits.lock().unwrap().clear();

        // Nothing came up: nothing is initialised anew.
        assert!(plugins.retry_failed().is_empty());
        assert!(inits.lock().unwrap().is_empty());

        broken.store(false, std::sync::atomic::Ordering::SeqCst);
        let started: Vec<String> = plugins
            .retry_failed()
            .into_iter()
            .map(|p| format!("{}.{}", p.plugin_type, p.id))
            .collect();
        assert_eq!(
            started,
            [
                "io.containerd.snapshotter.v1.late",
                "io.containerd.grpc.v1.view"
            ]
        );
        assert_eq!(*inits.lock().unwrap(), ["view"]);
        // The new instance replaced the old one; the other plugin kept what it had.
        assert_eq!((seen("view"), seen("fixed")), (2, 1));
        assert_eq!(plugins.get_all(types::GRPC).len(), 2);
        assert_eq!(plugins.failed(), 0);
        inits.lock().unwrap().clear();
        assert!(plugins.retry_failed().is_empty());
        assert!(inits.lock().unwrap().is_empty());
    }
}
