//! Exec, Attach.

use berth_proto::runtime::v1::{AttachRequest, AttachResponse, ExecRequest, ExecResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// Exec.
pub async fn exec(_cri: &Cri, _req: ExecRequest) -> Result<ExecResponse> {
    Err(CriError::NotImplemented("Exec"))
}

/// Attach.
pub async fn attach(_cri: &Cri, _req: AttachRequest) -> Result<AttachResponse> {
    Err(CriError::NotImplemented("Attach"))
}
