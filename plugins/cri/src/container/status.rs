//! ContainerStatus.

use berth_proto::runtime::v1::{ContainerStatusRequest, ContainerStatusResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// ContainerStatus.
pub async fn container_status(
    _cri: &Cri,
    _req: ContainerStatusRequest,
) -> Result<ContainerStatusResponse> {
    Err(CriError::NotImplemented("ContainerStatus"))
}
