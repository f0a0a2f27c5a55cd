//! PodSandboxStatus.

use berth_proto::runtime::v1::{PodSandboxStatusRequest, PodSandboxStatusResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// PodSandboxStatus.
pub async fn pod_sandbox_status(
    _cri: &Cri,
    _req: PodSandboxStatusRequest,
) -> Result<PodSandboxStatusResponse> {
    Err(CriError::NotImplemented("PodSandboxStatus"))
}
