//! CreateContainer.

use berth_proto::runtime::v1::{CreateContainerRequest, CreateContainerResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// CreateContainer.
pub async fn create_container(
    _cri: &Cri,
    _req: CreateContainerRequest,
) -> Result<CreateContainerResponse> {
    Err(CriError::NotImplemented("CreateContainer"))
}
