//! ReopenContainerLog.

use berth_proto::runtime::v1::{ReopenContainerLogRequest, ReopenContainerLogResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// ReopenContainerLog.
pub async fn reopen_container_log(
    _cri: &Cri,
    _req: ReopenContainerLogRequest,
) -> Result<ReopenContainerLogResponse> {
    Err(CriError::NotImplemented("ReopenContainerLog"))
}
