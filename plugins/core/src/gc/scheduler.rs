//! When to collect (containerd `gc/scheduler/scheduler.go`): after deletions, on a schedule
//! that keeps the time spent collecting near `pause_threshold`, and on demand.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::collect::{collect_with, sweep_ingests, GcOptions, GcReport};
use super::error::GcError;
use crate::content::ContentStore;
use crate::metadata::MetadataStore;

/// The interval between checks before the first collection gives a measured one.
const INITIAL_INTERVAL: Duration = Duration::from_secs(1);

/// The shortest interval between checks. containerd has no floor, but its bolt collections
/// take milliseconds; ours can take microseconds, which would make an idle daemon spin.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Added to an ingest's wait so that the collection that follows finds it past its limit.
const INGEST_SLACK: Duration = Duration::from_millis(50);

/// How the scheduler decides to collect; [`super::plugin::Config`] parsed and clamped as
/// containerd clamps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Target share of time spent collecting, 0 to 0.5; sets the interval between scheduled
    /// collections (`avg / threshold - avg`). 0 keeps a one second interval.
    pub pause_threshold: f64,
    /// Pending deletions that make a check collect at once; 0 means any deletion is collected
    /// at the next scheduled check.
    pub deletion_threshold: u64,
    /// Accepted for containerd compatibility. The metadata store counts deletions only, so
    /// mutations never trigger a collection.
    pub mutation_threshold: u64,
    /// How long after deciding to collect the collection starts.
    pub schedule_delay: Duration,
    /// When after start the first collection runs; 0 = only once something was deleted.
    pub startup_delay: Duration,
}

/// What the collections so far measured; held while collecting, so one runs at a time.
#[derive(Debug, Default)]
struct RunStats {
    collections: u32,
    total: Duration,
}

impl RunStats {
    /// The interval that keeps collections at `pause_threshold` of the time.
    fn interval(&self, pause_threshold: f64) -> Duration {
        if pause_threshold <= 0.0 || self.collections == 0 {
            return INITIAL_INTERVAL;
        }
        let avg = self.total.as_secs_f64() / f64::from(self.collections);
        Duration::from_secs_f64(avg / pause_threshold - avg).max(MIN_INTERVAL)
    }
}

#[derive(Debug)]
struct Shared {
    meta: Arc<MetadataStore>,
    content: Arc<ContentStore>,
    /// Replaced when a snapshotter loads late (see [`GcScheduler::set_snapshot_sweepers`]).
    options: std::sync::RwLock<GcOptions>,
    settings: Settings,
    /// Pokes the loop: `trigger()`, or a new reason to look at the deletion count.
    wake: Notify,
    /// Set by `trigger()`: collect on the next wake whatever the thresholds say.
    triggered: AtomicBool,
    /// The deletion count the last collection accounted for.
    seen_deletions: AtomicU64,
    /// The content store's ingest generation the last run saw: an ingest created or removed
    /// since then (an upload abandoned without a lease, say) needs a look even without a
    /// deletion.
    seen_ingests: AtomicU64,
    runs: Mutex<RunStats>,
    /// What the collections did so far, for the daemon's metrics.
    totals: Totals,
}

/// Running totals of the collections a scheduler ran (scheduled and `collect_now` alike).
#[derive(Debug, Default)]
struct Totals {
    runs: AtomicU64,
    failures: AtomicU64,
    blobs_removed: AtomicU64,
    bytes_removed: AtomicU64,
    snapshots_removed: AtomicU64,
}

/// What a scheduler's collections did since it started (berthd's `/v1/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcTotals {
    /// Collections that finished.
    pub runs: u64,
    /// Collections that failed.
    pub failures: u64,
    /// Blobs removed from the content store.
    pub blobs_removed: u64,
    /// Bytes of those blobs.
    pub bytes_removed: u64,
    /// Snapshots removed.
    pub snapshots_removed: u64,
}

impl Shared {
    /// Deletions since the last collection.
    fn pending(&self) -> u64 {
        self.meta
            .deletion_count()
            .saturating_sub(self.seen_deletions.load(Ordering::Relaxed))
    }

    /// Whether an ingest came or went since the last run looked.
    fn ingests_moved(&self) -> bool {
        self.content.ingest_generation() != self.seen_ingests.load(Ordering::Relaxed)
    }

