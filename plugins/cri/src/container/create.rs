//! CreateContainer (containerd `pkg/cri/server/container_create.go`): reserve the name, find
//! the image, prepare the rootfs snapshot on the image's top layer, build the spec, write the
//! container record (labels `io.cri-containerd.kind=container` and the config's, the metadata
//! extension) and the status file. Whatever fails is undone before the error returns.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use berth_core::metadata::{AnyValue, RuntimeRecord};
use berth_mount::Mount;
use berth_proto::runtime::v1::{
    ContainerConfig, CreateContainerRequest, CreateContainerResponse, NamespaceMode,
    PodSandboxConfig,
};
use berth_wellknown::label;

use super::{blocking, new_id, SPEC_TYPE_URL};
use crate::error::{CriError, Result};
use crate::image::lookup::{local_image, LocalImage};
use crate::service::{Cri, K8S_NAMESPACE};
use crate::spec::ContainerSpecInput;
use crate::store::container::{
    container_dir, now_nanos, write_status, Container, ContainerMetadata, Status, StatusResources,
    KIND_CONTAINER, METADATA_EXTENSION, METADATA_TYPE_URL,
};
use crate::store::sandbox::{Sandbox, SandboxState, KIND_LABEL};

/// containerd's container name: `<name>_<pod name>_<pod namespace>_<pod uid>_<attempt>`.
pub fn container_name(config: &ContainerConfig, sandbox: &PodSandboxConfig) -> Result<String> {
    let m = config
        .metadata
        .as_ref()
        .ok_or_else(|| CriError::invalid("config.metadata", "missing"))?;
    if m.name.is_empty() {
        return Err(CriError::invalid("config.metadata.name", "empty"));
    }
    let s = sandbox.metadata.clone().unwrap_or_default();
    Ok(format!(
        "{}_{}_{}_{}_{}",
        m.name, s.name, s.namespace, s.uid, m.attempt
    ))
}

/// The container's log file: the pod's `log_directory` joined with the config's `log_path`;
/// "" (no log file) when either is empty. The directory must be absolute and the path must
/// stay inside it.
pub fn log_path(sandbox: &PodSandboxConfig, config: &ContainerConfig) -> Result<String> {
    let (dir, rel) = (&sandbox.log_directory, &config.log_path);
    if dir.is_empty() || rel.is_empty() {
        return Ok(String::new());
    }
    if !Path::new(dir).is_absolute() {
        return Err(CriError::invalid(
            "sandbox_config.log_directory",
            format!("{dir:?} is not an absolute path"),
        ));
    }
    let path = Path::new(rel);
    let escapes = path.components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::RootDir | Component::Prefix(_)
        )
    });
    if escapes {
        return Err(CriError::invalid(
            "config.log_path",
            format!("{rel:?} is outside the log directory {dir:?}"),
        ));
    }
    Ok(Path::new(dir).join(path).display().to_string())
}

/// Labels of the container record: the image's, the config's over them, and the kind.
fn record_labels(config: &ContainerConfig, image: &LocalImage) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.extend(config.labels.clone());
    labels.insert(KIND_LABEL.to_owned(), KIND_CONTAINER.to_owned());
    labels
}

/// What was made so far, to undo.
#[derive(Debug, Default)]
struct Made {
    lease: Option<String>,
    snapshot: bool,
    dir: bool,
    record: bool,
}

