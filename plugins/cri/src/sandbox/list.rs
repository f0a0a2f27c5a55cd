//! ListPodSandbox (containerd `pkg/cri/server/sandbox_list.go`): filters by id (or a unique
//! prefix), state and labels (every selector label must match).

use berth_proto::runtime::v1::{
    ListPodSandboxRequest, ListPodSandboxResponse, PodSandbox, PodSandboxFilter,
};

use crate::error::Result;
use crate::service::Cri;
use crate::store::sandbox::Sandbox;

/// ListPodSandbox.
#[tracing::instrument(skip_all)]
pub async fn list_pod_sandbox(
    cri: &Cri,
    req: ListPodSandboxRequest,
) -> Result<ListPodSandboxResponse> {
    let mut filter = req.filter.unwrap_or_default();
    if !filter.id.is_empty() {
        // A truncated id names the sandbox it is the unique prefix of.
        if let Ok(full) = cri.store.sandboxes.resolve(&filter.id) {
            filter.id = full;
        }
    }
    let items = cri
        .store
        .sandboxes
        .list()
        .iter()
        .filter(|s| matches(s, &filter))
        .map(to_cri)
        .collect();
    Ok(ListPodSandboxResponse { items })
}

fn matches(sandbox: &Sandbox, filter: &PodSandboxFilter) -> bool {
    if !filter.id.is_empty() && sandbox.id() != filter.id {
        return false;
    }
    if let Some(state) = &filter.state {
        if sandbox.state.to_cri() as i32 != state.state {
            return false;
        }
    }
    filter
        .label_selector
        .iter()
        .all(|(k, v)| sandbox.config().labels.get(k) == Some(v))
}

fn to_cri(sandbox: &Sandbox) -> PodSandbox {
    let config = sandbox.config();
    PodSandbox {
        id: sandbox.id().to_owned(),
        metadata: config.metadata.clone(),
        state: sandbox.state.to_cri() as i32,
        created_at: sandbox.metadata.created_at,
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        runtime_handler: sandbox.metadata.runtime_handler.clone(),
    }
}
