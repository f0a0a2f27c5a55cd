//! Version, UpdateRuntimeConfig, Status.

use berth_proto::runtime::v1::{
    StatusRequest, StatusResponse, UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse,
    VersionRequest, VersionResponse,
};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// Version.
pub async fn version(_cri: &Cri, _req: VersionRequest) -> Result<VersionResponse> {
    Err(CriError::NotImplemented("Version"))
}

/// UpdateRuntimeConfig.
pub async fn update_runtime_config(
    _cri: &Cri,
    _req: UpdateRuntimeConfigRequest,
) -> Result<UpdateRuntimeConfigResponse> {
    Err(CriError::NotImplemented("UpdateRuntimeConfig"))
}

/// Status.
pub async fn status(_cri: &Cri, _req: StatusRequest) -> Result<StatusResponse> {
    Err(CriError::NotImplemented("Status"))
}
