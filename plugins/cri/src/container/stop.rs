//! StopContainer (containerd `pkg/cri/server/container_stop.go`): the image's stop signal
//! (SIGTERM by default), `timeout` seconds for the container to end, then SIGKILL. Stopping a
//! container that does not run succeeds at once.

use std::sync::Arc;
use std::time::Duration;

use berth_errdefs::{Classify, ErrorKind};
use berth_proto::runtime::v1::{ContainerState, StopContainerRequest, StopContainerResponse};
use nix::sys::signal::Signal;

use super::task_of;
use crate::error::{CriError, Result};
use crate::service::Cri;
use crate::store::container::{now_nanos, Container, UNKNOWN_EXIT_CODE};

/// How long the exit of a SIGKILLed container may take to be recorded.
const KILL_WAIT: Duration = Duration::from_secs(60);

/// StopContainer.
#[tracing::instrument(skip_all, fields(id = %req.container_id, timeout = req.timeout))]
pub async fn stop_container(cri: &Cri, req: StopContainerRequest) -> Result<StopContainerResponse> {
    let container = cri.store.containers.get(&req.container_id)?;
    let timeout = Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
    stop(cri, &container, timeout).await?;
    Ok(StopContainerResponse {})
}

/// A signal by name (`SIGTERM`, `TERM`) or number (`15`), as moby's `signal.ParseSignal`.
pub fn parse_signal(name: &str) -> Result<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n)
            .map(|s| s as i32)
            .map_err(|_| CriError::invalid("stop signal", format!("invalid signal {name:?}")));
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<Signal>()
        .map(|s| s as i32)
        .map_err(|_| CriError::invalid("stop signal", format!("invalid signal {name:?}")))
}

/// Stops `container` (`timeout` zero: SIGKILL at once).
pub async fn stop(cri: &Cri, container: &Arc<Container>, timeout: Duration) -> Result<()> {
    let id = container.id().to_owned();
    let state = container.status().state();
    if state != ContainerState::ContainerRunning && state != ContainerState::ContainerUnknown {
        tracing::debug!(state = ?state, "container is not running");
        return Ok(());
    }
    let Some(task) = task_of(cri, container) else {
        if state == ContainerState::ContainerUnknown {
            // Nothing runs: record an unknown end so the container can be removed.
            super::exit::handle_exit(cri, container, UNKNOWN_EXIT_CODE, now_nanos()).await;
        }
        return Ok(());
    };
    if state == ContainerState::ContainerUnknown {
        // No monitor waits for it yet.
        super::exit::spawn_exit_monitor(cri, container.clone(), task.clone());
    }
    if !timeout.is_zero() {
        let name = if container.meta.stop_signal.is_empty() {
            "SIGTERM"
        } else {
            container.meta.stop_signal.as_str()
        };
        let signal = parse_signal(name)?;
        if container.take_stop_signal() {
            tracing::info!(signal, "stopping container");
            match task.kill("", signal as u32, false).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(CriError::runtime(format!("stop container {id}"), e)),
            }
        }
        if tokio::time::timeout(timeout, container.wait_stopped())
            .await
            .is_ok()
        {
            return Ok(());
        }
        tracing::info!("stop signal timed out; killing");
    }
    match task.kill("", Signal::SIGKILL as u32, false).await {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(CriError::runtime(format!("kill container {id}"), e)),
    }
    tokio::time::timeout(KILL_WAIT, container.wait_stopped())
        .await
        .map_err(|_| {
            CriError::DeadlineExceeded(format!(
                "container {id} did not exit within {}s of SIGKILL",
                KILL_WAIT.as_secs()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        assert_eq!(parse_signal("quit").unwrap(), 3);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert!(parse_signal("SIGNOPE").is_err());
    }
}
