//! ContainerStatus (containerd `pkg/cri/server/container_status.go`): state, times, exit
//! code and reason (`Completed`/`Error` when the exit left none), the image as a tag and its
//! digest reference, labels, annotations, mounts, log path and resources.

use std::collections::HashMap;

use berth_proto::runtime::v1::{
    ContainerResources, ContainerState, ContainerStatus, ContainerStatusRequest,
    ContainerStatusResponse, ImageSpec,
};

use crate::error::Result;
use crate::image::lookup::local_image;
use crate::service::Cri;
use crate::store::container::{Container, COMPLETED_EXIT_REASON, ERROR_EXIT_REASON};

/// The image as ContainerStatus reports it: the first tag (else the config's image) and the
/// first digest reference (else the image id).
pub async fn image_of(cri: &Cri, container: &Container) -> (ImageSpec, String) {
    let mut spec = container.meta.config.image.clone().unwrap_or_default();
    let mut image_ref = container.meta.image_ref.clone();
    if let Ok(image) = local_image(cri, &container.meta.image_ref).await {
        if let Some(tag) = image.references.iter().find(|r| !r.contains('@')) {
            spec = ImageSpec {
                image: tag.clone(),
                annotations: spec.annotations,
            };
        }
        if let Some(digest) = image.references.iter().find(|r| r.contains('@')) {
            image_ref = digest.clone();
        }
    }
    (spec, image_ref)
}

/// The CRI status of `container`.
pub fn to_cri_status(
    container: &Container,
    image: ImageSpec,
    image_ref: String,
) -> ContainerStatus {
    let status = container.status();
    let state = status.state();
    let mut reason = status.reason.clone();
    if state == ContainerState::ContainerExited && reason.is_empty() {
        reason = if status.exit_code == 0 {
            COMPLETED_EXIT_REASON
        } else {
            ERROR_EXIT_REASON
        }
        .to_owned();
    }
    let (started_at, finished_at) = match state {
        ContainerState::ContainerRunning => (status.started_at, 0),
        ContainerState::ContainerExited | ContainerState::ContainerUnknown => {
            (status.started_at, status.finished_at)
        }
        ContainerState::ContainerCreated => (0, 0),
    };
    let config = &container.meta.config;
    ContainerStatus {
        id: container.id().to_owned(),
        metadata: config.metadata.clone(),
        state: state as i32,
        created_at: status.created_at,
        started_at,
        finished_at,
        exit_code: status.exit_code,
        image: Some(image),
        image_ref,
        reason,
        message: status.message.clone(),
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        mounts: config.mounts.clone(),
        log_path: container.meta.log_path.clone(),
        resources: status.resources.as_ref().map(|r| ContainerResources {
            linux: Some(r.to_cri()),
            windows: None,
        }),
    }
}

/// ContainerStatus.
#[tracing::instrument(skip_all, fields(id = %req.container_id))]
pub async fn container_status(
    cri: &Cri,
    req: ContainerStatusRequest,
) -> Result<ContainerStatusResponse> {
    let container = cri.store.containers.get(&req.container_id)?;
    let (image, image_ref) = image_of(cri, &container).await;
    let status = to_cri_status(&container, image, image_ref);
    let mut info = HashMap::new();
    if req.verbose {
        let s = container.status();
        let verbose = serde_json::json!({
            "sandboxID": container.meta.sandbox_id,
            "pid": s.pid,
            "removing": s.removing,
            "snapshotKey": container.id(),
            "snapshotter": cri.config.containerd.snapshotter,
            "logPath": container.meta.log_path,
        });
        info.insert("info".to_owned(), verbose.to_string());
    }
    Ok(ContainerStatusResponse {
        status: Some(status),
        info,
    })
}