    /// Notes the ingests as seen and returns the options to run with.
    fn begin_run(&self) -> GcOptions {
        self.seen_ingests
            .store(self.content.ingest_generation(), Ordering::Relaxed);
        self.options
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Removes the expired ingests only ([`sweep_ingests`]) on the blocking pool, after any
    /// running collection.
    async fn sweep_ingests(self: &Arc<Self>) -> Result<GcReport, GcError> {
        let _one_at_a_time = self.runs.lock().await;
        let options = self.begin_run();
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || sweep_ingests(&shared.meta, &shared.content, &options))
            .await
            .unwrap_or_else(|e| Err(GcError::Task(e)))
            .inspect_err(|e| tracing::error!(error = %e, "expiring ingests failed"))
    }

    /// Runs one collection on the blocking pool, after any running one.
    async fn collect(self: &Arc<Self>) -> Result<GcReport, GcError> {
        let mut stats = self.runs.lock().await;
        let before = self.meta.deletion_count();
        let options = self.begin_run();
        let shared = Arc::clone(self);
        let result = tokio::task::spawn_blocking(move || {
            collect_with(&shared.meta, &shared.content, &options)
        })
        .await
        .unwrap_or_else(|e| Err(GcError::Task(e)));
        match result {
            Ok(report) => {
                // The collector's own removals need no collection of their own.
                let own = (report.records_removed + report.leases_expired) as u64;
                self.seen_deletions.store(before + own, Ordering::Relaxed);
                stats.collections += 1;
                stats.total += report.duration;
                let t = &self.totals;
                t.runs.fetch_add(1, Ordering::Relaxed);
                t.blobs_removed
                    .fetch_add(report.blobs_removed as u64, Ordering::Relaxed);
                t.bytes_removed
                    .fetch_add(report.bytes_removed, Ordering::Relaxed);
                t.snapshots_removed
                    .fetch_add(report.snapshots_removed as u64, Ordering::Relaxed);
                Ok(report)
            }
            Err(e) => {
                self.totals.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "garbage collection failed");
                Err(e)
            }
        }
    }

    async fn interval(&self) -> Duration {
        self.runs
            .lock()
            .await
            .interval(self.settings.pause_threshold)
    }

    /// The scheduling loop; runs until the scheduler is dropped.
    async fn run(self: Arc<Self>) {
        let s = &self.settings;
        let mut interval = INITIAL_INTERVAL;
        let mut next = (!s.startup_delay.is_zero()).then(|| Instant::now() + s.startup_delay);
        let mut collected = false;
        // When an ingest kept for being recently written becomes removable.
        let mut ingest_due: Option<Instant> = None;
        loop {
            // Nothing tells the loop about deletions, so it also looks every `interval`.
            let mut wake_at = next.unwrap_or_else(|| Instant::now() + interval);
            if let Some(due) = ingest_due {
                wake_at = wake_at.min(due);
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake_at) => {}
                () = self.wake.notified() => {}
            }
            let now = Instant::now();
            let due = next.is_some_and(|n| now >= n);
            let pending = self.pending();
            let triggered = self.triggered.swap(false, Ordering::Relaxed);
            let start = triggered
                || (due && (!collected || pending > 0))
                || (s.deletion_threshold > 0 && pending >= s.deletion_threshold)
                || (next.is_none() && pending > 0);
            if !start {
                // An ingest came, went or became removable: expire ingests, nothing else.
                if ingest_due.is_some_and(|d| now >= d) || self.ingests_moved() {
                    ingest_due = match self.sweep_ingests().await {
                        Ok(report) => ingest_check_at(&report),
                        Err(_) => Some(Instant::now() + INITIAL_INTERVAL),
                    };
                }
                if due {
                    next = Some(now + interval);
                }
                continue;
            }
            if !s.schedule_delay.is_zero() {
                tokio::time::sleep(s.schedule_delay).await;
            }
            collected = true;
            match self.collect().await {
                Ok(report) => {
                    tracing::debug!(duration = ?report.duration, "scheduled collection done");
                    ingest_due = ingest_check_at(&report);
                    interval = self.interval().await;
                    next = Some(Instant::now() + interval);
                }
                // Back off a little, as containerd does, and try again.
                Err(_) => next = Some(Instant::now() + interval + Duration::from_secs(1)),
            }
        }
    }
}

