//! Rebuilding the sandbox store at start (containerd `pkg/cri/server/restart.go`
//! `loadSandbox`), also after `kill -9`: every `k8s.io` container record of kind `sandbox`
//! becomes a sandbox again, ready if its pause task still runs (its exit watched again), not
//! ready otherwise (a stopped task is deleted). What a RunPodSandbox left half-made before a
//! crash — a pinned netns, a CNI record or a sandbox dir without a record — is undone: CNI
//! DEL, unpin, remove.

use std::collections::BTreeSet;

use berth_errdefs::{Classify, ErrorKind};
use berth_filters::Filter;
use berth_proto::containerd::v1::types::Status as TaskStatus;

use super::{blocking, host_ipc};
use crate::error::{CriError, Result};
use crate::service::{Cri, K8S_NAMESPACE};
use crate::store::sandbox::{metadata_of, sandbox_files, Sandbox, SandboxState};

/// Loads the sandboxes of `cri`'s records into its store and removes half-made ones. Needs
/// the daemon's tokio runtime (spawns the exit watchers).
pub async fn recover(cri: &Cri) -> Result<()> {
    let meta = cri.meta.clone();
    let records = blocking(move || {
        meta.list_containers(K8S_NAMESPACE, &Filter::default())
            .map_err(|e| CriError::metadata("list k8s.io containers", e))
    })
    .await?;
    let mut known = BTreeSet::new();
    for record in records {
        let metadata = match metadata_of(&record) {
            None => continue,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::warn!(id = %record.id, error = %e, "sandbox record unreadable, skipped");
                continue;
            }
        };
        known.insert(metadata.id.clone());
        let id = metadata.id.clone();
        let (state, pid) = pause_state(cri, &id).await;
        let files = sandbox_files(&cri.root, &id, !host_ipc(&metadata.config));
        cri.store.sandboxes.add(Sandbox {
            metadata,
            state,
            pid,
            files,
        });
        if state == SandboxState::Ready {
            super::watch_exit(cri, &id);
        }
        tracing::info!(id = %id, ?state, pid, "sandbox recovered");
    }
    remove_orphans(cri, &known).await;
    Ok(())
}

/// Ready with its pid if the pause task runs; otherwise not ready, the task deleted.
async fn pause_state(cri: &Cri, id: &str) -> (SandboxState, u32) {
    let Ok(task) = cri.tasks.get(K8S_NAMESPACE, id) else {
        return (SandboxState::NotReady, 0);
    };
    match task.state("").await {
        Ok(s)
            if s.status == TaskStatus::Running as i32 || s.status == TaskStatus::Paused as i32 =>
        {
            (SandboxState::Ready, task.pid())
        }
        Ok(_) => {
            if let Err(e) = super::delete_task(cri, id).await {
                tracing::warn!(id = %id, error = %e, "delete stopped sandbox task");
            }
            (SandboxState::NotReady, 0)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => (SandboxState::NotReady, 0),
        Err(e) => {
            tracing::warn!(id = %id, error = %e, "sandbox task state unknown");
            (SandboxState::NotReady, 0)
        }
    }
}

/// Undoes the steps of RunPodSandboxes that never reached a record.
async fn remove_orphans(cri: &Cri, known: &BTreeSet<String>) {
    let cni = crate::cni::for_config(cri, "");
    let mut ids: BTreeSet<String> = crate::netns::pinned_ids(&cri.state).into_iter().collect();
    ids.extend(cni.recorded_ids());
    let sandboxes_dir = cri.root.join("sandboxes");
    if let Ok(entries) = std::fs::read_dir(&sandboxes_dir) {
        ids.extend(
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok()),
        );
    }
    for id in ids.difference(known) {
        if id.starts_with('.') {
            continue;
        }
        tracing::info!(id = %id, "removing what a half-made sandbox left");
        let netns = crate::netns::netns_path(&cri.state, id);
        if let Err(e) = super::teardown_network(cri, id, "", Some(netns)).await {
            tracing::warn!(id = %id, error = %e, "orphaned sandbox network");
        }
        let (root, sid) = (cri.root.clone(), id.clone());
        if let Err(e) = blocking(move || super::remove_files(&root, &sid)).await {
            tracing::warn!(id = %id, error = %e, "orphaned sandbox files");
        }
        if let Err(e) = super::remove_records(cri, id).await {
            tracing::warn!(id = %id, error = %e, "orphaned sandbox snapshot");
        }
        // The creation lease, if the crash came between the snapshot and the record.
        let (meta, lease) = (cri.meta.clone(), format!("cri-sandbox-{id}"));
        let _ = blocking(move || {
            let _ = meta.delete_lease(K8S_NAMESPACE, &lease);
            Ok(())
        })
        .await;
    }
}

/// [`recover`] from the plugin's (synchronous) init: on a thread of its own blocking on the
/// daemon's runtime, as the runtime plugin loads its tasks. Without a runtime, nothing is
/// recovered (unit tests).
pub fn recover_at_start(cri: &Cri) -> Result<()> {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no async runtime while loading; sandboxes not recovered");
        return Ok(());
    };
    let cri = cri.clone();
    std::thread::spawn(move || handle.block_on(recover(&cri)))
        .join()
        .map_err(|_| CriError::Internal("sandbox recovery panicked".into()))?
}
