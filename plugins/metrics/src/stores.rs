//! Series of the daemon's stores: what garbage collection did (live from the scheduler's
//! counters), the content store's size and the snapshot records per snapshotter (both read at
//! most once per [`Stores::max_age`]: a walk of the blobs and a scan of the snapshot records
//! are not free on a large store). Encoding runs on the blocking pool, so the reads happen
//! there.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_core::content::ContentStore;
use berth_core::gc::GcScheduler;
use berth_core::metadata::MetadataStore;
use berth_registry::{types, Plugins};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

/// The figures read from the stores.
#[derive(Debug, Clone, Default)]
struct Figures {
    /// `(blobs, bytes)` of the content store, when one is loaded.
    content: Option<(u64, u64)>,
    /// Snapshot records by `(snapshotter, namespace)`.
    snapshots: BTreeMap<(String, String), u64>,
}

/// The stores' series.
#[derive(Debug)]
pub struct Stores {
    plugins: Plugins,
    cache: Mutex<Option<(Instant, Figures)>>,
    max_age: Duration,
}

impl Stores {
    /// Series of the stores among `plugins` (looked up at each read, so that a plugin loaded
    /// on a retry is included), read again once older than `max_age`.
    pub fn new(plugins: Plugins, max_age: Duration) -> Stores {
        Stores {
            plugins,
            cache: Mutex::new(None),
            max_age,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<(Instant, Figures)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The figures, read now if the cached ones are too old. Blocking.
    fn figures(&self) -> Figures {
        let mut cache = self.lock();
        if let Some((taken, figures)) = &*cache {
            if taken.elapsed() < self.max_age {
                return figures.clone();
            }
        }
        let figures = self.read();
        *cache = Some((Instant::now(), figures.clone()));
        figures
    }

    fn read(&self) -> Figures {
        let content = single::<ContentStore>(&self.plugins, types::CONTENT).and_then(|store| {
            match store.walk() {
                Ok(blobs) => Some((blobs.len() as u64, blobs.iter().map(|b| b.size).sum())),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: walk the content store");
                    None
                }
            }
        });
        let mut snapshots = BTreeMap::new();
        if let Some(meta) = single::<MetadataStore>(&self.plugins, types::METADATA) {
            for (snapshotter, _) in self.plugins.get_all(types::SNAPSHOTTER) {
                match meta.all_snapshots(&snapshotter) {
                    Ok(records) => {
                        for (ns, _) in records {
                            *snapshots.entry((snapshotter.clone(), ns)).or_insert(0) += 1;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(snapshotter = %snapshotter, error = %e, "metrics: list snapshots");
                    }
                }
            }
        }
        Figures { content, snapshots }
    }
}

/// The first loaded plugin of `plugin_type` that is a `T`.
fn single<T: Send + Sync + 'static>(
    plugins: &Plugins,
    plugin_type: &str,
) -> Option<std::sync::Arc<T>> {
    plugins
        .get_all(plugin_type)
        .into_iter()
        .find_map(|(_, instance)| instance.downcast::<T>().ok())
}

/// Encodes a counter without labels.
fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for Stores {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(gc) = single::<GcScheduler>(&self.plugins, types::GC) {
            let t = gc.totals();
            // The encoder appends `_total` to counters.
            counter(
                &mut encoder,
                "berth_gc_runs",
                "Garbage collections run",
                t.runs,
            )?;
            counter(
                &mut encoder,
                "berth_gc_failures",
                "Garbage collections that failed",
                t.failures,
            )?;
            counter(
                &mut encoder,
                "berth_gc_reclaimed_bytes",
                "Bytes of content removed by garbage collection",
                t.bytes_removed,
            )?;
            counter(
                &mut encoder,
                "berth_gc_removed_blobs",
                "Content blobs removed by garbage collection",
                t.blobs_removed,
            )?;
            counter(
                &mut encoder,
                "berth_gc_removed_snapshots",
                "Snapshots removed by garbage collection",
                t.snapshots_removed,
            )?;
        }
        let figures = self.figures();
        if let Some((blobs, bytes)) = figures.content {
            encoder
                .encode_descriptor(
                    "berth_content_store_bytes",
                    "Bytes of the committed blobs in the content store",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&bytes)?;
            encoder
                .encode_descriptor(
                    "berth_content_store_blobs",
                    "Committed blobs in the content store",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&blobs)?;
        }
        let mut metric = encoder.encode_descriptor(
            "berth_snapshots",
            "Snapshots by snapshotter and namespace",
            None,
            MetricType::Gauge,
        )?;
        for ((snapshotter, ns), count) in &figures.snapshots {
            let labels = [
                ("namespace", ns.as_str()),
                ("snapshotter", snapshotter.as_str()),
            ];
            metric.encode_family(&labels)?.encode_gauge(count)?;
        }
        Ok(())
    }
}
