//! The per-container series and the task counts, from the shims' `Stats` and `State`,
//! cached: a scrape asks the shims only when the cache is older than [`Containers::max_age`],
//! and otherwise only about tasks it has not seen yet. However often Prometheus scrapes, each
//! shim answers at most one `Stats` and one `State` per `max_age` (containerd's collector asks
//! every shim on every scrape). Tasks gone from the runtime manager leave the cache at the
//! next scrape, before it is encoded, so a deleted container's series disappear at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_runtime::{Task, TaskManager};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::cgroups::{Sample, Stats};

/// How long one shim call of a refresh may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// containerd's task states (`containerd.v1.types.Status`), by number, as `berth_tasks`
/// labels them.
const STATES: [&str; 6] = [
    "unknown", "created", "running", "stopped", "paused", "pausing",
];

/// `(namespace, container id)`.
type Key = (String, String);

/// What the shims said about one task.
#[derive(Debug, Clone, Default)]
struct Entry {
    stats: Option<Stats>,
    /// An index into [`STATES`].
    state: usize,
}

#[derive(Debug, Default)]
struct Cache {
    /// When every task was last asked.
    taken: Option<Instant>,
    tasks: BTreeMap<Key, Entry>,
}

/// The cache of the shims' answers; a [`Collector`] of the series made from it.
#[derive(Debug)]
pub struct Containers {
    cache: Mutex<Cache>,
    /// One refresh at a time: concurrent scrapes wait for it rather than ask again.
    refreshing: tokio::sync::Mutex<()>,
    max_age: Duration,
}

fn key(task: &Task) -> Key {
    (task.namespace().to_owned(), task.id().to_owned())
}

