//! ExecSync (containerd `pkg/cri/server/container_execsync.go`): the command runs as an exec
//! process of the container's task with the container's process spec, its stdout and stderr
//! collected through FIFOs (16 MiB each at most; the rest is read and dropped). With a
//! timeout, a process still running when it passes is killed and the call fails with
//! DeadlineExceeded.

use std::path::Path;
use std::time::Duration;

use berth_errdefs::{Classify, ErrorKind};
use berth_proto::runtime::v1::{ExecSyncRequest, ExecSyncResponse};
use berth_runtime::Task;
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

use super::io::FifoSet;
use super::{blocking, delete_exec, exec_process, new_id};
use crate::error::{CriError, Result};
use crate::logs::open_fifo_reader;
use crate::service::Cri;

/// The most of each stream ExecSync returns (containerd's `maxStreamSize`).
pub const MAX_STREAM_SIZE: usize = 16 * 1024 * 1024;

/// How long the output may take to end once the process exited (a background child holding
/// the streams open must not hold the call forever).
const DRAIN: Duration = Duration::from_secs(5);

/// Reads a FIFO to its end, keeping the first `cap` bytes.
fn collect(path: &Path, cap: usize) -> Result<JoinHandle<Vec<u8>>> {
    let mut reader = open_fifo_reader(path)?;
    Ok(tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return kept,
                Ok(n) => {
                    let room = cap.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
    }))
}

async fn drained(handle: JoinHandle<Vec<u8>>) -> Vec<u8> {
    let abort = handle.abort_handle();
    match tokio::time::timeout(DRAIN, handle).await {
        Ok(Ok(v)) => v,
        Ok(Err(_)) => Vec::new(),
        Err(_) => {
            abort.abort();
            Vec::new()
        }
    }
}

/// ExecSync.
#[tracing::instrument(skip_all, fields(id = %req.container_id, timeout = req.timeout))]
pub async fn exec_sync(cri: &Cri, req: ExecSyncRequest) -> Result<ExecSyncResponse> {
    if req.cmd.is_empty() {
        return Err(CriError::invalid("cmd", "empty"));
    }
    let (container, task) = super::running_task(cri, &req.container_id)?;
    let id = container.id().to_owned();
    let record = super::record(cri, &id).await?;
    let process = exec_process(
        &record.spec.map(|s| s.value).unwrap_or_default(),
        &req.cmd,
        false,
    )?;
    let exec_id = new_id();
    let fifos = FifoSet::exec(&cri.state, &id, &exec_id, false, false);
    {
        let f = fifos.clone();
        blocking(move || f.create()).await?;
    }
    let timeout = u64::try_from(req.timeout)
        .ok()
        .filter(|t| *t > 0)
        .map(Duration::from_secs);
    let result = run(&task, &exec_id, &fifos, process, timeout).await;
    {
        let f = fifos.clone();
        let _ = blocking(move || {
            f.remove();
            Ok(())
        })
        .await;
    }
    result
}

async fn run(
    task: &Task,
    exec_id: &str,
    fifos: &FifoSet,
    process: prost_types::Any,
    timeout: Option<Duration>,
) -> Result<ExecSyncResponse> {
    let stdout = collect(&fifos.stdout, MAX_STREAM_SIZE)?;
    let stderr = match &fifos.stderr {
        Some(p) => collect(p, MAX_STREAM_SIZE)?,
        None => tokio::spawn(async { Vec::new() }),
    };
    let abort = |handles: [&JoinHandle<Vec<u8>>; 2]| {
        for h in handles {
            h.abort();
        }
    };
    if let Err(e) = task.exec(exec_id, fifos.task_io(), Some(process)).await {
        abort([&stdout, &stderr]);
        return Err(CriError::runtime(format!("create exec {exec_id}"), e));
    }
    if let Err(e) = task.start(exec_id).await {
        abort([&stdout, &stderr]);
        delete_exec(task, exec_id).await;
        return Err(CriError::runtime(format!("start exec {exec_id}"), e));
    }
    let waited = match timeout {
        Some(t) => tokio::time::timeout(t, task.wait(exec_id)).await.ok(),
        None => Some(task.wait(exec_id).await),
    };
    let exit = match waited {
        Some(Ok(resp)) => resp.exit_status,
        Some(Err(e)) => {
            abort([&stdout, &stderr]);
            delete_exec(task, exec_id).await;
            return Err(CriError::runtime(format!("wait for exec {exec_id}"), e));
        }
        None => {
            // containerd: kill, wait for the exit, let the streams end, then fail.
            if let Err(e) = task.kill(exec_id, nix::libc::SIGKILL as u32, false).await {
                if e.kind() != ErrorKind::NotFound {
                    tracing::warn!(exec_id, error = %e, "kill timed out exec");
                }
            }
            let _ = tokio::time::timeout(DRAIN, task.wait(exec_id)).await;
            let _ = drained(stdout).await;
            let _ = drained(stderr).await;
            delete_exec(task, exec_id).await;
            let secs = timeout.map(|t| t.as_secs()).unwrap_or(0);
            return Err(CriError::DeadlineExceeded(format!(
                "timeout {secs}s exceeded: command in container did not finish"
            )));
        }
    };
    let stdout = drained(stdout).await;
    let stderr = drained(stderr).await;
    delete_exec(task, exec_id).await;
    Ok(ExecSyncResponse {
        stdout,
        stderr,
        exit_code: i32::try_from(exit).unwrap_or(i32::MAX),
    })
}