/// CreateContainer.
#[tracing::instrument(skip_all, fields(sandbox = %req.pod_sandbox_id, id))]
pub async fn create_container(
    cri: &Cri,
    req: CreateContainerRequest,
) -> Result<CreateContainerResponse> {
    let config = req
        .config
        .ok_or_else(|| CriError::invalid("config", "missing"))?;
    let sandbox = cri.store.sandboxes.get(&req.pod_sandbox_id)?;
    let sandbox_config = req
        .sandbox_config
        .unwrap_or_else(|| sandbox.config().clone());
    let name = container_name(&config, &sandbox_config)?;
    let log_path = log_path(&sandbox_config, &config)?;
    if sandbox.state != SandboxState::Ready || sandbox.pid == 0 {
        return Err(CriError::FailedPrecondition(format!(
            "sandbox {} is not ready",
            sandbox.id()
        )));
    }
    let id = new_id();
    tracing::Span::current().record("id", id.as_str());
    cri.store.containers.reserve_name(&name, &id)?;
    let mut made = Made::default();
    let result = create(
        cri,
        &id,
        &name,
        config,
        sandbox,
        sandbox_config,
        log_path,
        &mut made,
    )
    .await;
    if let Some(lease) = made.lease.take() {
        drop_lease(cri, lease).await;
    }
    match result {
        Ok(container) => {
            cri.store.containers.add(container);
            Ok(CreateContainerResponse { container_id: id })
        }
        Err(e) => {
            undo(cri, &id, &made).await;
            cri.store.containers.release_name(&name, &id);
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn create(
    cri: &Cri,
    id: &str,
    name: &str,
    config: ContainerConfig,
    sandbox: Sandbox,
    sandbox_config: PodSandboxConfig,
    log_path: String,
    made: &mut Made,
) -> Result<Arc<Container>> {
    let image_name = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    if image_name.is_empty() {
        return Err(CriError::invalid("config.image.image", "empty"));
    }
    let image = local_image(cri, &image_name).await?;
    // The container runs with the pod's runtime, as its pause container does.
    let pause = super::record(cri, sandbox.id()).await?;
    let target_pid = target_pid(cri, &config);

    let snapshotter = cri.config.containerd.snapshotter.clone();
    let lease = format!("cri-create-{id}");
    let mounts = {
        let (meta, snapshots) = (cri.meta.clone(), cri.snapshots.clone());
        let (sn, key, parent, lease) = (
            snapshotter.clone(),
            id.to_owned(),
            image.chain_id.clone(),
            lease.clone(),
        );
        // Only the snapshot labels a container may pass on (containerd
        // `snapshots.FilterInheritedLabels`).
        let labels: BTreeMap<String, String> = config
            .annotations
            .iter()
            .filter(|(k, _)| k.starts_with(label::SNAPSHOT_INHERITED_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        made.lease = Some(lease.clone());
        blocking(move || {
            crate::rootfs::prepare_under_lease(
                &meta, &snapshots, &sn, &key, &parent, labels, &lease,
            )
        })
        .await?
    };
    made.snapshot = true;

    let dir = container_dir(&cri.root, id);
    made.dir = true;
    let spec = {
        let (cri2, id2, dir2) = (cri.clone(), id.to_owned(), dir.clone());
        let (config2, sandbox_config2, image2) =
            (config.clone(), sandbox_config.clone(), image.clone());
        let sandbox2 = sandbox.clone();
        let mounts: Vec<Mount> = mounts;
        blocking(move || {
            std::fs::create_dir_all(&dir2).map_err(|e| CriError::io("create", &dir2, e))?;
            let runtime = cri2
                .config
                .runtime(&sandbox2.metadata.runtime_handler)
                .ok_or_else(|| {
                    CriError::FailedPrecondition(format!(
                        "runtime handler {:?} of sandbox {} is not configured",
                        sandbox2.metadata.runtime_handler,
                        sandbox2.id()
                    ))
                })?;
            let input = ContainerSpecInput {
                id: &id2,
                sandbox_id: sandbox2.id(),
                config: &config2,
                sandbox_config: &sandbox_config2,
                sandbox_pid: sandbox2.pid,
                target_pid,
                netns_path: sandbox2.netns_path(),
                files: &sandbox2.files,
                image: &image2,
                rootfs: &mounts,
                container_dir: &dir2,
                runtime,
                cri: &cri2.config,
            };
            crate::spec::container_spec(&input)
        })
        .await?
    };
    let cgroups_path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let spec_json = serde_json::to_value(&spec)
        .map_err(|e| CriError::Internal(format!("encode spec of container {id}: {e}")))?;
    let spec_bytes = serde_json::to_vec(&spec_json)
        .map_err(|e| CriError::Internal(format!("encode spec of container {id}: {e}")))?;

    let stop_signal = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.stop_signal().clone())
        .unwrap_or_default();
    let meta = ContainerMetadata {
        id: id.to_owned(),
        name: name.to_owned(),
        sandbox_id: sandbox.id().to_owned(),
        config: config.clone(),
        image_ref: image.id.clone(),
        log_path,
        stop_signal,
        cgroups_path,
    };
    let record = berth_core::Container {
        id: id.to_owned(),
        labels: record_labels(&config, &image),
        image: image.references.first().cloned().unwrap_or_default(),
        runtime: RuntimeRecord {
            name: pause.runtime.name.clone(),
            options: pause.runtime.options.clone(),
        },
        spec: Some(AnyValue {
            type_url: SPEC_TYPE_URL.to_owned(),
            value: spec_bytes,
        }),
        snapshotter,
        snapshot_key: id.to_owned(),
        created_at: SystemTime::now(),
        updated_at: SystemTime::now(),
        extensions: BTreeMap::from([(
            METADATA_EXTENSION.to_owned(),
            AnyValue {
                type_url: METADATA_TYPE_URL.to_owned(),
                value: meta.to_json()?,
            },
        )]),
    };
    let status = Status {
        created_at: now_nanos(),
        resources: StatusResources::from_spec(&spec_json),
        ..Default::default()
    };
    {
        let (store, status, dir) = (cri.meta.clone(), status.clone(), dir.clone());
        let id2 = id.to_owned();
        made.record = true;
        blocking(move || {
            store
                .create_container(K8S_NAMESPACE, record)
                .map_err(|e| CriError::metadata(format!("create container {id2}"), e))?;
            write_status(&dir, &status)
        })
        .await?;
    }
    Ok(Arc::new(Container::new(meta, status, dir)))
}

/// The pid of the container a `TARGET` PID namespace names, if it runs.
fn target_pid(cri: &Cri, config: &ContainerConfig) -> Option<u32> {
    let ns = config
        .linux
        .as_ref()?
        .security_context
        .as_ref()?
        .namespace_options
        .as_ref()?;
    if ns.pid != NamespaceMode::Target as i32 || ns.target_id.is_empty() {
        return None;
    }
    let target = cri.store.containers.get(&ns.target_id).ok()?;
    let pid = target.status().pid;
    (pid != 0).then_some(pid)
}

async fn drop_lease(cri: &Cri, lease: String) {
    let meta = cri.meta.clone();
    let result = blocking(move || match meta.delete_lease(K8S_NAMESPACE, &lease) {
        Ok(()) => Ok(()),
        Err(e) if berth_errdefs::Classify::kind(&e) == berth_errdefs::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CriError::metadata(format!("delete lease {lease}"), e)),
    })
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "drop create lease");
    }
}

/// Undoes what [`create`] made, newest first; failures are logged.
async fn undo(cri: &Cri, id: &str, made: &Made) {
    let (meta, snapshots, root) = (cri.meta.clone(), cri.snapshots.clone(), cri.root.clone());
    let sn = cri.config.containerd.snapshotter.clone();
    let (id, record, snapshot, dir) = (id.to_owned(), made.record, made.snapshot, made.dir);
    let _ = blocking(move || {
        if record {
            if let Err(e) = meta.delete_container(K8S_NAMESPACE, &id) {
                tracing::warn!(id = %id, error = %e, "undo: delete container record");
            }
        }
        if snapshot {
            if let Err(e) = snapshots.remove(K8S_NAMESPACE, &sn, &id) {
                tracing::warn!(id = %id, error = %e, "undo: remove rootfs snapshot");
            }
        }
        if dir {
            let path: PathBuf = container_dir(&root, &id);
            if let Err(e) = std::fs::remove_dir_all(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "undo: remove container dir");
                }
            }
        }
        Ok(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use berth_proto::runtime::v1::{ContainerMetadata as CriMeta, PodSandboxMetadata};

    use super::*;

    fn configs(dir: &str, path: &str) -> (PodSandboxConfig, ContainerConfig) {
        (
            PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "pod".into(),
                    uid: "uid".into(),
                    namespace: "ns".into(),
                    attempt: 0,
                }),
                log_directory: dir.into(),
                ..Default::default()
            },
            ContainerConfig {
                metadata: Some(CriMeta {
                    name: "c".into(),
                    attempt: 3,
                }),
                log_path: path.into(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn names_as_containerd() {
        let (s, c) = configs("", "");
        assert_eq!(container_name(&c, &s).unwrap(), "c_pod_ns_uid_3");
        let bad = ContainerConfig::default();
        match container_name(&bad, &s) {
            Err(CriError::InvalidArgument { field, .. }) => assert_eq!(field, "config.metadata"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn log_paths_stay_inside_an_absolute_directory() {
        let (s, c) = configs("/var/log/pods/x", "c/0.log");
        assert_eq!(log_path(&s, &c).unwrap(), "/var/log/pods/x/c/0.log");
        let (s, c) = configs("", "c.log");
        assert_eq!(log_path(&s, &c).unwrap(), "");
        for (dir, path, field) in [
            ("relative/dir", "c.log", "sandbox_config.log_directory"),
            ("/logs", "../escape.log", "config.log_path"),
            ("/logs", "/etc/passwd", "config.log_path"),
            ("/logs", "a/../../b", "config.log_path"),
        ] {
            let (s, c) = configs(dir, path);
            match log_path(&s, &c) {
                Err(CriError::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{dir} {path}: {other:?}"),
            }
        }
    }
}
