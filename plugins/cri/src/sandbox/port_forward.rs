//! PortForward: check the sandbox, then hand out a single-use URL of the streaming server
//! (containerd's `PortForward` with `streaming.Server.GetPortForward`).

use berth_proto::runtime::v1::{PortForwardRequest, PortForwardResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;
use crate::store::sandbox::SandboxState;

/// PortForward.
#[tracing::instrument(skip_all, fields(sandbox_id = %req.pod_sandbox_id))]
pub async fn port_forward(cri: &Cri, mut req: PortForwardRequest) -> Result<PortForwardResponse> {
    if req.pod_sandbox_id.is_empty() {
        return Err(CriError::invalid(
            "pod_sandbox_id",
            "missing required pod_sandbox_id",
        ));
    }
    let sandbox = cri.store.sandboxes.get(&req.pod_sandbox_id)?;
    if sandbox.state != SandboxState::Ready {
        return Err(CriError::FailedPrecondition(format!(
            "sandbox container {:?} is not running",
            sandbox.id()
        )));
    }
    req.pod_sandbox_id = sandbox.id().to_owned();
    let url = cri.stream.port_forward_url(req)?;
    Ok(PortForwardResponse { url })
}
