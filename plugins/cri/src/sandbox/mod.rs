//! The sandbox RPCs, one module each, and the steps they share: every step that undoes
//! something (the pause task, the network, the files, the records) is idempotent, so that
//! RunPodSandbox's failure path, StopPodSandbox, RemovePodSandbox and the recovery at start
//! all call the same ones, in the same order.

pub mod list;
pub mod port_forward;
pub mod port_forward_conn;
pub mod recover;
pub mod remove;
pub mod run;
pub mod stats;
pub mod status;
pub mod stop;

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_errdefs::{Classify, ErrorKind};
use berth_proto::runtime::v1::{NamespaceMode, PodSandboxConfig};

use crate::cni;
use crate::error::{CriError, Result};
use crate::service::{Cri, K8S_NAMESPACE};
use crate::store::sandbox::SandboxState;

/// How long a killed pause process may take to be reported gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

pub(crate) use crate::blocking::blocking;

/// Boxes a future as `dyn Send`: the runtime manager's futures, awaited inside the RPC's
/// future, otherwise trip the compiler's check that the whole is `Send` for every lifetime
/// (rust-lang/rust#64552).
pub(crate) fn boxed<'a, T>(
    f: impl std::future::Future<Output = T> + Send + 'a,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>> {
    Box::pin(f)
}

/// Whether the pod uses the host's network namespace.
pub fn host_network(config: &PodSandboxConfig) -> bool {
    namespace_mode(config, |o| o.network) == NamespaceMode::Node
}

/// Whether the pod uses the host's IPC namespace.
pub fn host_ipc(config: &PodSandboxConfig) -> bool {
    namespace_mode(config, |o| o.ipc) == NamespaceMode::Node
}

fn namespace_mode(
    config: &PodSandboxConfig,
    pick: impl Fn(&berth_proto::runtime::v1::NamespaceOption) -> i32,
) -> NamespaceMode {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .map(|o| NamespaceMode::try_from(pick(o)).unwrap_or(NamespaceMode::Pod))
        .unwrap_or(NamespaceMode::Pod)
}

/// Kills the pause task of `id` (and, the pod's PID namespace being its, everything in it)
/// and waits until it is gone; no task, or one already stopped, is success.
pub(crate) async fn kill_pause(cri: &Cri, id: &str) -> Result<()> {
    let Ok(task) = cri.tasks.get(K8S_NAMESPACE, id) else {
        return Ok(());
    };
    match task.state("").await {
        Ok(s) if s.status == berth_proto::containerd::v1::types::Status::Stopped as i32 => {
            return Ok(())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        _ => {}
    }
    let signal = nix::sys::signal::Signal::SIGKILL as u32;
    if let Err(e) = task.kill("", signal, true).await {
        // Gone, or stopped between the state check and the kill: nothing to kill.
        let gone = cri.tasks.get(K8S_NAMESPACE, id).is_err()
            || task.state("").await.map_or(true, |s| {
                s.status == berth_proto::containerd::v1::types::Status::Stopped as i32
            });
        if e.kind() != ErrorKind::NotFound && !e.is_closed() && !gone {
            return Err(CriError::runtime(format!("kill sandbox {id}"), e));
        }
        return Ok(());
    }
    match tokio::time::timeout(KILL_WAIT, task.wait("")).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == ErrorKind::NotFound || e.is_closed() => Ok(()),
        // The exit watcher deleted the task (and its shim) meanwhile.
        Ok(Err(_)) if cri.tasks.get(K8S_NAMESPACE, id).is_err() => Ok(()),
        Ok(Err(e)) => Err(CriError::runtime(format!("wait for sandbox {id}"), e)),
        Err(_) => Err(CriError::Internal(format!(
            "sandbox {id}'s pause process did not exit {KILL_WAIT:?} after SIGKILL"
        ))),
    }
}

