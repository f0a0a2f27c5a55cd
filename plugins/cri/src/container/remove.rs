//! RemoveContainer (containerd `pkg/cri/server/container_remove.go`): a running container is
//! killed first; then its task, container record, rootfs snapshot, status directory and FIFOs
//! go. An unknown id is not an error.

use std::sync::Arc;
use std::time::Duration;

use berth_errdefs::{Classify, ErrorKind};
use berth_proto::runtime::v1::{ContainerState, RemoveContainerRequest, RemoveContainerResponse};

use super::blocking;
use crate::error::{CriError, Result};
use crate::service::{Cri, K8S_NAMESPACE};
use crate::store::container::Container;

/// RemoveContainer.
#[tracing::instrument(skip_all, fields(id = %req.container_id))]
pub async fn remove_container(
    cri: &Cri,
    req: RemoveContainerRequest,
) -> Result<RemoveContainerResponse> {
    let container = match cri.store.containers.get(&req.container_id) {
        Ok(c) => c,
        Err(CriError::NotFound { .. }) => return Ok(RemoveContainerResponse {}),
        Err(e) => return Err(e),
    };
    remove(cri, &container).await?;
    Ok(RemoveContainerResponse {})
}

/// Removes `container` (used by RemovePodSandbox too).
pub async fn remove(cri: &Cri, container: &Arc<Container>) -> Result<()> {
    let state = container.status().state();
    if state == ContainerState::ContainerRunning || state == ContainerState::ContainerUnknown {
        super::stop::stop(cri, container, Duration::ZERO).await?;
    }
    container.update_memory(|s| {
        match s.state() {
            ContainerState::ContainerRunning => {
                return Err(CriError::FailedPrecondition(
                    "container is still running, to stop first".into(),
                ))
            }
            ContainerState::ContainerUnknown => {
                return Err(CriError::FailedPrecondition(
                    "container state is unknown, to stop first".into(),
                ))
            }
            _ => {}
        }
        if s.starting {
            return Err(CriError::FailedPrecondition(
                "container is in starting state, can't be removed".into(),
            ));
        }
        if s.removing {
            return Err(CriError::FailedPrecondition(
                "container is already in removing state".into(),
            ));
        }
        s.removing = true;
        Ok(())
    })?;
    let result = remove_everything(cri, container).await;
    if result.is_err() {
        let _ = container.update_memory(|s| {
            s.removing = false;
            Ok(())
        });
        return result;
    }
    if let Some(logger) = container.logger() {
        logger.abort();
    }
    container.set_logger(None);
    container.close_stdin();
    cri.store.containers.delete(container.id());
    Ok(())
}

async fn remove_everything(cri: &Cri, container: &Arc<Container>) -> Result<()> {
    let id = container.id().to_owned();
    // A CREATED container whose start failed half-way may still have a task.
    match cri.tasks.delete(K8S_NAMESPACE, &id).await {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound || e.is_closed() => {}
        Err(e) => {
            return Err(CriError::runtime(
                format!("delete task of container {id}"),
                e,
            ))
        }
    }
    let (meta, snapshots) = (cri.meta.clone(), cri.snapshots.clone());
    let state = cri.state.clone();
    let sn = cri.config.containerd.snapshotter.clone();
    let dir = container.dir().to_path_buf();
    blocking(move || {
        // The record first: with it gone the snapshot is unreferenced even if removing it
        // fails now, and the collector takes it.
        let record = meta.get_container(K8S_NAMESPACE, &id).ok();
        match meta.delete_container(K8S_NAMESPACE, &id) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(CriError::metadata(format!("delete container {id}"), e)),
        }
        let (sn, key) = record
            .map(|r| (r.snapshotter, r.snapshot_key))
            .unwrap_or((sn, id.clone()));
        if !key.is_empty() {
            match snapshots.remove(K8S_NAMESPACE, &sn, &key) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(id = %id, error = %e, "remove rootfs snapshot; left for gc")
                }
            }
        }
        super::io::remove_io_dir(&state, &id)?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CriError::io("remove container directory", &dir, e)),
        }
    })
    .await
}
