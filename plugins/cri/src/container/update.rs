//! UpdateContainerResources (containerd `pkg/cri/server/container_update_resources*.go`):
//! the new limits go into the stored spec's `linux.resources` (as `opts.WithResources` sets
//! them: zero and empty fields leave the old value) and, while the task runs, to the shim's
//! Update as OCI `LinuxResources`. If the shim refuses, the old spec is put back.

use berth_core::metadata::AnyValue;
use berth_errdefs::{Classify, ErrorKind};
use berth_proto::runtime::v1::{
    ContainerState, LinuxContainerResources, UpdateContainerResourcesRequest,
    UpdateContainerResourcesResponse,
};
use serde_json::{json, Value};

use super::{blocking, task_of, RESOURCES_TYPE_URL, SPEC_TYPE_URL};
use crate::error::{CriError, Result};
use crate::service::{Cri, K8S_NAMESPACE};
use crate::store::container::StatusResources;

fn object<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    &mut v[key]
}

/// Sets `r` into `spec`'s `linux.resources` as containerd's `WithResources` does.
pub fn apply_resources(spec: &mut Value, r: &LinuxContainerResources, swap: bool) {
    let resources = object(object(spec, "linux"), "resources");
    {
        let cpu = object(resources, "cpu");
        if r.cpu_period != 0 {
            cpu["period"] = json!(r.cpu_period);
        }
        if r.cpu_quota != 0 {
            cpu["quota"] = json!(r.cpu_quota);
        }
        if r.cpu_shares != 0 {
            cpu["shares"] = json!(r.cpu_shares);
        }
        if !r.cpuset_cpus.is_empty() {
            cpu["cpus"] = json!(r.cpuset_cpus);
        }
        if !r.cpuset_mems.is_empty() {
            cpu["mems"] = json!(r.cpuset_mems);
        }
    }
    {
        let memory = object(resources, "memory");
        if r.memory_limit_in_bytes != 0 {
            memory["limit"] = json!(r.memory_limit_in_bytes);
            if r.memory_swap_limit_in_bytes == 0 && swap {
                memory["swap"] = json!(r.memory_limit_in_bytes);
            }
        }
        if r.memory_swap_limit_in_bytes != 0 {
            memory["swap"] = json!(r.memory_swap_limit_in_bytes);
        }
    }
    if !r.unified.is_empty() {
        let unified = object(resources, "unified");
        for (k, v) in &r.unified {
            unified[k.as_str()] = json!(v);
        }
    }
}

/// UpdateContainerResources.
#[tracing::instrument(skip_all, fields(id = %req.container_id))]
pub async fn update_container_resources(
    cri: &Cri,
    req: UpdateContainerResourcesRequest,
) -> Result<UpdateContainerResourcesResponse> {
    let container = cri.store.containers.get(&req.container_id)?;
    let status = container.status();
    if status.removing {
        return Err(CriError::FailedPrecondition(format!(
            "container {:?} is in removing state",
            container.id()
        )));
    }
    let Some(linux) = req.linux else {
        return Ok(UpdateContainerResourcesResponse {});
    };
    let id = container.id().to_owned();
    let mut record = super::record(cri, &id).await?;
    let old = record.spec.clone();
    let mut spec: Value =
        serde_json::from_slice(&old.as_ref().map(|s| s.value.clone()).unwrap_or_default())
            .map_err(|e| CriError::Internal(format!("decode spec of container {id}: {e}")))?;
    apply_resources(
        &mut spec,
        &linux,
        crate::spec::resources::swap_controller_available(),
    );
    let resources = spec["linux"]["resources"].clone();
    let new_resources = StatusResources::from_spec(&spec);
    record.spec = Some(AnyValue {
        type_url: SPEC_TYPE_URL.to_owned(),
        value: serde_json::to_vec(&spec)
            .map_err(|e| CriError::Internal(format!("encode spec of container {id}: {e}")))?,
    });
    save_spec(cri, record.clone()).await?;

    if status.state() == ContainerState::ContainerRunning {
        if let Some(task) = task_of(cri, &container) {
            let any = prost_types::Any {
                type_url: RESOURCES_TYPE_URL.to_owned(),
                value: serde_json::to_vec(&resources)
                    .map_err(|e| CriError::Internal(format!("encode resources: {e}")))?,
            };
            match task.update(Some(any), Default::default()).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    record.spec = old;
                    if let Err(undo) = save_spec(cri, record).await {
                        tracing::error!(error = %undo, "restore spec after failed update");
                    }
                    return Err(CriError::runtime(
                        format!("update resources of container {id}"),
                        e,
                    ));
                }
            }
        }
    }
    container
        .update(move |s| {
            s.resources = new_resources;
            Ok(())
        })
        .await?;
    Ok(UpdateContainerResourcesResponse {})
}

async fn save_spec(cri: &Cri, record: berth_core::Container) -> Result<()> {
    let meta = cri.meta.clone();
    blocking(move || {
        let id = record.id.clone();
        meta.update_container(K8S_NAMESPACE, record, &["spec".to_owned()])
            .map(|_| ())
            .map_err(|e| CriError::metadata(format!("update spec of container {id}"), e))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_fields_keep_old_values() {
        let mut spec = json!({"linux": {"resources": {"cpu": {"shares": 2, "quota": 5}}}});
        let r = LinuxContainerResources {
            cpu_quota: 20000,
            cpu_period: 100000,
            memory_limit_in_bytes: 1 << 20,
            ..Default::default()
        };
        apply_resources(&mut spec, &r, true);
        let res = &spec["linux"]["resources"];
        assert_eq!(res["cpu"]["shares"], json!(2));
        assert_eq!(res["cpu"]["quota"], json!(20000));
        assert_eq!(res["memory"]["limit"], json!(1 << 20));
        assert_eq!(res["memory"]["swap"], json!(1 << 20));
        let mut bare = json!({});
        apply_resources(&mut bare, &r, false);
        assert!(bare["linux"]["resources"]["memory"].get("swap").is_none());
    }
}
