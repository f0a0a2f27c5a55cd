//! Registration as `io.containerd.internal.v1.restart`, with containerd's one config key:
//!
//! ```toml
//! [plugins."io.containerd.internal.v1.restart"]
//!   interval = "10s"
//! ```

use std::sync::Arc;

use berth_core::events::Exchange;
use berth_core::metadata::plugin::snapshot_view;
use berth_core::MetadataStore;
use berth_registry::duration::{format_go_duration, parse_go_duration};
use berth_registry::{types, PluginError, Registration};
use berth_runtime::TaskManager;
use berth_services::tasks::TasksService;
use serde::{Deserialize, Serialize};

use crate::monitor::Monitor;
use crate::PLUGIN_ID;

/// The monitor's config section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How often every labelled container is reconciled, a Go duration (containerd: `10s`;
    /// `0` means the default, as in containerd).
    pub interval: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: "10s".into(),
        }
    }
}

/// Why the monitor cannot start: plugins were loaded outside a tokio runtime.
#[derive(Debug, thiserror::Error)]
#[error("the restart monitor runs on a tokio runtime, and plugins are loaded outside one")]
struct NoRuntime(#[source] tokio::runtime::TryCurrentError);

/// The capabilities containerd 1.7 reports (nerdctl checks them before `--restart`).
pub const CAPABILITIES: [&str; 4] = ["no", "always", "on-failure", "unless-stopped"];

/// The `io.containerd.internal.v1.restart` plugin.
pub fn registration() -> Registration {
    Registration::new(types::INTERNAL, PLUGIN_ID)
        .requires(&[
            types::METADATA,
            types::SNAPSHOTTER,
            types::EVENT,
            types::RUNTIME_V2,
        ])
        .config::<Config>()
        .init(|ctx| {
            let config: Config = ctx.config()?;
            let mut interval =
                parse_go_duration(&config.interval).ok_or_else(|| PluginError::Config {
                    uri: ctx.uri().to_owned(),
                    message: format!("interval: {:?} is not a duration", config.interval),
                })?;
            if interval.is_zero() {
                interval = std::time::Duration::from_secs(10);
            }
            let meta: Arc<MetadataStore> = ctx.get_single(types::METADATA)?;
            let exchange: Arc<Exchange> =
                ctx.get_by_id(types::EVENT, berth_core::events::plugin::ID)?;
            let tasks: Arc<TaskManager> =
                ctx.get_by_id(types::RUNTIME_V2, berth_runtime::PLUGIN_ID)?;
            let snapshots = snapshot_view(ctx)?;
            let runtime = tokio::runtime::Handle::try_current()
                .map_err(|e| PluginError::init(NoRuntime(e)))?;
            let filter =
                berth_filters::parse_any(&["topic==\"/tasks/exit\""]).map_err(PluginError::init)?;
            ctx.meta.capabilities = CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
            ctx.meta
                .exports
                .insert("Interval".into(), format_go_duration(interval));
            let service = TasksService::new(tasks.clone(), meta.clone(), snapshots);
            let monitor = Monitor::new(meta, tasks, service, interval);
            monitor.start(exchange.subscribe(filter), &runtime);
            Ok(monitor)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_containerds() {
        assert_eq!(Config::default().interval, "10s");
        assert_eq!(registration().uri(), "io.containerd.internal.v1.restart");
    }
}
