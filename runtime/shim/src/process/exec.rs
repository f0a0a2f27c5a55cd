//! Starting an exec process: `runc exec --detach` with the process spec written to a file in
//! the bundle (containerd `pkg/process/exec.go` `start`).

use std::path::Path;

use crate::error::{Result, ShimError};
use crate::io::{ProcessIo, StdioConfig};
use crate::process::init::launch;
use crate::runc::{ExecOpts, Runc};

/// Runs `runc exec` for `exec_id` in task `id`; returns the new pid and its running I/O.
pub async fn start(
    runc: &Runc,
    id: &str,
    exec_id: &str,
    bundle: &Path,
    spec_json: &[u8],
    stdio: &StdioConfig,
) -> Result<(u32, ProcessIo)> {
    let process_file = bundle.join(format!(".{exec_id}-process.json"));
    std::fs::write(&process_file, spec_json)
        .map_err(|e| ShimError::io("write process spec", &process_file, e))?;
    let pid_file = bundle.join(format!("{exec_id}.pid"));
    let result = launch(stdio, "OCI runtime exec failed", |console_socket, pipes| {
        let opts = ExecOpts {
            process_file: process_file.clone(),
            pid_file: pid_file.clone(),
            console_socket,
        };
        async move { runc.exec(id, &opts, pipes).await }
    })
    .await;
    let _ = std::fs::remove_file(&process_file);
    let io = result?;
    let pid = crate::runc::read_pid_file(&pid_file)
        .map_err(|e| ShimError::io("read pid file", &pid_file, e))?;
    Ok((pid, io))
}