impl Containers {
    /// An empty cache whose answers are asked again once older than `max_age`.
    pub fn new(max_age: Duration) -> Arc<Containers> {
        Arc::new(Containers {
            cache: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(()),
            max_age,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the cache up to date with `manager`'s tasks (none: no runtime loaded): drops
    /// the tasks gone, asks the shims of new tasks, and of every task when the cache is older
    /// than the maximum age. Returns how many tasks were asked.
    pub async fn refresh(&self, manager: Option<&TaskManager>) -> usize {
        let _one = self.refreshing.lock().await;
        let tasks = manager.map(TaskManager::list_all).unwrap_or_default();
        let (stale, targets) = {
            let mut cache = self.lock();
            let live: BTreeSet<Key> = tasks.iter().map(|t| key(t)).collect();
            cache.tasks.retain(|k, _| live.contains(k));
            let stale = cache.taken.is_none_or(|t| t.elapsed() >= self.max_age);
            let targets: Vec<Arc<Task>> = tasks
                .into_iter()
                .filter(|t| stale || !cache.tasks.contains_key(&key(t)))
                .collect();
            (stale, targets)
        };
        let asked = targets.len();
        let answers = futures::future::join_all(targets.iter().map(|t| sample(t))).await;
        // A task deleted while its shim was asked must not come back.
        let live: BTreeSet<Key> = manager
            .map(TaskManager::list_all)
            .unwrap_or_default()
            .iter()
            .map(|t| key(t))
            .collect();
        let mut cache = self.lock();
        for (task, entry) in targets.iter().zip(answers) {
            let k = key(task);
            if live.contains(&k) {
                cache.tasks.insert(k, entry);
            }
        }
        cache.tasks.retain(|k, _| live.contains(k));
        if stale {
            cache.taken = Some(Instant::now());
        }
        asked
    }
}

/// Asks one task's shim for its cgroup metrics and state.
async fn sample(task: &Task) -> Entry {
    let (stats, state) = tokio::join!(
        tokio::time::timeout(CALL_TIMEOUT, task.stats()),
        tokio::time::timeout(CALL_TIMEOUT, task.state("")),
    );
    let stats = match stats {
        Ok(Ok(Some(any))) => match Stats::decode(&any) {
            Ok(stats) => Some(stats),
            Err(e) => {
                tracing::debug!(id = task.id(), error = %e, "task stats not usable");
                None
            }
        },
        Ok(Ok(None)) => None,
        Ok(Err(e)) => {
            // A stopped task's cgroup is gone: no series, as with containerd.
            tracing::debug!(id = task.id(), error = %e, "task stats");
            None
        }
        Err(_) => {
            tracing::debug!(id = task.id(), "task stats timed out");
            None
        }
    };
    let state = match state {
        Ok(Ok(s)) => usize::try_from(s.status)
            .ok()
            .filter(|i| *i < STATES.len())
            .unwrap_or(0),
        _ => 0,
    };
    Entry { stats, state }
}

/// A series' help and its samples, by container.
type SeriesSamples<'a> = (&'static str, Vec<(&'a Key, Sample)>);

impl Collector for Containers {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cache = self.lock();
        // Grouped by series, each series in one block as the text format wants.
        let mut series: BTreeMap<&'static str, SeriesSamples<'_>> = BTreeMap::new();
        let mut states = [0u64; STATES.len()];
        for (k, entry) in &cache.tasks {
            states[entry.state] += 1;
            if let Some(stats) = &entry.stats {
                stats.samples(&mut |s| {
                    series
                        .entry(s.name)
                        .or_insert_with(|| (s.help, Vec::new()))
                        .1
                        .push((k, s));
                });
            }
        }
        let mut tasks = encoder.encode_descriptor(
            "berth_tasks",
            "Tasks of the runtime by state",
            None,
            MetricType::Gauge,
        )?;
        for (state, count) in STATES.iter().zip(states) {
            let labels = [("state", *state)];
            tasks.encode_family(&labels)?.encode_gauge(&count)?;
        }
        for (name, (help, samples)) in &series {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for ((ns, id), s) in samples {
                let mut labels: Vec<(&str, &str)> =
                    vec![("container_id", id.as_str()), ("namespace", ns.as_str())];
                labels.extend(s.labels.iter().map(|(k, v)| (*k, v.as_str())));
                metric.encode_family(&labels)?.encode_gauge(&s.value)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use berth_proto::io::containerd::cgroups::v1;
    use prometheus_client::encoding::prometheus_text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn series_are_labelled_by_namespace_and_container() {
        let containers = Containers::new(Duration::from_secs(10));
        let stats = Stats::V1(Box::new(v1::Metrics {
            pids: Some(v1::PidsStat {
                current: 3,
                limit: 10,
            }),
            ..Default::default()
        }));
        {
            let mut cache = containers.lock();
            cache.tasks.insert(
                ("default".into(), "a".into()),
                Entry {
                    stats: Some(stats.clone()),
                    state: 2,
                },
            );
            cache.tasks.insert(
                ("k8s.io".into(), "b".into()),
                Entry {
                    stats: None,
                    state: 3,
                },
            );
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(containers.clone()));
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        for line in [
            "berth_tasks{state=\"running\"} 1",
            "berth_tasks{state=\"stopped\"} 1",
            "berth_tasks{state=\"created\"} 0",
            "container_pids_current{container_id=\"a\",namespace=\"default\"} 3",
            "container_pids_limit{container_id=\"a\",namespace=\"default\"} 10",
        ] {
            assert!(out.contains(line), "{line}\n{out}");
        }
        assert_eq!(
            out.matches("# TYPE container_pids_current gauge").count(),
            1
        );
        assert!(!out.contains("container_id=\"b\""), "{out}");
    }

    #[tokio::test]
    async fn without_a_runtime_the_cache_empties() {
        let containers = Containers::new(Duration::from_secs(10));
        containers
            .lock()
            .tasks
            .insert(("default".into(), "a".into()), Entry::default());
        assert_eq!(containers.refresh(None).await, 0);
        assert!(containers.lock().tasks.is_empty());
    }
}
