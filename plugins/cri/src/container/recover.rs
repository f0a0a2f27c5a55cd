//! Rebuilding the container store when the plugin starts, also after `kill -9` (containerd
//! `loadContainer` in `pkg/cri/server/restart.go`): every `k8s.io` record of kind `container`,
//! its status file, and its task as the task manager found it again. A running task gets its
//! log writer back on the FIFOs the shim kept open (nothing written meanwhile is lost: it
//! waited in the pipes) and an exit monitor; a task that ended meanwhile is recorded and
//! deleted; a container that was running and has no task any more becomes EXITED with exit
//! code 255, reason `Unknown`.

use std::sync::Arc;

use berth_errdefs::{Classify, ErrorKind};
use berth_filters::Filter;
use berth_proto::containerd::v1::types::Status as TaskStatus;
use berth_proto::runtime::v1::ContainerState;

use super::io::FifoSet;
use super::{blocking, task_of};
use crate::error::{CriError, Result};
use crate::logs::{open_fifo_reader, ContainerLogger, Stream};
use crate::service::{Cri, K8S_NAMESPACE};
use crate::store::container::{
    container_dir, load_status, metadata_of, nanos, now_nanos, write_status, Container,
    ContainerMetadata, Status, UNKNOWN_EXIT_CODE, UNKNOWN_EXIT_REASON,
};

/// Rebuilds the container store from the metadata store, the status files and the live
/// tasks, and starts the OOM event monitor. A container that cannot be loaded is logged and
/// left out, as containerd does.
pub async fn recover(cri: &Cri) -> Result<()> {
    super::exit::spawn_oom_monitor(cri);
    let meta = cri.meta.clone();
    let records = blocking(move || {
        meta.list_containers(K8S_NAMESPACE, &Filter::default())
            .map_err(|e| CriError::metadata("list containers", e))
    })
    .await?;
    for record in records {
        let Some(decoded) = metadata_of(&record) else {
            continue;
        };
        match decoded {
            Ok(m) => {
                let id = m.id.clone();
                let container = load(cri, m).await;
                tracing::info!(id = %id, state = ?container.status().state(), "container loaded");
                cri.store.containers.add(container);
            }
            Err(e) => tracing::warn!(id = %record.id, error = %e, "skipping container record"),
        }
    }
    Ok(())
}

/// Reads what the shim left in the FIFOs of a container whose task is there.
fn reattach(cri: &Cri, meta: &ContainerMetadata, logger: &ContainerLogger) {
    let fifos = FifoSet::container(&cri.state, &meta.id, meta.config.tty, false);
    let streams = [
        (Stream::Stdout, Some(fifos.stdout)),
        (Stream::Stderr, fifos.stderr),
    ];
    for (stream, path) in streams {
        let Some(path) = path else { continue };
        match open_fifo_reader(&path) {
            Ok(reader) => logger.spawn(stream, reader),
            Err(e) => tracing::warn!(id = %meta.id, error = %e, "reopen container output"),
        }
    }
}

async fn open_logger(cri: &Cri, meta: &ContainerMetadata) -> Option<ContainerLogger> {
    let path = (!meta.log_path.is_empty()).then(|| meta.log_path.clone().into());
    match ContainerLogger::open(path, cri.config.max_container_log_line_size).await {
        Ok(l) => {
            reattach(cri, meta, &l);
            Some(l)
        }
        Err(e) => {
            tracing::warn!(id = %meta.id, error = %e, "reopen container log");
            None
        }
    }
}

/// berthd's end of a running container's stdin FIFO, held again so its stdin stays open.
async fn hold_stdin(cri: &Cri, id: &str) -> Option<std::fs::File> {
    let path = super::io::io_dir(&cri.state, id).join("stdin");
    let opened = blocking(move || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| CriError::io("open stdin fifo", &path, e))
    })
    .await;
    match opened {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(id = %id, error = %e, "reopen container stdin");
            None
        }
    }
}