/// When to look at the ingests again after a run that reported `next_ingest_check`.
fn ingest_check_at(report: &GcReport) -> Option<Instant> {
    report
        .next_ingest_check
        .map(|wait| Instant::now() + wait.saturating_sub(report.duration) + INGEST_SLACK)
}

/// The `io.containerd.gc.v1.scheduler` instance: a background loop that collects garbage,
/// and [`GcScheduler::collect_now`] for callers that must see the result (`sync` deletes).
#[derive(Debug)]
pub struct GcScheduler {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl GcScheduler {
    /// Starts the scheduling loop on `runtime`.
    pub fn start(
        meta: Arc<MetadataStore>,
        content: Arc<ContentStore>,
        settings: Settings,
        options: GcOptions,
        runtime: &tokio::runtime::Handle,
    ) -> GcScheduler {
        let seen = meta.deletion_count();
        // Ingests left from before the start are the startup collection's business.
        let seen_ingests = AtomicU64::new(content.ingest_generation());
        let shared = Arc::new(Shared {
            meta,
            content,
            options: std::sync::RwLock::new(options),
            settings,
            wake: Notify::new(),
            triggered: AtomicBool::new(false),
            seen_deletions: AtomicU64::new(seen),
            seen_ingests,
            runs: Mutex::new(RunStats::default()),
            totals: Totals::default(),
        });
        let task = runtime.spawn(Arc::clone(&shared).run());
        GcScheduler { shared, task }
    }

    /// The settings the scheduler runs with.
    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// Collections from now on mark and sweep through `sweepers`: a snapshotter that failed at
    /// start and loaded on a retry has its snapshots collected too.
    pub fn set_snapshot_sweepers(&self, sweepers: Vec<Arc<dyn super::mark::SnapshotSweeper>>) {
        self.shared
            .options
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .snapshot_sweepers = sweepers;
    }

    /// What the collections did since the scheduler started.
    pub fn totals(&self) -> GcTotals {
        let t = &self.shared.totals;
        GcTotals {
            runs: t.runs.load(Ordering::Relaxed),
            failures: t.failures.load(Ordering::Relaxed),
            blobs_removed: t.blobs_removed.load(Ordering::Relaxed),
            bytes_removed: t.bytes_removed.load(Ordering::Relaxed),
            snapshots_removed: t.snapshots_removed.load(Ordering::Relaxed),
        }
    }

    /// Asks for a collection soon (after `schedule_delay`) without waiting for it.
    pub fn trigger(&self) {
        self.shared.triggered.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }

    /// Runs a collection now, after any running one, and returns what it did (containerd's
    /// `ScheduleAndWait`). Collections never overlap; the sweep runs on the blocking pool.
    pub async fn collect_now(&self) -> Result<GcReport, GcError> {
        self.shared.collect().await
    }
}

impl Drop for GcScheduler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::MetadataError;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    struct Fixture {
        _dir: tempfile::TempDir,
        meta: Arc<MetadataStore>,
        content: Arc<ContentStore>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(MetadataStore::open(&dir.path().join("meta")).unwrap());
        let content = Arc::new(ContentStore::open(&dir.path().join("content")).unwrap());
        Fixture {
            _dir: dir,
            meta,
            content,
        }
    }

    fn settings(startup_delay: Duration) -> Settings {
        Settings {
            pause_threshold: 0.02,
            deletion_threshold: 0,
            mutation_threshold: 100,
            schedule_delay: Duration::ZERO,
            startup_delay,
        }
    }

    impl Fixture {
        fn start(&self, startup_delay: Duration) -> GcScheduler {
            self.start_with(startup_delay, GcOptions::default())
        }

        fn start_with(&self, startup_delay: Duration, options: GcOptions) -> GcScheduler {
            GcScheduler::start(
                self.meta.clone(),
                self.content.clone(),
                settings(startup_delay),
                options,
                &tokio::runtime::Handle::current(),
            )
        }

        /// A record nothing references.
        fn orphan(&self) {
            self.meta
                .add_blob("default", D1, 1, BTreeMap::new())
                .unwrap();
        }

        async fn wait_until_collected(&self) {
            let gone = async {
                while !matches!(
                    self.meta.get_blob("default", D1),
                    Err(MetadataError::ContentNotFound(_))
                ) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(5), gone)
                .await
                .expect("the scheduler collects within 5 s");
        }
    }

