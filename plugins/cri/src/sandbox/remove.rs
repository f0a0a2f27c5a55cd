//! RemovePodSandbox.

use berth_proto::runtime::v1::{RemovePodSandboxRequest, RemovePodSandboxResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// RemovePodSandbox.
pub async fn remove_pod_sandbox(
    _cri: &Cri,
    _req: RemovePodSandboxRequest,
) -> Result<RemovePodSandboxResponse> {
    Err(CriError::NotImplemented("RemovePodSandbox"))
}
