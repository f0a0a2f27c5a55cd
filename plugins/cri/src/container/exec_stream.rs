//! Exec through the streaming server (containerd `pkg/cri/server/container_exec.go`,
//! `execInternal` in `container_execsync.go`, `pkg/cri/io/exec_io.go`): the command runs as
//! an exec process of the container's task with the container's process spec, on a terminal
//! (the shim's console, `TERM=xterm`) when asked, its stdio through FIFOs beside the
//! container's. The client's stdin goes into the stdin FIFO (its end is the end of the
//! process's stdin), stdout and stderr to the client, resizes to the pty.
//!
//! A client that goes away (a write to it fails, its stdin fails, or the server drops the
//! call) ends the process: it is killed and deleted, its FIFOs removed.
//!
//! Also here: [`StreamRuntime`] for [`Cri`], which the streaming server calls.

use std::sync::Arc;
use std::time::Duration;

use berth_errdefs::{Classify, ErrorKind};
use berth_runtime::Task;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::attach::{forward_resizes, AbortOnDrop};
use super::io::FifoSet;
use super::{blocking, delete_exec, exec_process, new_id};
use crate::error::{CriError, Result};
use crate::logs::open_fifo_reader;
use crate::service::Cri;
use crate::streaming::{
    ClientReader, ClientStream, ClientWriter, StdioStreams, StreamRuntime, TermSize,
};

/// How long the output may take to end once the process exited (a background child holding
/// the streams open must not hold the call forever).
const DRAIN: Duration = Duration::from_secs(5);

/// How long a killed exec process may take to be reported gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

#[tonic::async_trait]
impl StreamRuntime for Cri {
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        streams: StdioStreams,
    ) -> Result<i32> {
        exec(self, container_id, cmd, streams).await
    }

    async fn attach(&self, container_id: &str, streams: StdioStreams) -> Result<()> {
        super::attach::attach(self, container_id, streams).await
    }

    async fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
        stream: Box<dyn ClientStream>,
    ) -> Result<()> {
        crate::sandbox::port_forward_conn::port_forward(self, sandbox_id, port, stream).await
    }
}

/// Copies a FIFO to the client (or drops it without one) until it ends (Ok) or a write to
/// the client fails (Err).
async fn copy_out(mut from: pipe::Receiver, mut to: Option<ClientWriter>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => n,
        };
        if let Some(w) = to.as_mut() {
            w.write_all(&buf[..n]).await?;
            w.flush().await?;
        }
    }
}

/// Copies the client's stdin into the FIFO until it ends (Ok(true)), the FIFO breaks
/// (Ok(false)) or reading the client fails (Err).
async fn copy_in(mut from: ClientReader, mut to: pipe::Sender) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(true);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return Ok(false);
        }
    }
}

/// Kills, deletes and forgets an exec process when dropped before [`Cleanup::disarm`]: the
/// streaming server dropping the call mid-exec ends the process too.
struct Cleanup {
    task: Arc<Task>,
    exec_id: String,
    fifos: FifoSet,
    armed: bool,
}

impl Cleanup {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (task, exec_id, fifos) = (
            self.task.clone(),
            std::mem::take(&mut self.exec_id),
            self.fifos.clone(),
        );
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                kill_and_delete(&task, &exec_id).await;
                remove_fifos(fifos).await;
            });
        }
    }
}

