//! UpdateContainerResources.

use berth_proto::runtime::v1::{UpdateContainerResourcesRequest, UpdateContainerResourcesResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// UpdateContainerResources.
pub async fn update_container_resources(
    _cri: &Cri,
    _req: UpdateContainerResourcesRequest,
) -> Result<UpdateContainerResourcesResponse> {
    Err(CriError::NotImplemented("UpdateContainerResources"))
}
