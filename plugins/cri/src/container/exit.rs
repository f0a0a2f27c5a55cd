//! What happens when a container's task ends (containerd `startContainerExitMonitor`,
//! `handleContainerExit` and the TaskOOM handler in `pkg/cri/server/events.go`): the exit is
//! waited for through the shim, the reason is `OOMKilled` when the kernel's OOM killer killed
//! in the container's cgroup (its `oom_kill` count rose, or the shim published `/tasks/oom`),
//! the task is deleted (the shim removes the container, its cgroup and rootfs mount, and closes
//! its FIFO ends), the log writer drains, and the status becomes EXITED.

use std::sync::Arc;
use std::time::Duration;

use berth_errdefs::{Classify, ErrorKind};
use berth_proto::containerd::events::TaskOom;
use berth_runtime::Task;
use prost::Message;

use crate::service::{Cri, K8S_NAMESPACE};
use crate::stats::{self, CgroupLayout};
use crate::store::container::{nanos, now_nanos, Container, OOM_EXIT_REASON, UNKNOWN_EXIT_CODE};

/// How long the log writer may take to drain after the task is deleted.
const LOG_DRAIN: Duration = Duration::from_secs(5);

/// The topic of the shim's OOM event.
const TASK_OOM_TOPIC: &str = "/tasks/oom";

/// Waits for the task's init process in the background and records its exit.
pub fn spawn_exit_monitor(cri: &Cri, container: Arc<Container>, task: Arc<Task>) {
    let cri = cri.clone();
    tokio::spawn(async move {
        let (code, at) = match task.wait("").await {
            Ok(resp) => (
                i32::try_from(resp.exit_status).unwrap_or(UNKNOWN_EXIT_CODE),
                resp.exited_at
                    .and_then(|t| std::time::SystemTime::try_from(t).ok())
                    .map(nanos)
                    .unwrap_or_else(now_nanos),
            ),
            Err(e) => {
                // The shim went away. If the daemon itself is going down this task dies with
                // it before the pause ends, and the next start reads the truth from the shim.
                tracing::warn!(id = %container.id(), error = %e, "wait for container task");
                tokio::time::sleep(Duration::from_secs(1)).await;
                (UNKNOWN_EXIT_CODE, now_nanos())
            }
        };
        handle_exit(&cri, &container, code, at).await;
    });
}

/// Whether the kernel's OOM killer killed in the container's cgroup.
async fn oom_killed(container: &Container) -> bool {
    let path = container.meta.cgroups_path.clone();
    if path.is_empty() {
        return false;
    }
    super::blocking(move || Ok(stats::oom_kills(&CgroupLayout::detect(), &path).unwrap_or(0) > 0))
        .await
        .unwrap_or(false)
}

/// Records the exit of `container`'s task: deletes the task, drains the log, writes the exit
/// code, time and reason (unless an exit was recorded before), and wakes StopContainer.
pub async fn handle_exit(cri: &Cri, container: &Arc<Container>, code: i32, exited_at: i64) {
    let id = container.id().to_owned();
    // Read before the delete: runc removes the cgroup with the container.
    let oom = oom_killed(container).await;
    match cri.tasks.delete(K8S_NAMESPACE, &id).await {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound || e.is_closed() => {}
        Err(e) => tracing::warn!(id = %id, error = %e, "delete exited container task"),
    }
    if let Some(logger) = container.logger() {
        if !logger.wait(LOG_DRAIN).await {
            tracing::warn!(id = %id, "container log writer did not finish; stopped it");
        }
    }
    container.set_logger(None);
    container.close_stdin();
    let result = container
        .update(move |s| {
            if s.finished_at == 0 {
                s.pid = 0;
                s.finished_at = exited_at;
                s.exit_code = code;
            }
            if oom {
                s.reason = OOM_EXIT_REASON.to_owned();
            }
            s.unknown = false;
            Ok(())
        })
        .await;
    if let Err(e) = result {
        tracing::error!(id = %id, error = %e, "record container exit");
    }
    tracing::info!(id = %id, exit_code = code, oom, "container exited");
    container.mark_stopped();
}

/// Marks containers `OOMKilled` when their shim says the OOM killer struck (containerd's
/// TaskOOM handler). Runs for the daemon's lifetime.
pub fn spawn_oom_monitor(cri: &Cri) {
    let filter = match berth_filters::parse_any(&[format!("topic==\"{TASK_OOM_TOPIC}\"")]) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "oom event filter");
            return;
        }
    };
    let mut events = cri.events.subscribe(filter);
    let cri = cri.clone();
    tokio::spawn(async move {
        while let Some(envelope) = events.recv().await {
            if envelope.namespace != K8S_NAMESPACE {
                continue;
            }
            let Ok(oom) = TaskOom::decode(envelope.event.value.as_slice()) else {
                continue;
            };
            let Ok(container) = cri.store.containers.get(&oom.container_id) else {
                continue;
            };
            if container.id() != oom.container_id {
                continue;
            }
            tracing::info!(id = %oom.container_id, "container OOM event");
            let result = container
                .update(|s| {
                    s.reason = OOM_EXIT_REASON.to_owned();
                    Ok(())
                })
                .await;
            if let Err(e) = result {
                tracing::warn!(id = %oom.container_id, error = %e, "record OOM");
            }
        }
    });
}