async fn kill_and_delete(task: &Task, exec_id: &str) {
    match task.kill(exec_id, nix::libc::SIGKILL as u32, false).await {
        Ok(()) => {
            let _ = tokio::time::timeout(KILL_WAIT, task.wait(exec_id)).await;
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(exec_id, error = %e, "kill exec process"),
    }
    delete_exec(task, exec_id).await;
}

async fn remove_fifos(fifos: FifoSet) {
    let _ = blocking(move || {
        fifos.remove();
        Ok(())
    })
    .await;
}

/// Waits for an output copy; Err when the client went away.
async fn join_out(h: &mut Option<JoinHandle<std::io::Result<()>>>) -> bool {
    match h.as_mut() {
        Some(h) => matches!(h.await, Ok(Ok(()))),
        None => std::future::pending().await,
    }
}

/// Waits for the stdin copy.
async fn join_in(h: &mut Option<JoinHandle<std::io::Result<bool>>>) -> Option<bool> {
    match h.as_mut() {
        Some(h) => match h.await {
            Ok(Ok(ended)) => Some(ended),
            _ => None,
        },
        None => std::future::pending().await,
    }
}

/// Exec: runs `cmd` in `container_id` with the client's `streams`; the exit code.
#[tracing::instrument(skip_all, fields(id = %container_id, tty = streams.tty))]
pub async fn exec(
    cri: &Cri,
    container_id: &str,
    cmd: Vec<String>,
    streams: StdioStreams,
) -> Result<i32> {
    if cmd.is_empty() {
        return Err(CriError::invalid("cmd", "empty"));
    }
    let (container, task) = super::running_task(cri, container_id)?;
    let id = container.id().to_owned();
    let StdioStreams {
        stdin,
        stdout,
        stderr,
        tty,
        resize,
    } = streams;
    let record = super::record(cri, &id).await?;
    let process = exec_process(&record.spec.map(|s| s.value).unwrap_or_default(), &cmd, tty)?;
    let exec_id = new_id();
    let fifos = FifoSet::exec(&cri.state, &id, &exec_id, tty, stdin.is_some());
    {
        let f = fifos.clone();
        blocking(move || f.create()).await?;
    }
    let readers = (|| {
        let out = open_fifo_reader(&fifos.stdout)?;
        let err = fifos.stderr.as_deref().map(open_fifo_reader).transpose()?;
        Ok::<_, CriError>((out, err))
    })();
    let (out_reader, err_reader) = match readers {
        Ok(r) => r,
        Err(e) => {
            remove_fifos(fifos).await;
            return Err(e);
        }
    };
    if let Err(e) = task.exec(&exec_id, fifos.task_io(), Some(process)).await {
        remove_fifos(fifos).await;
        return Err(CriError::runtime(format!("create exec {exec_id}"), e));
    }
    let cleanup = Cleanup {
        task: task.clone(),
        exec_id: exec_id.clone(),
        fifos: fifos.clone(),
        armed: true,
    };
    // Read and write: the open never waits, and dropping it is the end of stdin.
    let stdin_writer = match &fifos.stdin {
        Some(path) => Some(
            pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(path)
                .map_err(|e| CriError::io("open exec stdin fifo", path, e))?,
        ),
        None => None,
    };
    task.start(&exec_id)
        .await
        .map_err(|e| CriError::runtime(format!("start exec {exec_id}"), e))?;
    tracing::debug!(exec_id, "exec started");
    let run = Run {
        task: &task,
        exec_id: &exec_id,
        tty,
    };
    let result = run
        .serve(
            stdin.zip(stdin_writer),
            (out_reader, stdout),
            err_reader.map(|r| (r, stderr)),
            resize,
        )
        .await;
    // Past here a drop of this call leaves the rest to the guard, in the background.
    if result.is_err() {
        // The client went away (or the wait failed): the process goes.
        kill_and_delete(&task, &exec_id).await;
    } else {
        delete_exec(&task, &exec_id).await;
    }
    cleanup.disarm();
    remove_fifos(fifos).await;
    result
}

struct Run<'a> {
    task: &'a Arc<Task>,
    exec_id: &'a str,
    tty: bool,
}

impl Run<'_> {
    /// Moves the streams until the process exits (its exit code) or the client goes away.
    async fn serve(
        &self,
        stdin: Option<(ClientReader, pipe::Sender)>,
        stdout: (pipe::Receiver, Option<ClientWriter>),
        stderr: Option<(pipe::Receiver, Option<ClientWriter>)>,
        resize: Option<mpsc::Receiver<TermSize>>,
    ) -> Result<i32> {
        let exec_id = self.exec_id;
        let mut out = Some(tokio::spawn(copy_out(stdout.0, stdout.1)));
        let mut err = stderr.map(|(r, w)| tokio::spawn(copy_out(r, w)));
        let mut input = stdin.map(|(r, w)| tokio::spawn(copy_in(r, w)));
        let resizer = match resize {
            Some(rx) if self.tty => Some(tokio::spawn(forward_resizes(
                self.task.clone(),
                exec_id.to_owned(),
                rx,
            ))),
            _ => None,
        };
        let guard = AbortOnDrop(
            [
                out.as_ref().map(JoinHandle::abort_handle),
                err.as_ref().map(JoinHandle::abort_handle),
                input.as_ref().map(JoinHandle::abort_handle),
                resizer.as_ref().map(JoinHandle::abort_handle),
            ]
            .into_iter()
            .flatten()
            .collect(),
        );
        let wait = self.task.wait(exec_id);
        tokio::pin!(wait);
        let gone = || CriError::FailedPrecondition(format!("exec {exec_id}: the client went away"));
        let exit = loop {
            tokio::select! {
                waited = &mut wait => {
                    break waited
                        .map_err(|e| CriError::runtime(format!("wait for exec {exec_id}"), e))?
                        .exit_status;
                }
                ok = join_out(&mut out), if out.is_some() => {
                    out = None;
                    if !ok {
                        return Err(gone());
                    }
                }
                ok = join_out(&mut err), if err.is_some() => {
                    err = None;
                    if !ok {
                        return Err(gone());
                    }
                }
                ended = join_in(&mut input), if input.is_some() => {
                    input = None;
                    // The client's stdin ended: the copy dropped the FIFO's only writer, so
                    // the shim reads the end after the last data and closes the process's
                    // stdin. (A CloseIO now could cut data still in the FIFO.)
                    if ended.is_none() {
                        return Err(gone());
                    }
                }
            }
        };
        // The output ends once the shim closed its ends; a child holding them is not waited.
        let drain = async {
            for h in [out, err].into_iter().flatten() {
                if !matches!(h.await, Ok(Ok(()))) {
                    return false;
                }
            }
            true
        };
        if let Ok(false) = tokio::time::timeout(DRAIN, drain).await {
            tracing::debug!(exec_id, "client went away while the output drained");
        }
        drop(guard);
        Ok(i32::try_from(exit).unwrap_or(i32::MAX))
    }
}
