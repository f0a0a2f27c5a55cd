//! Exec and Attach: check the request and the container, then hand out a single-use URL of
//! the streaming server (containerd's `Exec`/`Attach` with `streaming.Server.GetExec`/`GetAttach`).

use berth_proto::runtime::v1::{
    AttachRequest, AttachResponse, ContainerState, ExecRequest, ExecResponse,
};

use super::state_name;
use crate::error::{CriError, Result};
use crate::service::Cri;

/// The checks every streaming request of a container gets: `tty` and `stderr` not both, at
/// least one stream.
fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<()> {
    if tty && stderr {
        return Err(CriError::invalid(
            "stderr",
            "tty and stderr cannot both be true",
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(CriError::invalid(
            "stdin",
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    Ok(())
}

/// The full id of `id` (an id or unique prefix), which must name a running container.
fn running(cri: &Cri, id: &str) -> Result<String> {
    if id.is_empty() {
        return Err(CriError::invalid(
            "container_id",
            "missing required container_id",
        ));
    }
    let container = cri.store.containers.get(id)?;
    let state = container.status().state();
    if state != ContainerState::ContainerRunning {
        return Err(CriError::FailedPrecondition(format!(
            "container is in {} state",
            state_name(state)
        )));
    }
    Ok(container.id().to_owned())
}

/// Exec.
#[tracing::instrument(skip_all, fields(container_id = %req.container_id))]
pub async fn exec(cri: &Cri, mut req: ExecRequest) -> Result<ExecResponse> {
    check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
    if req.cmd.is_empty() {
        return Err(CriError::invalid("cmd", "empty"));
    }
    req.container_id = running(cri, &req.container_id)?;
    let url = cri.stream.exec_url(req)?;
    Ok(ExecResponse { url })
}

/// Attach.
#[tracing::instrument(skip_all, fields(container_id = %req.container_id))]
pub async fn attach(cri: &Cri, mut req: AttachRequest) -> Result<AttachResponse> {
    check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
    req.container_id = running(cri, &req.container_id)?;
    let url = cri.stream.attach_url(req)?;
    Ok(AttachResponse { url })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_flags_are_checked() {
        assert!(check_streams(false, true, true, true).is_err());
        assert!(check_streams(false, false, false, false).is_err());
        assert!(check_streams(true, false, false, true).is_ok());
        assert!(check_streams(false, true, true, false).is_ok());
    }
}
