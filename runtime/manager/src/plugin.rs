//! Registration of the task manager as `io.containerd.runtime.v2.task` (containerd
//! `core/runtime/v2/task_manager.go` registers the runtime beside the manager): the config's
//! platforms, the manager over the plugin's root and state dirs, its dead-shim events published
//! on the daemon's exchange, and the reconnect to surviving shims. The manager itself knows
//! nothing of the exchange; only this glue does.

use std::sync::Arc;

use berth_core::events::Exchange;
use berth_registry::{types, Platform, PluginError, Registration};

use crate::{Config, EventSink, ManagerConfig, TaskManager, Timeouts, PLUGIN_ID};

/// The manager's events, published on the daemon's exchange.
#[derive(Debug, Clone)]
pub struct ExchangeSink(pub Arc<Exchange>);

impl EventSink for ExchangeSink {
    fn publish(&self, ns: &str, topic: &str, event: prost_types::Any) {
        if let Err(e) = self.0.publish(ns, topic, event) {
            tracing::warn!(namespace = ns, topic, error = %e, "publish task event");
        }
    }
}

/// Why the runtime plugin did not load, beside the task manager's own errors.
#[derive(Debug, thiserror::Error)]
pub enum RuntimePluginError {
    /// A `platforms` entry that is not `os/arch[/variant]`.
    #[error("invalid platform {0:?}")]
    InvalidPlatform(String),
    /// The thread reconnecting to surviving shims panicked.
    #[error("loading existing tasks panicked")]
    LoadPanicked,
}

/// `os/arch[/variant]` as a platform.
pub fn parse_platform(s: &str) -> Result<Platform, RuntimePluginError> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] | [os, arch, ""] => Ok(Platform {
            os: (*os).to_owned(),
            architecture: (*arch).to_owned(),
            variant: String::new(),
        }),
        [os, arch, variant] => Ok(Platform {
            os: (*os).to_owned(),
            architecture: (*arch).to_owned(),
            variant: (*variant).to_owned(),
        }),
        _ => Err(RuntimePluginError::InvalidPlatform(s.to_owned())),
    }
}

/// The `io.containerd.runtime.v2.task` plugin: the task manager, publishing its dead-shim
/// events on the exchange. Reconnects to surviving shims while it loads (needs the daemon's
/// multi-threaded tokio runtime; without one, loading existing tasks is skipped).
pub fn registration() -> Registration {
    Registration::new(types::RUNTIME_V2, PLUGIN_ID)
        .requires(&[types::EVENT, types::METADATA])
        .config::<Config>()
        .init(|ctx| {
            let config: Config = ctx.config()?;
            ctx.meta.platforms = config
                .platforms
                .iter()
                .map(|p| parse_platform(p))
                .collect::<Result<_, _>>()
                .map_err(PluginError::init)?;
            let exchange: Arc<Exchange> =
                ctx.get_by_id(types::EVENT, berth_core::events::plugin::ID)?;
            let root = ctx.create_root()?;
            let state = ctx.create_state()?;
            let daemon = ctx.daemon_config();
            let default_options = config.default_options();
            let manager = TaskManager::with_default_options(
                ManagerConfig {
                    root,
                    state,
                    grpc_address: daemon.grpc.address.display().to_string(),
                    ttrpc_address: daemon.ttrpc_address().display().to_string(),
                    publish_binary: std::env::current_exe().map_err(PluginError::init)?,
                    runtimes: config.shim_overrides(),
                    timeouts: Timeouts::from_daemon_config(daemon),
                },
                Arc::new(ExchangeSink(exchange)),
                default_options,
            )
            .map_err(PluginError::init)?;
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    // A thread of its own: init may run on a runtime thread, where blocking on
                    // the runtime directly would panic.
                    let m = manager.clone();
                    std::thread::spawn(move || handle.block_on(m.load()))
                        .join()
                        .map_err(|_| PluginError::init(RuntimePluginError::LoadPanicked))?
                        .map_err(PluginError::init)?;
                }
                Err(_) => {
                    tracing::warn!("no async runtime while loading; existing tasks not reloaded")
                }
            }
            Ok(manager)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse() {
        let p = parse_platform("linux/amd64").unwrap();
        assert_eq!(p.to_string(), "linux/amd64");
        let p = parse_platform("linux/arm64/v8").unwrap();
        assert_eq!(p.variant, "v8");
        assert!(parse_platform("linux").is_err());
    }
}
