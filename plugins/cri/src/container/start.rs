//! StartContainer (containerd `pkg/cri/server/container_start.go`): FIFOs for the task's
//! stdio, their read ends copied into the CRI log file, the task created from the container
//! record (spec, rootfs mounts, the pod's runtime) and started, and a monitor waiting for its
//! exit. A start that fails leaves the container EXITED with reason `StartError`.

use std::sync::Arc;

use berth_proto::runtime::v1::{ContainerState, StartContainerRequest, StartContainerResponse};
use berth_runtime::CreateOpts;

use super::io::FifoSet;
use super::{blocking, state_name};
use crate::error::{CriError, Result};
use crate::logs::{open_fifo_reader, ContainerLogger, Stream};
use crate::service::{Cri, K8S_NAMESPACE};
use crate::store::container::{now_nanos, Container, START_ERROR_EXIT_CODE, START_ERROR_REASON};
use crate::store::sandbox::SandboxState;

/// StartContainer.
#[tracing::instrument(skip_all, fields(id = %req.container_id))]
pub async fn start_container(
    cri: &Cri,
    req: StartContainerRequest,
) -> Result<StartContainerResponse> {
    let container = cri.store.containers.get(&req.container_id)?;
    container.update_memory(|s| {
        if s.state() != ContainerState::ContainerCreated {
            return Err(CriError::FailedPrecondition(format!(
                "container is in {} state",
                state_name(s.state())
            )));
        }
        if s.removing {
            return Err(CriError::FailedPrecondition(
                "container is in removing state, can't be started".into(),
            ));
        }
        if s.starting {
            return Err(CriError::FailedPrecondition(
                "container is already in starting state".into(),
            ));
        }
        s.starting = true;
        Ok(())
    })?;
    let result = start(cri, &container).await;
    if let Err(e) = &result {
        let message = e.to_string();
        let recorded = container
            .update(move |s| {
                s.pid = 0;
                s.finished_at = now_nanos();
                s.exit_code = START_ERROR_EXIT_CODE;
                s.reason = START_ERROR_REASON.to_owned();
                s.message = message;
                Ok(())
            })
            .await;
        if let Err(e) = recorded {
            tracing::error!(error = %e, "record start failure");
        }
        container.mark_stopped();
    }
    let _ = container.update_memory(|s| {
        s.starting = false;
        Ok(())
    });
    result.map(|()| StartContainerResponse {})
}

/// Opens the log writer on `fifos`' read ends (and berthd's end of stdin).
pub async fn attach_logger(
    cri: &Cri,
    container: &Container,
    fifos: &FifoSet,
) -> Result<ContainerLogger> {
    let path =
        (!container.meta.log_path.is_empty()).then(|| container.meta.log_path.clone().into());
    let logger = ContainerLogger::open(path, cri.config.max_container_log_line_size).await?;
    logger.spawn(Stream::Stdout, open_fifo_reader(&fifos.stdout)?);
    if let Some(stderr) = &fifos.stderr {
        logger.spawn(Stream::Stderr, open_fifo_reader(stderr)?);
    }
    if let Some(stdin) = fifos.stdin.clone() {
        // Read and write: opening never waits for the shim, and the container's stdin stays
        // open (with nothing to read until attach is served) as under containerd.
        let file = blocking(move || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&stdin)
                .map_err(|e| CriError::io("open stdin fifo", &stdin, e))
        })
        .await?;
        container.set_stdin(Some(file));
    }
    Ok(logger)
}

async fn start(cri: &Cri, container: &Arc<Container>) -> Result<()> {
    let id = container.id().to_owned();
    let sandbox = cri
        .store
        .sandboxes
        .get(&container.meta.sandbox_id)
        .map_err(|_| {
            CriError::FailedPrecondition(format!(
                "sandbox {} of container {id} not found",
                container.meta.sandbox_id
            ))
        })?;
    if sandbox.state != SandboxState::Ready {
        return Err(CriError::FailedPrecondition(format!(
            "sandbox container {:?} is not running",
            sandbox.id()
        )));
    }
    let record = super::record(cri, &id).await?;
    let rootfs = {
        let (snapshots, sn, key) = (
            cri.snapshots.clone(),
            record.snapshotter.clone(),
            record.snapshot_key.clone(),
        );
        blocking(move || {
            snapshots
                .mounts(K8S_NAMESPACE, &sn, &key)
                .map_err(|source| CriError::Snapshot {
                    op: format!("mounts of rootfs snapshot {key}"),
                    source,
                })
        })
        .await?
    };
    let config = &container.meta.config;
    let fifos = FifoSet::container(&cri.state, &id, config.tty, config.stdin);
    {
        let f = fifos.clone();
        blocking(move || f.create()).await?;
    }
    let logger = match attach_logger(cri, container, &fifos).await {
        Ok(l) => l,
        Err(e) => {
            container.close_stdin();
            return Err(e);
        }
    };
    let opts = CreateOpts {
        namespace: K8S_NAMESPACE.to_owned(),
        id: id.clone(),
        spec: record.spec.map(|s| s.value).unwrap_or_default(),
        rootfs,
        runtime: record.runtime.name,
        runtime_path: String::new(),
        runtime_options: record.runtime.options.map(|o| prost_types::Any {
            type_url: o.type_url,
            value: o.value,
        }),
        task_options: None,
        io: fifos.task_io(),
        checkpoint: String::new(),
    };
    let task = match cri.tasks.create(opts).await {
        Ok(t) => t,
        Err(e) => {
            logger.abort();
            container.close_stdin();
            return Err(CriError::runtime(
                format!("create task for container {id}"),
                e,
            ));
        }
    };
    let pid = match task.start("").await {
        Ok(pid) => pid,
        Err(e) => {
            let _ = task.kill("", nix::libc::SIGKILL as u32, false).await;
            if let Err(e) = cri.tasks.delete(K8S_NAMESPACE, &id).await {
                tracing::warn!(error = %e, "delete task after failed start");
            }
            logger.abort();
            container.close_stdin();
            return Err(CriError::runtime(
                format!("start task of container {id}"),
                e,
            ));
        }
    };
    container.set_logger(Some(logger));
    container
        .update(move |s| {
            s.pid = pid;
            s.started_at = now_nanos();
            Ok(())
        })
        .await?;
    super::exit::spawn_exit_monitor(cri, container.clone(), task);
    tracing::info!(pid, "container started");
    Ok(())
}