async fn load(cri: &Cri, meta: ContainerMetadata) -> Arc<Container> {
    let id = meta.id.clone();
    let dir = container_dir(&cri.root, &id);
    let loaded = {
        let dir = dir.clone();
        blocking(move || load_status(&dir)).await
    };
    let mut status = match loaded {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(id = %id, error = %e, "container status unreadable");
            Status {
                unknown: true,
                exit_code: UNKNOWN_EXIT_CODE,
                reason: UNKNOWN_EXIT_REASON.to_owned(),
                ..Default::default()
            }
        }
    };
    let before = status.clone();
    let container = Arc::new(Container::new(meta.clone(), status.clone(), dir.clone()));
    let task = task_of(cri, &container);
    let state = match &task {
        Some(t) => match t.state("").await {
            Ok(s) => Some(s),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(id = %id, error = %e, "task state unreadable");
                status.unknown = true;
                None
            }
        },
        None => None,
    };
    let mut monitor = None;
    let mut ended = None;
    match (task, state) {
        (Some(task), Some(s)) => {
            match TaskStatus::try_from(s.status).unwrap_or(TaskStatus::Unknown) {
                TaskStatus::Created => {
                    // Made by a start the restart interrupted: the container stays CREATED.
                    let _ = task.kill("", nix::libc::SIGKILL as u32, false).await;
                    if let Err(e) = cri.tasks.delete(K8S_NAMESPACE, &id).await {
                        tracing::warn!(id = %id, error = %e, "delete half-started task");
                    }
                    if status.state() != ContainerState::ContainerCreated {
                        status.unknown = true;
                    }
                }
                TaskStatus::Running | TaskStatus::Paused | TaskStatus::Pausing => {
                    if status.state() != ContainerState::ContainerRunning && !status.unknown {
                        // Started, but the daemon died before it wrote so.
                        status.started_at = now_nanos();
                        status.pid = task.pid();
                        status.finished_at = 0;
                    }
                    container.set_logger(open_logger(cri, &meta).await);
                    if meta.config.stdin {
                        container.set_stdin(hold_stdin(cri, &id).await);
                    }
                    monitor = Some(task);
                }
                TaskStatus::Stopped => {
                    container.set_logger(open_logger(cri, &meta).await);
                    let at = s
                        .exited_at
                        .and_then(|t| std::time::SystemTime::try_from(t).ok())
                        .map(nanos)
                        .unwrap_or_else(now_nanos);
                    ended = Some((
                        i32::try_from(s.exit_status).unwrap_or(UNKNOWN_EXIT_CODE),
                        at,
                    ));
                }
                TaskStatus::Unknown => status.unknown = true,
            }
        }
        _ => {
            if status.state() == ContainerState::ContainerRunning {
                status.finished_at = now_nanos();
                status.exit_code = UNKNOWN_EXIT_CODE;
                status.reason = UNKNOWN_EXIT_REASON.to_owned();
                status.pid = 0;
            }
        }
    }
    if status != before {
        let (s, d) = (status.clone(), dir.clone());
        if let Err(e) = blocking(move || write_status(&d, &s)).await {
            tracing::warn!(id = %id, error = %e, "write recovered status");
        }
    }
    let recovered = status.clone();
    let _ = container.update_memory(move |s| {
        *s = recovered;
        Ok(())
    });
    if status.state() == ContainerState::ContainerExited {
        container.mark_stopped();
    }
    if let Some(task) = monitor {
        super::exit::spawn_exit_monitor(cri, container.clone(), task);
    }
    if let Some((code, at)) = ended {
        super::exit::handle_exit(cri, &container, code, at).await;
    }
    container
}

/// [`recover`] from the plugin's (synchronous) init, after the sandboxes: on a thread of its
/// own blocking on the daemon's runtime (the monitors and log writers it starts stay on that
/// runtime). Without a runtime, nothing is recovered (unit tests).
pub fn recover_at_start(cri: &Cri) -> Result<()> {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no async runtime while loading; containers not recovered");
        return Ok(());
    };
    let cri = cri.clone();
    std::thread::spawn(move || handle.block_on(recover(&cri)))
        .join()
        .map_err(|_| CriError::Internal("container recovery panicked".into()))?
}
