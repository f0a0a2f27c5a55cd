//! Tasks and their processes, as containerd's client `task.go` / `process.go` drive them for
//! ctr: create a task on a container's rootfs with client FIFOs, Start ∥ Wait, forward signals
//! or terminal resizes, and delete once stopped.

use std::str::FromStr as _;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use berth_proto::containerd::runc::v1::Options as RuncOptions;
use berth_proto::containerd::services::containers::v1::{Container, GetContainerRequest};
use berth_proto::containerd::services::snapshots::v1::MountsRequest;
use berth_proto::containerd::services::tasks::v1::{
    CloseIoRequest, CreateTaskRequest, DeleteProcessRequest, DeleteResponse, DeleteTaskRequest,
    GetRequest, KillRequest, ResizePtyRequest, StartRequest, WaitRequest, WaitResponse,
};
use berth_proto::containerd::types::Mount;
use berth_proto::containerd::v1::types::{Process, Status};
use nix::sys::signal::Signal;
use prost::Message as _;
use tokio::task::JoinHandle;
use tonic::Code;

use super::io::{Attached, FifoSet};
use super::Client;
use crate::error::{Object, RpcResultExt};

/// Container label with the image's stop signal (`containerd.StopSignalLabel`).
pub const STOP_SIGNAL_LABEL: &str = "io.containerd.image.config.stop-signal";
/// Type URL of runc shim options.
pub const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";
/// How long to wait for the shim to drain output after the process exited.
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);

/// The object a task RPC is about.
pub fn task_object(id: &str, exec_id: &str) -> Object {
    if exec_id.is_empty() {
        Object::named("task", id)
    } else {
        Object::named("process", exec_id).qualified(format!("of task \"{id}\""))
    }
}

/// `Containers.Get`.
pub async fn container(client: &Client, id: &str) -> Result<Container> {
    client
        .containers()
        .get(client.req(GetContainerRequest { id: id.to_owned() }))
        .await
        .rpc(client, "get", Object::container(id))?
        .into_inner()
        .container
        .with_context(|| format!("container {id:?}: empty reply from the daemon"))
}

/// `Containers.Get`, but `None` when the container is gone: a task outlives the deletion of its
/// container record, and `kill` / `delete` must still reach it.
pub async fn container_if_any(client: &Client, id: &str) -> Result<Option<Container>> {
    match container(client, id).await {
        Ok(c) => Ok(Some(c)),
        Err(err) if crate::error::code_of(&err) == Some(Code::NotFound) => Ok(None),
        Err(err) => Err(err),
    }
}

/// `Tasks.Get` of the init process (`exec_id` empty) or an exec process.
pub async fn get(client: &Client, id: &str, exec_id: &str) -> Result<Process> {
    client
        .tasks()
        .get(client.req(GetRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
        }))
        .await
        .rpc(client, "get", task_object(id, exec_id))?
        .into_inner()
        .process
        .with_context(|| format!("task {id:?}: empty reply from the daemon"))
}

/// The status name ctr prints (`RUNNING`, `STOPPED`, ...).
pub fn status_name(p: &Process) -> &'static str {
    p.status().as_str_name()
}

/// moby's `signal.ParseSignal`: a number, or a name with or without `SIG`, any case.
pub fn parse_signal(text: &str) -> Result<u32> {
    if let Ok(n) = text.parse::<u32>() {
        if n == 0 || n > 64 {
            bail!("invalid signal: {text}");
        }
        return Ok(n);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    Signal::from_str(&format!("SIG{name}"))
        .map(|s| s as u32)
        .map_err(|_| anyhow::anyhow!("invalid signal: {text}"))
}

/// The signal that stops a container: its stop-signal label, else `default` (`GetStopSignal`).
pub fn stop_signal(c: &Container, default: &str) -> Result<u32> {
    match c.labels.get(STOP_SIGNAL_LABEL).filter(|s| !s.is_empty()) {
        Some(sig) => parse_signal(sig),
        None => parse_signal(default),
    }
}

/// `Tasks.Kill`.
pub async fn kill(client: &Client, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
    client
        .tasks()
        .kill(client.req(KillRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            signal,
            all,
        }))
        .await
        .rpc(client, "kill", task_object(id, exec_id))?;
    Ok(())
}

/// runc shim options for a runtime (`containerd.runc.v1.Options` for `io.containerd.runc.*`).
pub fn runc_options_any(opts: &RuncOptions) -> prost_types::Any {
    prost_types::Any {
        type_url: RUNC_OPTIONS_TYPE_URL.to_owned(),
        value: opts.encode_to_vec(),
    }
}

/// What a caller that just made the container knows of it: its record and, when it has a
/// snapshot, that snapshot's mounts (Prepare's answer). With it, [`create`] asks for neither.
#[derive(Debug)]
pub struct Known<'a> {
    pub container: &'a Container,
    pub rootfs: Option<Vec<Mount>>,
}

