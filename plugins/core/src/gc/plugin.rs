//! Registration of the collector as `io.containerd.gc.v1.scheduler`, with containerd's config
//! keys (`gc/scheduler/scheduler.go`).

use std::sync::Arc;

use berth_registry::{types, PluginError, Plugins, Registration};
use serde::{Deserialize, Serialize};

use super::collect::GcOptions;
use super::scheduler::{GcScheduler, Settings};
use super::time::{parse_duration, GoDuration, TimeError};
use crate::content::ContentStore;
use crate::metadata::MetadataStore;
use crate::namespaced_snapshots::{loaded_snapshotters, snapshotters_of, NamespacedSnapshots};

/// The plugin id.
pub const ID: &str = "scheduler";

/// Why the scheduler cannot start: plugins were loaded outside a tokio runtime.
#[derive(Debug, thiserror::Error)]
#[error("the gc scheduler runs on a tokio runtime, and plugins are loaded outside one")]
struct NoRuntime(#[source] tokio::runtime::TryCurrentError);

/// The scheduler's config section, with containerd's keys and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Target share of time spent collecting (clamped to 0..=0.5).
    pub pause_threshold: f64,
    /// Deletions that start a collection at once (0: at the next scheduled check).
    pub deletion_threshold: i64,
    /// Mutations that start a collection (accepted; only deletions are counted).
    pub mutation_threshold: i64,
    /// Delay between deciding to collect and collecting, a Go duration (`0s`, `100ms`).
    pub schedule_delay: String,
    /// Delay before the first collection after start, a Go duration.
    pub startup_delay: String,
    /// How long an ingest opened without a lease may sit unwritten before it is removed, a Go
    /// duration (Berth's key; containerd keeps such ingests 24 h). An ingest whose lease went
    /// is removed at once, as in containerd.
    pub ingest_expiry: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pause_threshold: 0.02,
            deletion_threshold: 0,
            mutation_threshold: 100,
            schedule_delay: "0s".into(),
            startup_delay: "100ms".into(),
            ingest_expiry: "30s".into(),
        }
    }
}

impl Config {
    /// Parses the durations and clamps the numbers as containerd's `newScheduler` does. The
    /// error names the key.
    pub fn settings(&self) -> Result<Settings, String> {
        let duration = |key: &str, value: &str| {
            parse_duration(value).map_err(|e: TimeError| format!("{key}: {e}"))
        };
        if !self.pause_threshold.is_finite() {
            return Err(format!(
                "pause_threshold: {} is not a number",
                self.pause_threshold
            ));
        }
        Ok(Settings {
            pause_threshold: self.pause_threshold.clamp(0.0, 0.5),
            deletion_threshold: u64::try_from(self.deletion_threshold).unwrap_or(0),
            mutation_threshold: u64::try_from(self.mutation_threshold).unwrap_or(0),
            schedule_delay: duration("schedule_delay", &self.schedule_delay)?,
            startup_delay: duration("startup_delay", &self.startup_delay)?,
        })
    }
}

/// The `io.containerd.gc.v1.scheduler` plugin: a [`GcScheduler`] over the metadata and content
/// stores. Its loop runs on the tokio runtime the registry is loaded from.
pub fn registration() -> Registration {
    Registration::new(types::GC, ID)
        .requires(&[types::METADATA, types::CONTENT, types::SNAPSHOTTER])
        .config::<Config>()
        .init(|ctx| {
            let config: Config = ctx.config()?;
            let settings = config.settings().map_err(|message| PluginError::Config {
                uri: ctx.uri().to_owned(),
                message,
            })?;
            let ingest_expiry =
                parse_duration(&config.ingest_expiry).map_err(|e| PluginError::Config {
                    uri: ctx.uri().to_owned(),
                    message: format!("ingest_expiry: {e}"),
                })?;
            let meta: Arc<MetadataStore> = ctx.get_single(types::METADATA)?;
            let content: Arc<ContentStore> = ctx.get_single(types::CONTENT)?;
            let meta_for_sweepers = meta.clone();
            let runtime = tokio::runtime::Handle::try_current()
                .map_err(|e| PluginError::init(NoRuntime(e)))?;
            // The same facts containerd exports.
            let exports = &mut ctx.meta.exports;
            exports.insert(
                "PauseThreshold".into(),
                settings.pause_threshold.to_string(),
            );
            exports.insert(
                "DeletionThreshold".into(),
                settings.deletion_threshold.to_string(),
            );
            exports.insert(
                "MutationThreshold".into(),
                settings.mutation_threshold.to_string(),
            );
            exports.insert(
                "ScheduleDelay".into(),
                GoDuration(settings.schedule_delay).to_string(),
            );
            Ok(Arc::new(GcScheduler::start(
                meta,
                content,
                settings,
                GcOptions {
                    snapshot_sweepers: NamespacedSnapshots::new(
                        meta_for_sweepers,
                        loaded_snapshotters(ctx),
                    )
                    .sweepers(),
                    ingest_expiry,
                    ..GcOptions::default()
                },
                &runtime,
            )))
        })
}

