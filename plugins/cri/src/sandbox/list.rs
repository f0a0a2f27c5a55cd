//! ListPodSandbox.

use berth_proto::runtime::v1::{ListPodSandboxRequest, ListPodSandboxResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// ListPodSandbox.
pub async fn list_pod_sandbox(
    _cri: &Cri,
    _req: ListPodSandboxRequest,
) -> Result<ListPodSandboxResponse> {
    Err(CriError::NotImplemented("ListPodSandbox"))
}
