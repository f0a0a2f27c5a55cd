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

pub use crate::blocking::blocking;

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

/// The process spec of an exec: the container's (from its stored OCI `spec`) with `cmd` as
/// its arguments, on a terminal with `TERM=xterm` (replacing any TERM) when `tty`.
pub fn exec_process(spec: &[u8], cmd: &[String], tty: bool) -> Result<prost_types::Any> {
    let spec: serde_json::Value = serde_json::from_slice(spec)
        .map_err(|e| CriError::Internal(format!("decode container spec: {e}")))?;
    let mut process = spec
        .get("process")
        .cloned()
        .ok_or_else(|| CriError::Internal("container spec has no process".into()))?;
    process["args"] = serde_json::json!(cmd);
    process["terminal"] = serde_json::json!(tty);
    if tty {
        let mut env: Vec<serde_json::Value> = process
            .get("env")
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default();
        env.retain(|v| !v.as_str().is_some_and(|s| s.starts_with("TERM=")));
        env.push(serde_json::json!("TERM=xterm"));
        process["env"] = serde_json::Value::Array(env);
    }
    Ok(prost_types::Any {
        type_url: PROCESS_TYPE_URL.to_owned(),
        value: serde_json::to_vec(&process)
            .map_err(|e| CriError::Internal(format!("encode exec process: {e}")))?,
    })
}

/// Deletes exec `exec_id` of `task`; failures other than NotFound are logged.
pub async fn delete_exec(task: &berth_runtime::Task, exec_id: &str) {
    if let Err(e) = task.delete_process(exec_id).await {
        if berth_errdefs::Classify::kind(&e) != berth_errdefs::ErrorKind::NotFound {
            tracing::warn!(exec_id, error = %e, "delete exec process");
        }
    }
}

/// The live task of `container`, `None` when there is none.
pub fn task_of(cri: &Cri, container: &Container) -> Option<Arc<berth_runtime::Task>> {
    cri.tasks.get(K8S_NAMESPACE, container.id()).ok()
}

/// The container `id` names (id or unique prefix) and its task, when it is running; what ExecSync,
/// Exec and Attach need. FailedPrecondition names the state otherwise.
pub fn running_task(cri: &Cri, id: &str) -> Result<(Arc<Container>, Arc<berth_runtime::Task>)> {
    let container = cri.store.containers.get(id)?;
    let state = container.status().state();
    if state != ContainerState::ContainerRunning {
        return Err(CriError::FailedPrecondition(format!(
            "container is in {} state",
            state_name(state)
        )));
    }
    let task = task_of(cri, &container).ok_or_else(|| {
        CriError::FailedPrecondition(format!("container {} has no running task", container.id()))
    })?;
    Ok((container, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_process_is_the_containers_with_new_args() {
        let spec = br#"{"process":{"args":["sleep","1d"],"cwd":"/","env":["A=1","TERM=vt100"],"terminal":true}}"#;
        let any = exec_process(spec, &["echo".into(), "hi".into()], false).unwrap();
        assert_eq!(any.type_url, PROCESS_TYPE_URL);
        let p: serde_json::Value = serde_json::from_slice(&any.value).unwrap();
        assert_eq!(p["args"], serde_json::json!(["echo", "hi"]));
        assert_eq!(p["env"], serde_json::json!(["A=1", "TERM=vt100"]));
        assert_eq!(p["terminal"], serde_json::json!(false));
        let any = exec_process(spec, &["sh".into()], true).unwrap();
        let p: serde_json::Value = serde_json::from_slice(&any.value).unwrap();
        assert_eq!(p["env"], serde_json::json!(["A=1", "TERM=xterm"]));
        assert_eq!(p["terminal"], serde_json::json!(true));
    }
}
