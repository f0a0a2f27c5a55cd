//! PortForward.

use berth_proto::runtime::v1::{PortForwardRequest, PortForwardResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// PortForward.
pub async fn port_forward(_cri: &Cri, _req: PortForwardRequest) -> Result<PortForwardResponse> {
    Err(CriError::NotImplemented("PortForward"))
}
