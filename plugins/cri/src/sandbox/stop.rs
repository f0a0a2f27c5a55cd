//! StopPodSandbox (containerd `pkg/cri/server/sandbox_stop.go`): stop the pod's containers,
//! unmount its /dev/shm, kill and delete the pause task, CNI DEL and remove the network
//! namespace. Idempotent: a stopped pod, a gone netns or an already-deleted network is success.

use berth_errdefs::{Classify, ErrorKind};
use berth_proto::runtime::v1::{
    StopContainerRequest, StopPodSandboxRequest, StopPodSandboxResponse,
};

use super::blocking;
use crate::error::Result;
use crate::service::Cri;
use crate::store::sandbox::{Sandbox, SandboxState};

/// StopPodSandbox.
#[tracing::instrument(skip_all, fields(id = %req.pod_sandbox_id))]
pub async fn stop_pod_sandbox(
    cri: &Cri,
    req: StopPodSandboxRequest,
) -> Result<StopPodSandboxResponse> {
    let sandbox = cri.store.sandboxes.get(&req.pod_sandbox_id)?;
    stop(cri, &sandbox).await?;
    Ok(StopPodSandboxResponse {})
}

/// Stops `sandbox` (also RemovePodSandbox's first step).
pub(crate) async fn stop(cri: &Cri, sandbox: &Sandbox) -> Result<()> {
    let id = sandbox.id().to_owned();
    let containers: Vec<String> = cri
        .store
        .containers
        .list()
        .iter()
        .filter(|c| c.meta.sandbox_id == id)
        .map(|c| c.id().to_owned())
        .collect();
    for container_id in containers {
        let stopped = crate::container::stop::stop_container(
            cri,
            StopContainerRequest {
                container_id,
                timeout: 0,
            },
        )
        .await;
        match stopped {
            // Removed meanwhile: nothing left to stop.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            other => {
                other?;
            }
        }
    }
    {
        let (root, id) = (cri.root.clone(), id.clone());
        blocking(move || super::unmount_shm(&root, &id)).await?;
    }
    super::kill_pause(cri, &id).await?;
    super::delete_task(cri, &id).await?;
    cri.store.sandboxes.update(&id, |s| {
        s.state = SandboxState::NotReady;
        s.pid = 0;
    })?;
    super::teardown_network(
        cri,
        &id,
        &sandbox.metadata.runtime_handler,
        sandbox.metadata.netns_path.clone(),
    )
    .await?;
    tracing::info!(id = %id, "sandbox stopped");
    Ok(())
}
