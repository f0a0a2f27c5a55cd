//! The monitor's loop (containerd `runtime/restart/monitor`): every `interval`, and at once for
//! each `/tasks/exit` of an init process, the containers carrying [`label::STATUS`] have their
//! task compared with the desired status and, when they differ, started again (`startChange`:
//! count label, kill what is left, create with the log URI, start) or stopped (`stopChange`).
//!
//! Back-off: a container restarted again within [`RESET_AFTER`] of its last restart waits
//! 100 ms, then 200 ms, ... up to [`MAX_BACKOFF`] before the next one (Docker's schedule). At
//! most one change per container runs at a time; an exit seen meanwhile is looked at again when
//! it ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use berth_core::events::Subscription;
use berth_core::MetadataStore;
use berth_proto::containerd::events::TaskExit;
use berth_proto::containerd::services::tasks::v1::tasks_server::Tasks;
use berth_proto::containerd::services::tasks::v1::{
    CreateTaskRequest, DeleteTaskRequest, StartRequest,
};
use berth_proto::containerd::v1::types::Status as TaskStatus;
use berth_registry::{Classify, ErrorKind};
use berth_runtime::TaskManager;
use berth_services::namespace::NAMESPACE_HEADER;
use berth_services::tasks::TasksService;
use prost::Message;

use crate::label;
use crate::policy::Policy;

/// A container restarted again within this long of its previous restart backs off.
pub const RESET_AFTER: Duration = Duration::from_secs(10);
/// The first back-off delay; it doubles with each quick restart.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest back-off delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// SIGKILL, for `killTask`.
const SIGKILL: u32 = 9;

/// Why a change could not be applied (logged; the next exit or interval tries again).
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The metadata store refused.
    #[error("{op} container {id}: {source}")]
    Metadata {
        /// What was done.
        op: &'static str,
        /// The container.
        id: String,
        /// The store's error.
        #[source]
        source: berth_core::MetadataError,
    },
    /// A Tasks call failed.
    #[error("{op} task {id}: {message}")]
    Task {
        /// What was done.
        op: &'static str,
        /// The container.
        id: String,
        /// The status message.
        message: String,
    },
    /// A blocking store call panicked or was cancelled.
    #[error("metadata call did not finish: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What a container needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// Start its task again, as the `count`-th restart, with stdout and stderr to `log_uri`;
    /// the old task ended with `exit`.
    Start {
        count: u64,
        log_uri: String,
        exit: u32,
    },
    /// Kill and delete its task.
    Stop,
}

#[derive(Debug, Default)]
struct Entry {
    /// A change for this container is being decided or applied.
    busy: bool,
    /// Another look was asked for while busy.
    again: bool,
    /// Restarts in a row, each within [`RESET_AFTER`] of the previous.
    streak: u32,
    /// When the monitor last started the container's task.
    last_start: Option<Instant>,
    /// The exit status of a task the monitor deleted and has not yet replaced (a create that
    /// failed): `on-failure` still knows it was a failure (containerd's known issue loses it).
    last_exit: Option<u32>,
}

type Key = (String, String);

/// The restart monitor; its loop runs on the tokio runtime it was started on.
#[derive(Debug)]
pub struct Monitor {
    meta: Arc<MetadataStore>,
    tasks: Arc<TaskManager>,
    service: TasksService,
    interval: Duration,
    entries: Mutex<HashMap<Key, Entry>>,
}

/// The delay before the next restart of a container restarted `streak` times in a row.
pub fn backoff(streak: u32) -> Duration {
    if streak == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (streak - 1).min(16);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// containerd's `ProcessStatus` string of a task status.
fn status_name(status: i32) -> &'static str {
    match TaskStatus::try_from(status).unwrap_or(TaskStatus::Unknown) {
        TaskStatus::Created => "created",
        TaskStatus::Running => "running",
        TaskStatus::Stopped => "stopped",
        TaskStatus::Paused => "paused",
        TaskStatus::Pausing => "pausing",
        TaskStatus::Unknown => "unknown",
    }
}

fn request<T>(ns: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(value) = ns.parse() {
        req.metadata_mut().insert(NAMESPACE_HEADER, value);
    }
    req
}

/// The restarted task's stdout/stderr: the log URI label, else the (deprecated) log path label
/// as a `file://` URI, else nothing (containerd's `cio.NullIO`).
fn log_uri(labels: &BTreeMap<String, String>) -> String {
    if let Some(uri) = labels.get(label::LOG_URI).filter(|u| !u.is_empty()) {
        return uri.clone();
    }
    match labels.get(label::LOG_PATH).filter(|p| !p.is_empty()) {
        Some(path) => {
            tracing::warn!(
                label = label::LOG_PATH,
                "label is deprecated since containerd 1.5; use {}",
                label::LOG_URI
            );
            format!("file://{path}")
        }
        None => String::new(),
    }
}

