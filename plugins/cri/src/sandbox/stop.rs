//! StopPodSandbox.

use berth_proto::runtime::v1::{StopPodSandboxRequest, StopPodSandboxResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// StopPodSandbox.
pub async fn stop_pod_sandbox(
    _cri: &Cri,
    _req: StopPodSandboxRequest,
) -> Result<StopPodSandboxResponse> {
    Err(CriError::NotImplemented("StopPodSandbox"))
}
