//! ListContainers.

use berth_proto::runtime::v1::{ListContainersRequest, ListContainersResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// ListContainers.
pub async fn list_containers(
    _cri: &Cri,
    _req: ListContainersRequest,
) -> Result<ListContainersResponse> {
    Err(CriError::NotImplemented("ListContainers"))
}