/// `container.NewTask`: Containers.Get, the snapshot's mounts as rootfs, then Tasks.Create with
/// the FIFOs (the first two skipped when `known`). Returns the pid.
pub async fn create(
    client: &Client,
    id: &str,
    fifos: &FifoSet,
    no_pivot: bool,
    known: Option<Known<'_>>,
) -> Result<u32> {
    let fetched;
    let (c, known_rootfs) = match known {
        Some(k) => (k.container, k.rootfs),
        None => {
            fetched = container(client, id).await?;
            (&fetched, None)
        }
    };
    let mut rootfs = Vec::new();
    if let Some(mounts) = known_rootfs.filter(|_| !c.snapshot_key.is_empty()) {
        rootfs = mounts;
    } else if !c.snapshot_key.is_empty() {
        if c.snapshotter.is_empty() {
            bail!("unable to resolve rootfs mounts without snapshotter on container {id:?}: invalid argument");
        }
        rootfs = client
            .snapshots()
            .mounts(client.req(MountsRequest {
                snapshotter: c.snapshotter.clone(),
                key: c.snapshot_key.clone(),
            }))
            .await
            .rpc(
                client,
                "get mounts of",
                Object::snapshot(&c.snapshotter, &c.snapshot_key),
            )?
            .into_inner()
            .mounts;
    }
    let runtime = c.runtime.as_ref().map(|r| r.name.as_str()).unwrap_or("");
    let options = (no_pivot && runtime.starts_with("io.containerd.runc")).then(|| {
        runc_options_any(&RuncOptions {
            no_pivot_root: true,
            ..Default::default()
        })
    });
    let resp = client
        .tasks()
        .create(client.req(CreateTaskRequest {
            container_id: id.to_owned(),
            rootfs,
            stdin: fifos.stdin.clone(),
            stdout: fifos.stdout.clone(),
            stderr: fifos.stderr.clone(),
            terminal: fifos.terminal,
            checkpoint: None,
            options,
            runtime_path: String::new(),
        }))
        .await
        .rpc(client, "create", Object::named("task", id))?;
    Ok(resp.into_inner().pid)
}

/// Starts `Tasks.Wait` in the background (ctr calls Wait before Start so no exit is missed).
pub fn spawn_wait(
    client: &Client,
    id: &str,
    exec_id: &str,
) -> JoinHandle<Result<WaitResponse, tonic::Status>> {
    let client = client.clone();
    let req = WaitRequest {
        container_id: id.to_owned(),
        exec_id: exec_id.to_owned(),
    };
    tokio::spawn(async move {
        client
            .tasks()
            .wait(client.req(req))
            .await
            .map(tonic::Response::into_inner)
    })
}

/// `Tasks.Start`; returns the pid.
pub async fn start(client: &Client, id: &str, exec_id: &str) -> Result<u32> {
    Ok(client
        .tasks()
        .start(client.req(StartRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
        }))
        .await
        .rpc(client, "start", task_object(id, exec_id))?
        .into_inner()
        .pid)
}

/// Calls `CloseIO{stdin}` once local stdin is exhausted (ctr's `stdinCloser`).
pub fn close_stdin_on_eof(client: &Client, id: &str, exec_id: &str, attached: &mut Attached) {
    let Some(rx) = attached.stdin_closed.take() else {
        return;
    };
    let client = client.clone();
    let req = CloseIoRequest {
        container_id: id.to_owned(),
        exec_id: exec_id.to_owned(),
        stdin: true,
    };
    tokio::spawn(async move {
        if rx.await.is_ok() {
            let _ = client.tasks().close_io(client.req(req)).await;
        }
    });
}

/// Signals forwarded to the process while ctr waits (`ForwardAllSignals`, minus the ones a
/// terminal-less client never wants to pass on).
const FORWARDED: [Signal; 8] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGCONT,
    Signal::SIGTSTP,
];

/// Forwards the signals this process receives to the task process until aborted.
pub fn forward_signals(client: &Client, id: &str, exec_id: &str) -> JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let client = client.clone();
    let id = id.to_owned();
    let exec_id = exec_id.to_owned();
    tokio::spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        for sig in FORWARDED {
            let Ok(mut stream) = signal(SignalKind::from_raw(sig as i32)) else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(sig as u32).is_err() {
                        break;
                    }
                }
            });
        }
        while let Some(sig) = rx.recv().await {
            if let Err(err) = kill(&client, &id, &exec_id, sig, false).await {
                eprintln!(
                    "berth: forward signal {sig}: {}",
                    crate::error::render(&err)
                );
            }
        }
    })
}

/// Sends the local terminal size now and on every SIGWINCH (`HandleConsoleResize`).
pub fn handle_resize(client: &Client, id: &str, exec_id: &str) -> JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let client = client.clone();
    let id = id.to_owned();
    let exec_id = exec_id.to_owned();
    tokio::spawn(async move {
        let resize = |client: Client, id: String, exec_id: String| async move {
            if let Some((width, height)) = super::io::terminal_size() {
                let _ = client
                    .tasks()
                    .resize_pty(client.req(ResizePtyRequest {
                        container_id: id,
                        exec_id,
                        width,
                        height,
                    }))
                    .await;
            }
        };
        resize(client.clone(), id.clone(), exec_id.clone()).await;
        let Ok(mut winch) = signal(SignalKind::window_change()) else {
            return;
        };
        while winch.recv().await.is_some() {
            resize(client.clone(), id.clone(), exec_id.clone()).await;
        }
    })
}

