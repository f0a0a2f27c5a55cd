//! ExecSync.

use berth_proto::runtime::v1::{ExecSyncRequest, ExecSyncResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// ExecSync.
pub async fn exec_sync(_cri: &Cri, _req: ExecSyncRequest) -> Result<ExecSyncResponse> {
    Err(CriError::NotImplemented("ExecSync"))
}
