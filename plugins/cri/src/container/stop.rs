//! StopContainer.

use berth_proto::runtime::v1::{StopContainerRequest, StopContainerResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// StopContainer.
pub async fn stop_container(
    _cri: &Cri,
    _req: StopContainerRequest,
) -> Result<StopContainerResponse> {
    Err(CriError::NotImplemented("StopContainer"))
}