/// Waits for the exit after Start: forwards signals (or resizes with a terminal), awaits the
/// Wait reply, then lets output drain. Returns the exit status.
pub async fn wait_exit(
    client: &Client,
    id: &str,
    exec_id: &str,
    wait: JoinHandle<Result<WaitResponse, tonic::Status>>,
    attached: Attached,
    terminal: bool,
) -> Result<u32> {
    let helper = if terminal {
        handle_resize(client, id, exec_id)
    } else {
        forward_signals(client, id, exec_id)
    };
    let status = wait
        .await
        .context("the wait for the task was interrupted")?
        .rpc(client, "wait for", task_object(id, exec_id));
    helper.abort();
    let status = status?;
    attached.wait_outputs(OUTPUT_DRAIN).await;
    Ok(status.exit_status)
}

/// `task.Delete`: Tasks.Get, refuse unless stopped (or created with no pid), Tasks.Delete.
/// `force` first kills everything and waits (`WithProcessKill`).
pub async fn delete(client: &Client, id: &str, force: bool) -> Result<DeleteResponse> {
    if force {
        kill_and_wait(client, id, "").await?;
    }
    let p = get(client, id, "").await?;
    match p.status() {
        Status::Stopped | Status::Unknown => {}
        Status::Created if p.pid == 0 => {}
        _ => bail!(
            "task must be stopped before deletion: {}: failed precondition",
            status_name(&p).to_ascii_lowercase()
        ),
    }
    let resp = client
        .tasks()
        .delete(client.req(DeleteTaskRequest {
            container_id: id.to_owned(),
        }))
        .await
        .rpc(client, "delete", Object::named("task", id))?
        .into_inner();
    super::io::remove_fifos(&[&p.stdin, &p.stdout, &p.stderr]);
    Ok(resp)
}

/// Tasks.Delete of a task the caller just saw exit (its Wait answered): [`delete`] without the
/// Tasks.Get that checks it is stopped. The caller removes its own FIFOs.
pub async fn delete_exited(client: &Client, id: &str) -> Result<DeleteResponse> {
    Ok(client
        .tasks()
        .delete(client.req(DeleteTaskRequest {
            container_id: id.to_owned(),
        }))
        .await
        .rpc(client, "delete", Object::named("task", id))?
        .into_inner())
}

/// `process.Delete` of an exec process, with the same rules as [`delete`].
pub async fn delete_process(
    client: &Client,
    id: &str,
    exec_id: &str,
    force: bool,
) -> Result<DeleteResponse> {
    if force {
        kill_and_wait(client, id, exec_id).await?;
    }
    let p = get(client, id, exec_id).await?;
    match p.status() {
        Status::Stopped | Status::Unknown => {}
        Status::Created if p.pid == 0 => {}
        _ => bail!(
            "process must be stopped before deletion: {}: failed precondition",
            status_name(&p).to_ascii_lowercase()
        ),
    }
    let resp = client
        .tasks()
        .delete_process(client.req(DeleteProcessRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
        }))
        .await
        .rpc(client, "delete", task_object(id, exec_id))?
        .into_inner();
    super::io::remove_fifos(&[&p.stdin, &p.stdout, &p.stderr]);
    Ok(resp)
}

/// `WithProcessKill`: Wait, SIGKILL (all for the init process), wait for the exit.
async fn kill_and_wait(client: &Client, id: &str, exec_id: &str) -> Result<()> {
    let wait = spawn_wait(client, id, exec_id);
    let killed = client
        .tasks()
        .kill(client.req(KillRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            signal: Signal::SIGKILL as u32,
            all: exec_id.is_empty(),
        }))
        .await;
    match killed {
        Ok(_) => {}
        Err(s) if s.code() == Code::NotFound || s.code() == Code::FailedPrecondition => {}
        Err(s) => {
            wait.abort();
            return Err(s).rpc(client, "kill", task_object(id, exec_id));
        }
    }
    match tokio::time::timeout(Duration::from_secs(30), wait).await {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err(s))) if s.code() == Code::NotFound => Ok(()),
        Ok(Ok(Err(s))) => Err(s).rpc(client, "wait for", task_object(id, exec_id)),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => bail!(
            "timed out waiting for {} to exit after SIGKILL",
            task_object(id, exec_id)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_moby() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), 10);
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn stop_signal_from_label() {
        let mut c = Container::default();
        assert_eq!(stop_signal(&c, "SIGTERM").unwrap(), 15);
        c.labels
            .insert(STOP_SIGNAL_LABEL.to_owned(), "SIGQUIT".to_owned());
        assert_eq!(stop_signal(&c, "SIGTERM").unwrap(), 3);
    }
}