impl Monitor {
    /// A monitor over the stores; [`Monitor::start`] runs it.
    pub fn new(
        meta: Arc<MetadataStore>,
        tasks: Arc<TaskManager>,
        service: TasksService,
        interval: Duration,
    ) -> Arc<Monitor> {
        Arc::new(Monitor {
            meta,
            tasks,
            service,
            interval,
            entries: Mutex::new(HashMap::new()),
        })
    }

    /// The reconcile interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Runs the loop on `runtime`: a reconcile now and every interval, and a look at each
    /// container whose init process exits (`exits` carries `/tasks/exit`).
    pub fn start(self: &Arc<Self>, mut exits: Subscription, runtime: &tokio::runtime::Handle) {
        let monitor = self.clone();
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(monitor.interval.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => monitor.clone().reconcile_all().await,
                    envelope = exits.recv() => {
                        let Some(envelope) = envelope else { break };
                        match TaskExit::decode(envelope.event.value.as_slice()) {
                            Ok(exit) if exit.id == exit.container_id || exit.id.is_empty() => {
                                monitor.clone().look(envelope.namespace, exit.container_id);
                            }
                            Ok(_) => {}
                            Err(e) => tracing::debug!(error = %e, "undecodable task exit"),
                        }
                    }
                }
            }
        });
    }

    /// Looks at every container carrying the status label (containerd's `reconcile`).
    pub async fn reconcile_all(self: Arc<Self>) {
        let meta = self.meta.clone();
        let all = match tokio::task::spawn_blocking(move || meta.all_containers()).await {
            Ok(Ok(all)) => all,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "restart monitor: list containers");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "restart monitor: list containers");
                return;
            }
        };
        for (ns, c) in all {
            if c.labels.contains_key(label::STATUS) {
                self.clone().look(ns, c.id);
            }
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides and applies what container `id` of `ns` needs, in a task of its own; one at a
    /// time per container.
    fn look(self: Arc<Self>, ns: String, id: String) {
        let key = (ns, id);
        {
            let mut entries = self.entries();
            let entry = entries.entry(key.clone()).or_default();
            if entry.busy {
                entry.again = true;
                return;
            }
            entry.busy = true;
        }
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.reconcile_one(&key).await {
                    tracing::error!(namespace = %key.0, id = %key.1, error = %e, "restart monitor: apply change");
                }
                let mut entries = self.entries();
                let Some(entry) = entries.get_mut(&key) else {
                    return;
                };
                if entry.again {
                    entry.again = false;
                    continue;
                }
                entry.busy = false;
                return;
            }
        });
    }

    /// Containerd's `monitor` for one container: what it needs, if anything.
    async fn decide(&self, ns: &str, id: &str) -> Result<Option<Change>, MonitorError> {
        let meta = self.meta.clone();
        let (n, i) = (ns.to_owned(), id.to_owned());
        let container =
            match tokio::task::spawn_blocking(move || meta.get_container(&n, &i)).await? {
                Ok(c) => c,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    self.entries().remove(&(ns.to_owned(), id.to_owned()));
                    return Ok(None);
                }
                Err(source) => {
                    return Err(MonitorError::Metadata {
                        op: "get",
                        id: id.to_owned(),
                        source,
                    })
                }
            };
        let Some(desired) = container.labels.get(label::STATUS) else {
            return Ok(None);
        };
        let state = match self.tasks.get(ns, id) {
            Ok(task) => task.state("").await.ok(),
            Err(_) => None,
        };
        let current = state.as_ref().map(|s| status_name(s.status));
        if current == Some(desired.as_str()) {
            return Ok(None);
        }
        Ok(match desired.as_str() {
            "running" => {
                // A task that is gone counts as exit status 0, as in containerd 1.7, unless
                // the monitor itself deleted it.
                let exit = match &state {
                    Some(s) => s.exit_status,
                    None => self
                        .entries()
                        .get(&(ns.to_owned(), id.to_owned()))
                        .and_then(|e| e.last_exit)
                        .unwrap_or(0),
                };
                if !Policy::should_restart(&container.labels, exit) {
                    return Ok(None);
                }
                let count = container
                    .labels
                    .get(label::COUNT)
                    .and_then(|c| c.parse::<u64>().ok())
                    .unwrap_or(0);
                Some(Change::Start {
                    count: count + 1,
                    log_uri: log_uri(&container.labels),
                    exit,
                })
            }
            "stopped" if state.is_some() => Some(Change::Stop),
            _ => None,
        })
    }

    #[tracing::instrument(skip_all, fields(namespace = %key.0, id = %key.1))]
    async fn reconcile_one(&self, key: &Key) -> Result<(), MonitorError> {
        let (ns, id) = (key.0.as_str(), key.1.as_str());
        let Some(change) = self.decide(ns, id).await? else {
            return Ok(());
        };
        let change = match change {
            Change::Stop => return self.kill_task(ns, id).await,
            Change::Start { .. } => {
                let delay = {
                    let mut entries = self.entries();
                    let entry = entries.entry(key.clone()).or_default();
                    let quick = entry.last_start.is_some_and(|t| t.elapsed() < RESET_AFTER);
                    entry.streak = if quick { entry.streak + 1 } else { 0 };
                    backoff(entry.streak)
                };
                if delay.is_zero() {
                    change
                } else {
                    tracing::info!(?delay, "restart monitor: backing off");
                    tokio::time::sleep(delay).await;
                    // The user may have stopped or removed it meanwhile.
                    match self.decide(ns, id).await? {
                        Some(change @ Change::Start { .. }) => change,
                        _ => return Ok(()),
                    }
                }
            }
        };
        let Change::Start {
            count,
            log_uri,
            exit,
        } = change
        else {
            return Ok(());
        };
        self.entries().entry(key.clone()).or_default().last_exit = Some(exit);
        self.start_task(ns, id, count, &log_uri).await?;
        if let Some(entry) = self.entries().get_mut(key) {
            entry.last_exit = None;
        }
        Ok(())
    }

    /// containerd's `startChange.apply`: record the count, kill what is left, create the task
    /// with the log URI and start it.
    async fn start_task(
        &self,
        ns: &str,
        id: &str,
        count: u64,
        log_uri: &str,
    ) -> Result<(), MonitorError> {
        self.set_count(ns, id, count).await?;
        if let Err(e) = self.kill_task(ns, id).await {
            tracing::warn!(error = %e, "restart monitor: clean up the old task");
        }
        let task_err = |op: &'static str| {
            let id = id.to_owned();
            move |s: tonic::Status| MonitorError::Task {
                op,
                id,
                message: s.message().to_owned(),
            }
        };
        self.service
            .create(request(
                ns,
                CreateTaskRequest {
                    container_id: id.to_owned(),
                    stdout: log_uri.to_owned(),
                    stderr: log_uri.to_owned(),
                    ..Default::default()
                },
            ))
            .await
            .map_err(task_err("create"))?;
        {
            let mut entries = self.entries();
            entries
                .entry((ns.to_owned(), id.to_owned()))
                .or_default()
                .last_start = Some(Instant::now());
        }
        self.service
            .start(request(
                ns,
                StartRequest {
                    container_id: id.to_owned(),
                    exec_id: String::new(),
                },
            ))
            .await
            .map_err(task_err("start"))?;
        tracing::info!(count, "restart monitor: task started again");
        Ok(())
    }

    async fn set_count(&self, ns: &str, id: &str, count: u64) -> Result<(), MonitorError> {
        let meta = self.meta.clone();
        let (n, i) = (ns.to_owned(), id.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut c = meta.get_container(&n, &i)?;
            c.labels.insert(label::COUNT.to_owned(), count.to_string());
            meta.update_container(&n, c, &[format!("labels.{}", label::COUNT)])
        })
        .await?
        .map(|_| ())
        .map_err(|source| MonitorError::Metadata {
            op: "update",
            id: id.to_owned(),
            source,
        })
    }

    /// containerd's `killTask`: SIGKILL every process of a task that is not stopped, wait for
    /// it, delete it. No task: nothing to do.
    async fn kill_task(&self, ns: &str, id: &str) -> Result<(), MonitorError> {
        let Ok(task) = self.tasks.get(ns, id) else {
            return Ok(());
        };
        let stopped = task
            .state("")
            .await
            .is_ok_and(|s| s.status == TaskStatus::Stopped as i32);
        if !stopped {
            if let Err(e) = task.kill("", SIGKILL, true).await {
                tracing::debug!(error = %e, "restart monitor: kill");
            }
            if let Err(e) = task.wait("").await {
                tracing::debug!(error = %e, "restart monitor: wait");
            }
        }
        match self
            .service
            .delete(request(
                ns,
                DeleteTaskRequest {
                    container_id: id.to_owned(),
                },
            ))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(MonitorError::Task {
                op: "delete",
                id: id.to_owned(),
                message: s.message().to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn log_uri_prefers_the_uri_label() {
        let mut labels = BTreeMap::new();
        assert_eq!(log_uri(&labels), "");
        labels.insert(label::LOG_PATH.to_owned(), "/var/log/c.log".to_owned());
        assert_eq!(log_uri(&labels), "file:///var/log/c.log");
        labels.insert(
            label::LOG_URI.to_owned(),
            "binary:///bin/logger?x=1".to_owned(),
        );
        assert_eq!(log_uri(&labels), "binary:///bin/logger?x=1");
    }

    #[test]
    fn statuses_read_as_containerd_names() {
        assert_eq!(status_name(TaskStatus::Running as i32), "running");
        assert_eq!(status_name(TaskStatus::Stopped as i32), "stopped");
        assert_eq!(status_name(42), "unknown");
    }
}
