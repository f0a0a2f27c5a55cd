//! Creating the init process: `runc create` with the task's stdio (containerd
//! `pkg/process/init.go` `Create`), and the shared stdio launcher used by exec too.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::console::{ConsoleSocket, Pty};
use crate::error::{InvalidRequest, Result, ShimError};
use crate::io::{prepare_pipes, prepare_pty, ProcessIo, StdioConfig};
use crate::runc::{CreateOpts, ProcessStdio, Runc, RuncError};

/// How long to wait for runc to hand over the pty master after it succeeded.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a runc command that starts a process with `cfg`'s stdio: through pipes, or on a pty
/// whose master arrives on a console socket while runc runs. `what` names the operation in
/// containerd's words ("OCI runtime create failed").
pub async fn launch<F, Fut>(cfg: &StdioConfig, what: &str, run: F) -> Result<ProcessIo>
where
    F: FnOnce(Option<PathBuf>, ProcessStdio) -> Fut,
    Fut: Future<Output = std::result::Result<(), RuncError>>,
{
    let runc_failed = |e: RuncError| ShimError::Runc {
        op: what.to_owned(),
        message: e.to_string(),
    };
    if !cfg.terminal {
        let (stdio, pipes) = prepare_pipes(cfg)?;
        run(None, stdio).await.map_err(runc_failed)?;
        return pipes.start();
    }
    let pty_io = prepare_pty(cfg)?;
    let socket = ConsoleSocket::new()?;
    let run_fut = run(Some(socket.path().to_owned()), ProcessStdio::default());
    let recv_fut = socket.receive_master();
    tokio::pin!(run_fut);
    tokio::pin!(recv_fut);
    let mut master = None;
    let result = loop {
        tokio::select! {
            r = &mut run_fut => break r,
            m = &mut recv_fut, if master.is_none() => master = Some(m),
        }
    };
    result.map_err(runc_failed)?;
    let master = match master {
        Some(m) => m?,
        None => tokio::time::timeout(CONSOLE_TIMEOUT, recv_fut)
            .await
            .map_err(|_| ShimError::from(InvalidRequest::ConsoleTimeout))??,
    };
    Ok(pty_io.start(Pty::new(master)?))
}

/// Options of the init process from `containerd.runc.v1.Options`.
#[derive(Debug, Clone, Default)]
pub struct InitOpts {
    /// `--no-pivot`.
    pub no_pivot_root: bool,
    /// `--no-new-keyring`.
    pub no_new_keyring: bool,
}

/// `runc create`s the init process of `id`; returns its pid and running I/O.
pub async fn create(
    runc: &Runc,
    id: &str,
    bundle: &Path,
    stdio: &StdioConfig,
    opts: &InitOpts,
) -> Result<(u32, ProcessIo)> {
    let pid_file = bundle.join(crate::constants::bundle::INIT_PID);
    let io = launch(
        stdio,
        "OCI runtime create failed",
        |console_socket, pipes| {
            let create = CreateOpts {
                pid_file: pid_file.clone(),
                console_socket,
                no_pivot: opts.no_pivot_root,
                no_new_keyring: opts.no_new_keyring,
            };
            async move { runc.create(id, bundle, &create, pipes).await }
        },
    )
    .await?;
    let pid = crate::runc::read_pid_file(&pid_file)
        .map_err(|e| ShimError::io("read pid file", &pid_file, e))?;
    Ok((pid, io))
}
