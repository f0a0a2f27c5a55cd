//! PodSandboxStatus (containerd `pkg/cri/server/sandbox_status.go`).

use std::collections::HashMap;

use berth_proto::runtime::v1::{
    LinuxPodSandboxStatus, Namespace, NamespaceOption, PodIp, PodSandboxNetworkStatus,
    PodSandboxStatus, PodSandboxStatusRequest, PodSandboxStatusResponse,
};

use super::host_network;
use crate::error::Result;
use crate::service::{Cri, K8S_NAMESPACE};
use crate::store::sandbox::Sandbox;

/// PodSandboxStatus.
#[tracing::instrument(skip_all, fields(id = %req.pod_sandbox_id))]
pub async fn pod_sandbox_status(
    cri: &Cri,
    req: PodSandboxStatusRequest,
) -> Result<PodSandboxStatusResponse> {
    let sandbox = cri.store.sandboxes.get(&req.pod_sandbox_id)?;
    let info = if req.verbose {
        verbose_info(cri, &sandbox).await
    } else {
        HashMap::new()
    };
    Ok(PodSandboxStatusResponse {
        status: Some(to_status(&sandbox)),
        info: info.into_iter().collect(),
        ..Default::default()
    })
}

/// The pod IPs as containerd reports them: none for a host-network pod or once the network
/// namespace is gone.
fn ips(sandbox: &Sandbox) -> (String, Vec<String>) {
    if host_network(sandbox.config()) {
        return (String::new(), Vec::new());
    }
    match sandbox.netns_path() {
        Some(p) if crate::netns::is_pinned(p) => (
            sandbox.metadata.ip.clone(),
            sandbox.metadata.additional_ips.clone(),
        ),
        _ => (String::new(), Vec::new()),
    }
}

/// The CRI status of `sandbox`.
pub fn to_status(sandbox: &Sandbox) -> PodSandboxStatus {
    let config = sandbox.config();
    let (ip, additional) = ips(sandbox);
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    PodSandboxStatus {
        id: sandbox.id().to_owned(),
        metadata: config.metadata.clone(),
        state: sandbox.state.to_cri() as i32,
        created_at: sandbox.metadata.created_at,
        network: Some(PodSandboxNetworkStatus {
            ip,
            additional_ips: additional.into_iter().map(|ip| PodIp { ip }).collect(),
        }),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(NamespaceOption {
                    network: options.network,
                    pid: options.pid,
                    ipc: options.ipc,
                    target_id: options.target_id,
                    userns_options: options.userns_options,
                }),
            }),
        }),
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        runtime_handler: sandbox.metadata.runtime_handler.clone(),
    }
}

/// The `info` map of a verbose status: key `info`, a JSON document with containerd's field
/// names where Berth has the value.
async fn verbose_info(cri: &Cri, sandbox: &Sandbox) -> HashMap<String, String> {
    let (meta, id) = (cri.meta.clone(), sandbox.id().to_owned());
    let record = super::blocking(move || {
        meta.get_container(K8S_NAMESPACE, &id)
            .map_err(|e| crate::error::CriError::metadata("get sandbox record", e))
    })
    .await
    .ok();
    let spec: serde_json::Value = record
        .as_ref()
        .and_then(|r| r.spec.as_ref())
        .and_then(|s| serde_json::from_slice(&s.value).ok())
        .unwrap_or_default();
    let process_status = match cri.tasks.get(K8S_NAMESPACE, sandbox.id()) {
        Ok(task) => match task.state("").await {
            Ok(s) => match berth_proto::containerd::v1::types::Status::try_from(s.status) {
                Ok(st) => st.as_str_name().to_lowercase(),
                Err(_) => "unknown".to_owned(),
            },
            Err(_) => "unknown".to_owned(),
        },
        Err(_) => "deleted".to_owned(),
    };
    let net_closed = sandbox
        .netns_path()
        .map(|p| !crate::netns::is_pinned(p))
        .unwrap_or(true);
    let doc = serde_json::json!({
        "pid": sandbox.pid,
        "processStatus": process_status,
        "netNamespaceClosed": net_closed,
        "netNamespacePath": sandbox.netns_path().map(|p| p.display().to_string()).unwrap_or_default(),
        "image": record.as_ref().map(|r| r.image.clone()).unwrap_or_default(),
        "snapshotKey": record.as_ref().map(|r| r.snapshot_key.clone()).unwrap_or_default(),
        "snapshotter": record.as_ref().map(|r| r.snapshotter.clone()).unwrap_or_default(),
        "runtimeHandler": sandbox.metadata.runtime_handler,
        "runtimeType": sandbox.metadata.runtime_type,
        "runtimeSpec": spec,
    });
    HashMap::from([("info".to_owned(), doc.to_string())])
}
