//! PodSandboxStats, ListPodSandboxStats.

use berth_proto::runtime::v1::{
    ListPodSandboxStatsRequest, ListPodSandboxStatsResponse, PodSandboxStatsRequest,
    PodSandboxStatsResponse,
};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// PodSandboxStats.
pub async fn pod_sandbox_stats(
    _cri: &Cri,
    _req: PodSandboxStatsRequest,
) -> Result<PodSandboxStatsResponse> {
    Err(CriError::NotImplemented("PodSandboxStats"))
}

/// ListPodSandboxStats.
pub async fn list_pod_sandbox_stats(
    _cri: &Cri,
    _req: ListPodSandboxStatsRequest,
) -> Result<ListPodSandboxStatsResponse> {
    Err(CriError::NotImplemented("ListPodSandboxStats"))
}
