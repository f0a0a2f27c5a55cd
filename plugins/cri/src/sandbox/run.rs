//! RunPodSandbox.

use berth_proto::runtime::v1::{RunPodSandboxRequest, RunPodSandboxResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// RunPodSandbox.
pub async fn run_pod_sandbox(
    _cri: &Cri,
    _req: RunPodSandboxRequest,
) -> Result<RunPodSandboxResponse> {
    Err(CriError::NotImplemented("RunPodSandbox"))
}
