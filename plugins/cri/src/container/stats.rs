//! ContainerStats, ListContainerStats.

use berth_proto::runtime::v1::{
    ContainerStatsRequest, ContainerStatsResponse, ListContainerStatsRequest,
    ListContainerStatsResponse,
};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// ContainerStats.
pub async fn container_stats(
    _cri: &Cri,
    _req: ContainerStatsRequest,
) -> Result<ContainerStatsResponse> {
    Err(CriError::NotImplemented("ContainerStats"))
}

/// ListContainerStats.
pub async fn list_container_stats(
    _cri: &Cri,
    _req: ListContainerStatsRequest,
) -> Result<ListContainerStatsResponse> {
    Err(CriError::NotImplemented("ListContainerStats"))
}
