//! Registration of `[proxy_plugins.<name>] type = "snapshot"` entries as snapshotter plugins.

use std::sync::Arc;

use berth_registry::{types, Config, PluginError, Registration, Registry, RegistryError};

use super::ProxySnapshotter;
use crate::snapshotter::Snapshotter;

/// A `[proxy_plugins]` entry of a type other than `snapshot`.
#[derive(Debug, thiserror::Error)]
#[error("proxy plugin type {0:?} is not supported (only \"snapshot\")")]
struct UnsupportedProxyType(String);

/// Registers one snapshotter plugin per `snapshot` proxy plugin in the config. Other proxy
/// types are refused at load with a clear error rather than ignored.
pub fn register_from_config(registry: &mut Registry, config: &Config) -> Result<(), RegistryError> {
    for (name, proxy) in &config.proxy_plugins {
        let name = name.clone();
        let proxy = proxy.clone();
        let reg = match proxy.plugin_type.as_str() {
            "snapshot" => Registration::new(types::SNAPSHOTTER, name.clone()).init(move |ctx| {
                let sn = ProxySnapshotter::new(&name, &proxy.address).map_err(PluginError::init)?;
                ctx.meta
                    .exports
                    .insert("address".into(), proxy.address.display().to_string());
                Ok(Arc::new(Arc::new(sn) as Arc<dyn Snapshotter>))
            }),
            other => {
                let other = other.to_owned();
                Registration::new(types::INTERNAL, format!("proxy.{name}"))
                    .init(move |_| Err(PluginError::init(UnsupportedProxyType(other.clone()))))
            }
        };
        registry.register(reg)?;
    }
    Ok(())
}
