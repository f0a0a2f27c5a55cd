//! RemovePodSandbox (containerd `pkg/cri/server/sandbox_remove.go`): stop the pod if needed,
//! remove its containers, then the pause task, rootfs snapshot, container record and files,
//! and release the name. A sandbox that does not exist is success, as containerd.

use berth_errdefs::{Classify, ErrorKind};
use berth_proto::runtime::v1::{
    RemoveContainerRequest, RemovePodSandboxRequest, RemovePodSandboxResponse,
};

use super::blocking;
use crate::error::{CriError, Result};
use crate::service::Cri;

/// RemovePodSandbox.
#[tracing::instrument(skip_all, fields(id = %req.pod_sandbox_id))]
pub async fn remove_pod_sandbox(
    cri: &Cri,
    req: RemovePodSandboxRequest,
) -> Result<RemovePodSandboxResponse> {
    let sandbox = match cri.store.sandboxes.get(&req.pod_sandbox_id) {
        Ok(s) => s,
        Err(CriError::NotFound { .. }) => {
            tracing::debug!("sandbox not found, nothing to remove");
            return Ok(RemovePodSandboxResponse {});
        }
        Err(e) => return Err(e),
    };
    let id = sandbox.id().to_owned();
    // Forcibly stop, whatever the state: this also closes the netns of a pod whose pause
    // process died.
    super::stop::stop(cri, &sandbox).await?;
    if let Some(path) = sandbox.netns_path() {
        if crate::netns::is_pinned(path) {
            return Err(CriError::FailedPrecondition(format!(
                "sandbox network namespace {} is not fully closed",
                path.display()
            )));
        }
    }
    let containers: Vec<String> = cri
        .store
        .containers
        .list()
        .iter()
        .filter(|c| c.meta.sandbox_id == id)
        .map(|c| c.id().to_owned())
        .collect();
    for container_id in containers {
        match crate::container::remove::remove_container(
            cri,
            RemoveContainerRequest {
                container_id: container_id.clone(),
            },
        )
        .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    {
        let (root, id) = (cri.root.clone(), id.clone());
        blocking(move || super::remove_files(&root, &id)).await?;
    }
    super::remove_records(cri, &id).await?;
    cri.store.sandboxes.delete(&id);
    cri.store.sandboxes.release_name(&sandbox.metadata.name);
    tracing::info!(id = %id, "sandbox removed");
    Ok(RemovePodSandboxResponse {})
}
