//! ListContainers (containerd `pkg/cri/server/container_list.go`): every container, filtered by
//! id (or a unique prefix of one), state, pod sandbox id (or prefix) and label selector.

use std::collections::HashMap;

use berth_proto::runtime::v1::{
    Container as CriContainer, ContainerFilter, ListContainersRequest, ListContainersResponse,
};

use crate::error::Result;
use crate::service::Cri;
use crate::store::container::Container;

/// Whether `labels` has every `key=value` of `selector`.
pub fn matches_labels(
    selector: &HashMap<String, String>,
    labels: &HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn to_cri(c: &Container) -> CriContainer {
    let status = c.status();
    let config = &c.meta.config;
    CriContainer {
        id: c.id().to_owned(),
        pod_sandbox_id: c.meta.sandbox_id.clone(),
        metadata: config.metadata.clone(),
        image: config.image.clone(),
        image_ref: c.meta.image_ref.clone(),
        state: status.state() as i32,
        created_at: status.created_at,
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
    }
}

/// The full ids a filter's `id` and `pod_sandbox_id` name (unique prefixes resolved).
pub fn normalize(cri: &Cri, id: &str, sandbox: &str) -> (String, String) {
    let id = cri
        .store
        .containers
        .get(id)
        .map(|c| c.id().to_owned())
        .unwrap_or_else(|_| id.to_owned());
    let sandbox = cri
        .store
        .sandboxes
        .resolve(sandbox)
        .unwrap_or_else(|_| sandbox.to_owned());
    (id, sandbox)
}

/// Whether `c` passes `filter`, whose `id` and `pod_sandbox_id` are already [`normalize`]d.
fn keep(filter: &ContainerFilter, id: &str, sandbox: &str, c: &CriContainer) -> bool {
    if !id.is_empty() && id != c.id {
        return false;
    }
    if !sandbox.is_empty() && sandbox != c.pod_sandbox_id {
        return false;
    }
    if let Some(state) = &filter.state {
        if state.state != c.state {
            return false;
        }
    }
    matches_labels(&filter.label_selector, &c.labels)
}

/// ListContainers.
#[tracing::instrument(skip_all)]
pub async fn list_containers(
    cri: &Cri,
    req: ListContainersRequest,
) -> Result<ListContainersResponse> {
    let filter = req.filter.map(|f| {
        let (id, sandbox) = normalize(cri, &f.id, &f.pod_sandbox_id);
        (f, id, sandbox)
    });
    let containers = cri
        .store
        .containers
        .list()
        .iter()
        .map(|c| to_cri(c))
        .filter(|c| {
            filter
                .as_ref()
                .is_none_or(|(f, id, sandbox)| keep(f, id, sandbox, c))
        })
        .collect();
    Ok(ListContainersResponse { containers })
}
