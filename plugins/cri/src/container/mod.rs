//! The container RPCs, one module each, and what they share: the blocking-pool helper, ids,
//! the FIFOs of a task's stdio (`io`), the exit monitor (`exit`) and the rebuild of the
//! container store at start (`recover`).

pub mod attach;
pub mod create;
pub mod exec_stream;
pub mod exec_sync;
pub mod exit;
pub mod io;
pub mod list;
pub mod recover;
pub mod remove;
pub mod reopen_log;
pub mod start;
pub mod stats;
pub mod status;
pub mod stop;
pub mod stream;
pub mod update;

use std::sync::Arc;

use berth_proto::runtime::v1::ContainerState;

use crate::error::{CriError, Result};
use crate::service::{Cri, K8S_NAMESPACE};
use crate::store::container::Container;

pub use recover::recover;

/// The type URL of an OCI spec inside an `Any` (containerd's typeurl registration).
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The type URL of an OCI process inside an `Any`.
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// The type URL of OCI Linux resources inside an `Any`.
pub const RESOURCES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// Runs blocking work (files, fsync, metadata transactions) on the blocking pool.
pub async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(CriError::Internal(format!("blocking task failed: {e}"))))
}

/// A new object id: 64 hex digits, as containerd's `util.GenerateID`.
pub fn new_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// containerd's name of a CRI state (`CONTAINER_RUNNING`), for messages.
pub fn state_name(state: ContainerState) -> &'static str {
    state.as_str_name()
}

/// The container record of `id` in the metadata store.
pub async fn record(cri: &Cri, id: &str) -> Result<berth_core::Container> {
    let (meta, id) = (cri.meta.clone(), id.to_owned());
    blocking(move || {
        meta.get_container(K8S_NAMESPACE, &id)
            .map_err(|e| CriError::metadata(format!("get container {id}"), e))
    })
    .await
}

/// The live task of `container`, `None` when there is none.
pub fn task_of(cri: &Cri, container: &Container) -> Option<Arc<berth_runtime::Task>> {
    cri.tasks.get(K8S_NAMESPACE, container.id()).ok()
}