    #[tokio::test]
    async fn collect_now_collects_one_at_a_time() {
        let f = fixture();
        let gc = f.start(Duration::ZERO);
        f.orphan();
        let (a, b) = tokio::join!(gc.collect_now(), gc.collect_now());
        let (a, b) = (a.unwrap(), b.unwrap());
        // Serialized: one of them removed the record, the other found nothing.
        assert_eq!(a.records_removed + b.records_removed, 1);
        assert_eq!(gc.settings().pause_threshold, 0.02);
    }

    #[tokio::test]
    async fn totals_count_every_collection() {
        let f = fixture();
        // No scheduled collection within the test.
        let gc = f.start(Duration::from_secs(3600));
        assert_eq!(gc.totals(), GcTotals::default());
        gc.collect_now().await.unwrap();
        gc.collect_now().await.unwrap();
        let totals = gc.totals();
        assert_eq!((totals.runs, totals.failures), (2, 0));
    }

    #[tokio::test]
    async fn trigger_collects_without_deletions() {
        let f = fixture();
        let gc = f.start(Duration::ZERO);
        f.orphan();
        gc.trigger();
        f.wait_until_collected().await;
    }

    #[tokio::test]
    async fn an_ingest_whose_lease_went_is_collected_without_another_deletion() {
        let f = fixture();
        // Longer than the loop's first interval, so that the collection the deletion starts
        // always finds the ingest too fresh.
        let _gc = f.start_with(
            Duration::ZERO,
            GcOptions {
                released_ingest_idle: Duration::from_secs(2),
                ..GcOptions::default()
            },
        );
        f.meta
            .create_lease("default", "l", BTreeMap::new())
            .unwrap();
        f.meta
            .add_lease_resource(
                "default",
                "l",
                &crate::metadata::LeaseResource::ingest("upload"),
            )
            .unwrap();
        let mut w = f.content.writer("default/upload", 0, None).unwrap();
        w.set_leased(true).unwrap();
        w.write_at(0, b"partial").unwrap();
        drop(w);
        // The lease goes right after the last write: the collection it starts finds the ingest
        // too fresh, and the loop looks again by itself once it is idle long enough.
        f.meta.delete_lease("default", "l").unwrap();
        let gone = async {
            while !f.content.list_statuses().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), gone)
            .await
            .expect("the released ingest goes within 5 s");
    }

    #[tokio::test]
    async fn an_abandoned_unleased_ingest_expires_without_a_deletion() {
        let f = fixture();
        let _gc = f.start_with(
            Duration::ZERO,
            GcOptions {
                ingest_expiry: Duration::from_millis(500),
                ..GcOptions::default()
            },
        );
        let mut w = f.content.writer("default/no-lease", 0, None).unwrap();
        w.write_at(0, b"partial").unwrap();
        drop(w);
        let gone = async {
            while !f.content.list_statuses().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), gone)
            .await
            .expect("the abandoned ingest goes within 5 s");
    }

    #[tokio::test]
    async fn deletions_are_collected_in_the_background() {
        let f = fixture();
        let _gc = f.start(Duration::ZERO);
        f.orphan();
        f.meta
            .create_lease("default", "l", BTreeMap::new())
            .unwrap();
        // A deletion: the loop notices it on its next look.
        f.meta.delete_lease("default", "l").unwrap();
        f.wait_until_collected().await;
    }

    #[tokio::test]
    async fn the_first_collection_follows_the_startup_delay() {
        let f = fixture();
        f.orphan();
        let _gc = f.start(Duration::from_millis(10));
        f.wait_until_collected().await;
    }

    #[tokio::test]
    async fn dropping_the_scheduler_stops_its_loop() {
        let f = fixture();
        let gc = f.start(Duration::from_millis(50));
        drop(gc);
        f.orphan();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(f.meta.get_blob("default", D1).is_ok());
    }

    #[test]
    fn the_interval_keeps_collections_at_the_pause_threshold() {
        let stats = RunStats {
            collections: 2,
            total: Duration::from_millis(20),
        };
        // avg 10 ms: 10 / 0.02 - 10 = 490 ms.
        assert_eq!(stats.interval(0.02), Duration::from_millis(490));
        assert_eq!(stats.interval(0.0), INITIAL_INTERVAL);
        assert_eq!(RunStats::default().interval(0.02), INITIAL_INTERVAL);
        let fast = RunStats {
            collections: 1,
            total: Duration::from_micros(100),
        };
        assert_eq!(fast.interval(0.02), MIN_INTERVAL);
    }
}