/// Points every loaded GC scheduler at the snapshotters loaded now. berthd calls it after a
/// retry brought up a snapshotter that had failed at start (on a full disk, say), so that the
/// snapshots made on it are collected without a restart.
pub fn use_loaded_snapshotters(plugins: &Plugins) {
    let Some(meta) = plugins
        .get_all(types::METADATA)
        .into_iter()
        .find_map(|(_, instance)| instance.downcast::<MetadataStore>().ok())
    else {
        return;
    };
    let snapshotters = snapshotters_of(plugins.get_all(types::SNAPSHOTTER));
    let sweepers = NamespacedSnapshots::new(meta, snapshotters).sweepers();
    for (_, instance) in plugins.get_all(types::GC) {
        if let Ok(gc) = instance.downcast::<GcScheduler>() {
            gc.set_snapshot_sweepers(sweepers.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use berth_registry::{PluginStatus, Registry};

    use super::*;

    fn daemon_config(dir: &Path, extra: &str) -> berth_registry::Config {
        let text = format!(
            "version = 2\nroot = {:?}\nstate = {:?}\n{extra}",
            dir.join("root"),
            dir.join("state")
        );
        berth_registry::Config::parse(&text, Path::new("test.toml")).unwrap()
    }

    fn load(config: &berth_registry::Config) -> berth_registry::Plugins {
        let mut registry = Registry::new();
        registry
            .register(crate::content::plugin::registration())
            .unwrap();
        registry
            .register(crate::metadata::plugin::registration())
            .unwrap();
        registry.register(registration()).unwrap();
        registry.load(config).unwrap()
    }

    fn gc_status(plugins: &berth_registry::Plugins) -> PluginStatus {
        plugins
            .inventory()
            .snapshot()
            .into_iter()
            .find(|p| p.plugin_type == types::GC)
            .expect("the gc plugin is listed")
            .status
    }

    #[test]
    fn defaults_are_containerds() {
        let c = Config::default();
        assert_eq!(c.pause_threshold, 0.02);
        assert_eq!((c.deletion_threshold, c.mutation_threshold), (0, 100));
        assert_eq!(
            (c.schedule_delay.as_str(), c.startup_delay.as_str()),
            ("0s", "100ms")
        );
        let s = c.settings().unwrap();
        assert_eq!(s.schedule_delay, Duration::ZERO);
        assert_eq!(s.startup_delay, Duration::from_millis(100));
        let r = registration();
        assert_eq!(r.uri(), "io.containerd.gc.v1.scheduler");
    }

    #[test]
    fn settings_are_parsed_and_clamped() {
        let c = Config {
            pause_threshold: 0.9,
            deletion_threshold: -3,
            mutation_threshold: -1,
            schedule_delay: "1.5s".into(),
            startup_delay: "-1s".into(),
            ..Config::default()
        };
        let s = c.settings().unwrap();
        assert_eq!(s.pause_threshold, 0.5);
        assert_eq!((s.deletion_threshold, s.mutation_threshold), (0, 0));
        assert_eq!(s.schedule_delay, Duration::from_millis(1500));
        assert_eq!(s.startup_delay, Duration::ZERO);
        let bad = Config {
            startup_delay: "soon".into(),
            ..Config::default()
        };
        assert!(bad.settings().unwrap_err().starts_with("startup_delay: "));
    }

    #[tokio::test]
    async fn loads_on_a_runtime_with_its_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = daemon_config(
            dir.path(),
            "[plugins.\"io.containerd.gc.v1.scheduler\"]\n\
             pause_threshold = 0.1\nschedule_delay = \"10ms\"\ndeletion_threshold = 5\n",
        );
        let plugins = load(&config);
        assert_eq!(gc_status(&plugins), PluginStatus::Ok);
        let (id, instance) = plugins.get_all(types::GC).pop().unwrap();
        assert_eq!(id, "scheduler");
        let gc = instance.downcast::<GcScheduler>().unwrap();
        assert_eq!(gc.settings().pause_threshold, 0.1);
        assert_eq!(gc.settings().deletion_threshold, 5);
        assert_eq!(gc.settings().schedule_delay, Duration::from_millis(10));
        assert_eq!(gc.collect_now().await.unwrap().records_removed, 0);
        let info = plugins
            .inventory()
            .snapshot()
            .into_iter()
            .find(|p| p.plugin_type == types::GC)
            .unwrap();
        assert_eq!(info.exports.get("ScheduleDelay").unwrap(), "10ms");
    }

    #[tokio::test]
    async fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = daemon_config(
            dir.path(),
            "[plugins.\"io.containerd.gc.v1.scheduler\"]\npause_treshold = 0.1\n",
        );
        let PluginStatus::Error { message, .. } = gc_status(&load(&config)) else {
            panic!("a misspelt key must fail the plugin");
        };
        assert!(message.contains("pause_treshold"), "{message}");
        let config = daemon_config(
            dir.path(),
            "[plugins.\"io.containerd.gc.v1.scheduler\"]\nstartup_delay = \"1 fortnight\"\n",
        );
        let PluginStatus::Error { message, .. } = gc_status(&load(&config)) else {
            panic!("a bad duration must fail the plugin");
        };
        assert!(message.contains("startup_delay"), "{message}");
        let config = daemon_config(
            dir.path(),
            "[plugins.\"io.containerd.gc.v1.scheduler\"]\ningest_expiry = \"soon\"\n",
        );
        let PluginStatus::Error { message, .. } = gc_status(&load(&config)) else {
            panic!("a bad ingest expiry must fail the plugin");
        };
        assert!(message.contains("ingest_expiry"), "{message}");
    }

    #[test]
    fn without_a_runtime_init_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let PluginStatus::Error { message, .. } = gc_status(&load(&daemon_config(dir.path(), "")))
        else {
            panic!("the scheduler cannot start without a runtime");
        };
        assert!(message.contains("tokio runtime"), "{message}");
    }
}
