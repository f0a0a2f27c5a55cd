//! berthd's Prometheus metrics (containerd's `[metrics]` section): `GET /v1/metrics` in the
//! Prometheus text format, made with `prometheus-client`.
//!
//! - [`rpc`]: gRPC counters (and histograms) under grpc-go-prometheus's names, counted by a
//!   tower layer berthd puts in front of its services only when an address is configured.
//! - [`containers`]: per-container cgroup series from the shims' `Stats` ([`cgroups`] names
//!   them as containerd does) and task counts by state, cached.
//! - [`stores`]: garbage collection, content store size, snapshots per snapshotter.
//! - [`process`]: the daemon's own CPU, memory and descriptors.
//! - [`http`]: the listener.

pub mod cgroups;
pub mod containers;
mod error;
pub mod http;
pub mod process;
pub mod rpc;
pub mod stores;

use std::sync::Arc;
use std::time::Duration;

use berth_registry::config::MetricsConfig;
use berth_registry::{types, Plugins};
use berth_runtime::TaskManager;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;

pub use error::MetricsError;
pub use http::{serve, Listener, METRICS_PATH};
pub use rpc::{RpcLayer, RpcMetrics};

/// How old cached shim answers and store figures may be before a scrape reads them again.
pub const MAX_AGE: Duration = Duration::from_secs(10);

/// Everything `/v1/metrics` shows.
#[derive(Debug)]
pub struct Exporter {
    registry: Arc<Registry>,
    rpc: Arc<RpcMetrics>,
    containers: Arc<containers::Containers>,
    plugins: Plugins,
}

impl Exporter {
    /// The series of the daemon whose plugins are `plugins`.
    pub fn new(config: &MetricsConfig, plugins: Plugins) -> Arc<Exporter> {
        let mut registry = Registry::default();
        let rpc = RpcMetrics::register(&mut registry, config.grpc_histogram);
        let containers = containers::Containers::new(MAX_AGE);
        registry.register_collector(Box::new(containers.clone()));
        registry.register_collector(Box::new(stores::Stores::new(plugins.clone(), MAX_AGE)));
        registry.register_collector(Box::new(process::Process));
        Arc::new(Exporter {
            registry: Arc::new(registry),
            rpc,
            containers,
            plugins,
        })
    }

    /// The layer counting the gRPC calls into these metrics.
    pub fn rpc_layer(&self) -> RpcLayer {
        RpcLayer::new(self.rpc.clone())
    }

    /// The metrics as text: the shims asked if the cache is old (on the runtime, their calls
    /// are async), then every series encoded on the blocking pool (procfs and store reads).
    pub async fn scrape(&self) -> Result<String, MetricsError> {
        let manager = self
            .plugins
            .get_all(types::RUNTIME_V2)
            .into_iter()
            .find_map(|(_, instance)| instance.downcast::<TaskManager>().ok());
        let asked = self.containers.refresh(manager.as_deref()).await;
        tracing::debug!(asked, "task metrics refreshed");
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            prometheus_text::encode(&mut text, &registry).map_err(MetricsError::Encode)?;
            Ok(text)
        })
        .await
        .map_err(MetricsError::Task)?
    }
}