/// Deletes the pause task (the shim and its bundle); none is success.
pub(crate) async fn delete_task(cri: &Cri, id: &str) -> Result<()> {
    match cri.tasks.delete(K8S_NAMESPACE, id).await {
        Ok(_) => Ok(()),
        // Gone, or its shim went away while being deleted (the exit watcher and a stop may
        // both delete): the manager has cleaned up either way.
        Err(e) if e.kind() == ErrorKind::NotFound || e.is_closed() => Ok(()),
        Err(_) if cri.tasks.get(K8S_NAMESPACE, id).is_err() => Ok(()),
        Err(e) => Err(CriError::runtime(format!("delete sandbox {id} task"), e)),
    }
}

/// CNI DEL of the pod's networks and removal of its network namespace: the namespace path is
/// given to the plugins only while it is still pinned. Idempotent.
pub(crate) async fn teardown_network(
    cri: &Cri,
    id: &str,
    runtime_handler: &str,
    netns: Option<PathBuf>,
) -> Result<()> {
    let cni = cni::for_config(cri, runtime_handler);
    let id = id.to_owned();
    blocking(move || {
        let live = netns.as_deref().filter(|p| crate::netns::is_pinned(p));
        cni.teardown(&id, live)?;
        if let Some(path) = &netns {
            crate::netns::remove(path)?;
        }
        Ok(())
    })
    .await
}

/// Removes the pause container's record and its rootfs snapshot; absent ones are fine.
pub(crate) async fn remove_records(cri: &Cri, id: &str) -> Result<()> {
    let (meta, snapshots, sn) = (
        cri.meta.clone(),
        cri.snapshots.clone(),
        cri.config.containerd.snapshotter.clone(),
    );
    let id = id.to_owned();
    blocking(move || {
        // The record names the snapshotter it used; the configured one otherwise.
        let sn = match meta.get_container(K8S_NAMESPACE, &id) {
            Ok(c) if !c.snapshotter.is_empty() => c.snapshotter,
            _ => sn,
        };
        match meta.delete_container(K8S_NAMESPACE, &id) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(CriError::metadata(format!("delete sandbox {id} record"), e)),
        }
        match snapshots.remove(K8S_NAMESPACE, &sn, &id) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CriError::Snapshot {
                op: format!("remove sandbox {id} snapshot"),
                source: e,
            }),
        }
    })
    .await
}

/// Unmounts everything on the pod's /dev/shm (containerd `cleanupSandboxFiles`); idempotent.
pub(crate) fn unmount_shm(root: &Path, id: &str) -> Result<()> {
    let shm = crate::store::sandbox::sandbox_dir(root, id).join("shm");
    berth_mount::unmount_all(&shm, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| CriError::io("unmount sandbox shm", &shm, std::io::Error::other(e)))
}

/// Unmounts the pod's /dev/shm and removes `<root>/sandboxes/<id>`; idempotent.
pub(crate) fn remove_files(root: &Path, id: &str) -> Result<()> {
    unmount_shm(root, id)?;
    let dir = crate::store::sandbox::sandbox_dir(root, id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CriError::io("remove sandbox dir", &dir, e)),
    }
}

/// Watches the pause task of `id` and marks the sandbox not ready when it exits.
pub(crate) fn watch_exit(cri: &Cri, id: &str) {
    let Ok(task) = cri.tasks.get(K8S_NAMESPACE, id) else {
        return;
    };
    let (cri, id) = (cri.clone(), id.to_owned());
    tokio::spawn(async move {
        let result = task.wait("").await;
        if let Err(e) = &result {
            // The connection to the shim broke (berthd may be stopping): only a task that
            // says it is stopped makes the pod not ready; a restart re-reads the rest.
            let gone = match task.state("").await {
                Ok(s) => s.status == berth_proto::containerd::v1::types::Status::Stopped as i32,
                Err(_) => false,
            };
            tracing::debug!(id = %id, error = %e, gone, "sandbox wait ended");
            if !gone {
                return;
            }
        }
        let _ = cri.store.sandboxes.update(&id, |s| {
            if s.state == SandboxState::Ready {
                s.state = SandboxState::NotReady;
            }
            s.pid = 0;
        });
        tracing::info!(id = %id, "sandbox pause process exited");
        // As containerd's exit handler: the task (and its shim) goes with the process.
        if let Err(e) = delete_task(&cri, &id).await {
            tracing::warn!(id = %id, error = %e, "delete exited sandbox task");
        }
    });
}
