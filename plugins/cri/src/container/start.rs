//! StartContainer.

use berth_proto::runtime::v1::{StartContainerRequest, StartContainerResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// StartContainer.
pub async fn start_container(
    _cri: &Cri,
    _req: StartContainerRequest,
) -> Result<StartContainerResponse> {
    Err(CriError::NotImplemented("StartContainer"))
}
