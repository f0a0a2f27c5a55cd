//! ReopenContainerLog (containerd `pkg/cri/server/container_log_reopen.go`): after the kubelet
//! renamed a running container's log file, the writer opens the path again.

use berth_proto::runtime::v1::{
    ContainerState, ReopenContainerLogRequest, ReopenContainerLogResponse,
};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// ReopenContainerLog.
#[tracing::instrument(skip_all, fields(id = %req.container_id))]
pub async fn reopen_container_log(
    cri: &Cri,
    req: ReopenContainerLogRequest,
) -> Result<ReopenContainerLogResponse> {
    let container = cri.store.containers.get(&req.container_id)?;
    if container.status().state() != ContainerState::ContainerRunning {
        return Err(CriError::FailedPrecondition(
            "container is not running".into(),
        ));
    }
    if let Some(logger) = container.logger() {
        logger.reopen().await?;
    }
    Ok(ReopenContainerLogResponse {})
}
