//! RemoveContainer.

use berth_proto::runtime::v1::{RemoveContainerRequest, RemoveContainerResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// RemoveContainer.
pub async fn remove_container(
    _cri: &Cri,
    _req: RemoveContainerRequest,
) -> Result<RemoveContainerResponse> {
    Err(CriError::NotImplemented("RemoveContainer"))
}
