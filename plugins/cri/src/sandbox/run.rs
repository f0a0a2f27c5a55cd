//! RunPodSandbox (containerd `pkg/cri/server/sandbox_run.go`): reserve the name, find the pause
//! image, make and pin the network namespace, CNI ADD, write the pod's files, build the spec,
//! record the pause container (`k8s.io`, kind `sandbox`, the metadata extension), prepare its
//! rootfs, create and start its task, watch it. Any failure undoes every step made so far.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use berth_core::metadata::{AnyValue, RuntimeRecord};
use berth_core::Container;
use berth_proto::runtime::v1::{
    PodSandboxConfig, Protocol, RunPodSandboxRequest, RunPodSandboxResponse,
};
use berth_runtime::{CreateOpts, TaskIo};
use prost::Message;

use super::{blocking, host_ipc, host_network};
use crate::cni::{PodNetwork, PortMapping};
use crate::config::RuntimeHandler;
use crate::container::{new_id, SPEC_TYPE_URL};
use crate::error::{CriError, Result};
use crate::image::lookup::LocalImage;
use crate::service::{Cri, K8S_NAMESPACE};
use crate::spec::{SandboxFiles, SandboxSpecInput};
use crate::store::container::now_nanos;
use crate::store::sandbox::{
    sandbox_dir, sandbox_files, sandbox_name, Sandbox, SandboxMetadata, SandboxState, KIND_LABEL,
    KIND_SANDBOX, METADATA_EXTENSION, METADATA_TYPE_URL,
};

/// The size of a pod's /dev/shm (containerd `defaultShmSize`, 64 MiB).
const SHM_SIZE: u64 = 64 * 1024 * 1024;
/// The host files copied into a pod.
const HOST_HOSTS: &str = "/etc/hosts";
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// The most search domains a resolv.conf may list (containerd's and glibc's limit).
const MAX_DNS_SEARCHES: usize = 6;

/// RunPodSandbox.
#[tracing::instrument(skip_all, fields(id))]
pub async fn run_pod_sandbox(
    cri: &Cri,
    req: RunPodSandboxRequest,
) -> Result<RunPodSandboxResponse> {
    let config = req
        .config
        .ok_or_else(|| CriError::invalid("config", "missing"))?;
    let name = sandbox_name(&config)?;
    let id = new_id();
    tracing::Span::current().record("id", id.as_str());
    cri.store.sandboxes.reserve_name(&name, &id)?;
    let handler_name = req.runtime_handler;
    // On a task of its own: a client that gives up (the kubelet's deadline) drops this future,
    // and a RunPodSandbox stopped halfway would leave what it made without a record.
    let (cri, span) = (cri.clone(), tracing::Span::current());
    let work = async move {
        match run(&cri, &id, &name, config, &handler_name).await {
            Ok(()) => Ok(RunPodSandboxResponse { pod_sandbox_id: id }),
            Err(e) => {
                tracing::warn!(id = %id, error = %e, "RunPodSandbox failed, undoing");
                undo(&cri, &id, &handler_name).await;
                cri.store.sandboxes.release_name(&name);
                Err(e)
            }
        }
    };
    tokio::spawn(tracing::Instrument::instrument(work, span))
        .await
        .map_err(|e| CriError::Internal(format!("RunPodSandbox task failed: {e}")))?
}

async fn run(
    cri: &Cri,
    id: &str,
    name: &str,
    config: PodSandboxConfig,
    handler_name: &str,
) -> Result<()> {
    let handler = cri
        .config
        .runtime(handler_name)
        .ok_or_else(|| {
            CriError::invalid(
                "runtime_handler",
                format!("no runtime for {handler_name:?} is configured"),
            )
        })?
        .clone();
    let image = super::boxed(crate::image::lookup::ensure_image(
        cri,
        &cri.config.sandbox_image,
    ))
    .await?;

    // The network: a pinned namespace (the pin file is its record), then CNI ADD (its record
    // is written before the first plugin runs).
    let (netns_path, ip, additional_ips) = if host_network(&config) {
        (None, String::new(), Vec::new())
    } else {
        let path = crate::netns::netns_path(&cri.state, id);
        let p = path.clone();
        blocking(move || crate::netns::create(&p)).await?;
        let pod = pod_network(id, &path, &config);
        let cni = crate::cni::for_config(cri, handler_name);
        let setup = blocking(move || Ok(cni.setup(&pod.target())?)).await?;
        let (ip, others) = crate::cni::result::select_pod_ips(&setup.ips, &cri.config.cni.ip_pref);
        (Some(path), ip, others)
    };

    let files = sandbox_files(&cri.root, id, !host_ipc(&config));
    {
        let (root, id, config, files) = (
            cri.root.clone(),
            id.to_owned(),
            config.clone(),
            files.clone(),
        );
        blocking(move || write_files(&root, &id, &config, &files)).await?;
    }

    let spec = crate::spec::sandbox_spec(&SandboxSpecInput {
        id,
        config: &config,
        image: &image,
        netns_path: netns_path.as_deref(),
        files: &files,
        runtime: &handler,
        cri: &cri.config,
    })?;
    let spec_json = serde_json::to_vec(&spec)
        .map_err(|e| CriError::Internal(format!("encode sandbox {id} spec: {e}")))?;

    let metadata = SandboxMetadata {
        id: id.to_owned(),
        name: name.to_owned(),
        config,
        netns_path: netns_path.clone(),
        ip,
        additional_ips,
        runtime_handler: handler_name.to_owned(),
        runtime_type: handler.runtime_type.clone(),
        created_at: now_nanos(),
    };
    let rootfs = create_records(cri, &metadata, &image, &handler, spec_json.clone()).await?;

    let task = super::boxed(cri.tasks.create(CreateOpts {
        namespace: K8S_NAMESPACE.to_owned(),
        id: id.to_owned(),
        spec: spec_json,
        rootfs,
        runtime: handler.runtime_type.clone(),
        runtime_path: String::new(),
        runtime_options: runtime_options(&handler)?,
        task_options: None,
        io: TaskIo::default(),
        checkpoint: String::new(),
    }))
    .await
    .map_err(|e| CriError::runtime(format!("create sandbox {id} task"), e))?;
    let pid = task.pid();
    super::boxed(task.start(""))
        .await
        .map_err(|e| CriError::runtime(format!("start sandbox {id} task"), e))?;
    cri.store.sandboxes.add(Sandbox {
        metadata,
        state: SandboxState::Ready,
        pid,
        files,
    });
    super::watch_exit(cri, id);
    tracing::info!(id = %id, name = %name, pid, "sandbox running");
    Ok(())
}

/// Undoes whatever `run` got to, last step first; each step is idempotent and logged, not
/// returned (the caller returns the error that made it undo).
async fn undo(cri: &Cri, id: &str, handler_name: &str) {
    if let Err(e) = super::kill_pause(cri, id).await {
        tracing::warn!(id = %id, error = %e, "undo: kill pause");
    }
    if let Err(e) = super::delete_task(cri, id).await {
        tracing::warn!(id = %id, error = %e, "undo: delete task");
    }
    if let Err(e) = super::remove_records(cri, id).await {
        tracing::warn!(id = %id, error = %e, "undo: remove records");
    }
    let root = cri.root.clone();
    let sid = id.to_owned();
    if let Err(e) = blocking(move || super::remove_files(&root, &sid)).await {
        tracing::warn!(id = %id, error = %e, "undo: remove files");
    }
    let netns = crate::netns::netns_path(&cri.state, id);
    if let Err(e) = super::teardown_network(cri, id, handler_name, Some(netns)).await {
        tracing::warn!(id = %id, error = %e, "undo: network");
    }
}

fn pod_network(id: &str, netns: &Path, config: &PodSandboxConfig) -> PodNetwork {
    let meta = config.metadata.clone().unwrap_or_default();
    // containerd `toCNIPortMappings`: only mappings with a host port, protocol in lower case.
    let port_mappings = config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| PortMapping {
            host_port: p.host_port,
            container_port: p.container_port,
            protocol: Protocol::try_from(p.protocol)
                .unwrap_or(Protocol::Tcp)
                .as_str_name()
                .to_lowercase(),
            host_ip: p.host_ip.clone(),
        })
        .collect();
    PodNetwork {
        id: id.to_owned(),
        netns: netns.to_owned(),
        namespace: meta.namespace,
        name: meta.name,
        uid: meta.uid,
        port_mappings,
    }
}

/// The pod's hostname, hosts, resolv.conf and /dev/shm (containerd `setupSandboxFiles`).
fn write_files(
    root: &Path,
    id: &str,
    config: &PodSandboxConfig,
    files: &SandboxFiles,
) -> Result<()> {
    let dir = sandbox_dir(root, id);
    std::fs::create_dir_all(&dir).map_err(|e| CriError::io("create sandbox dir", &dir, e))?;
    let hostname = if config.hostname.is_empty() {
        nix::unistd::gethostname()
            .map_err(|e| CriError::io("read host name", "", e.into()))?
            .to_string_lossy()
            .into_owned()
    } else {
        config.hostname.clone()
    };
    write_file(&files.hostname, format!("{hostname}\n").as_bytes())?;
    // As containerd's `copyFile`: a host file that cannot be read fails the pod instead of
    // giving it an empty one.
    let read_host = |path: &str| std::fs::read(path).map_err(|e| CriError::io("read", path, e));
    let hosts = read_host(HOST_HOSTS)?;
    write_file(&files.hosts, &hosts)?;
    let resolv = match config
        .dns_config
        .as_ref()
        .map(|d| resolv_conf(&d.servers, &d.searches, &d.options))
    {
        Some(r) => r?,
        None => String::new(),
    };
    let resolv = if resolv.is_empty() {
        read_host(HOST_RESOLV_CONF)?
    } else {
        resolv.into_bytes()
    };
    write_file(&files.resolv_conf, &resolv)?;
    if let Some(shm) = &files.shm {
        std::fs::create_dir_all(shm).map_err(|e| CriError::io("create sandbox shm", shm, e))?;
        use nix::mount::MsFlags;
        nix::mount::mount(
            Some("shm"),
            shm,
            Some("tmpfs"),
            MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("mode=1777,size={SHM_SIZE}").as_str()),
        )
        .map_err(|e| CriError::io("mount sandbox shm", shm, e.into()))?;
    }
    Ok(())
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| CriError::io("create", path, e))?;
    f.write_all(data)
        .map_err(|e| CriError::io("write", path, e))?;
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| CriError::io("chmod", path, e))
}

/// A resolv.conf from the pod's DNS config (containerd `parseDNSOptions`); "" when all three
/// are empty.
pub fn resolv_conf(servers: &[String], searches: &[String], options: &[String]) -> Result<String> {
    if searches.len() > MAX_DNS_SEARCHES {
        return Err(CriError::invalid(
            "config.dns_config.searches",
            format!("more than {MAX_DNS_SEARCHES} domains"),
        ));
    }
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    Ok(out)
}

/// Prepares the pause rootfs snapshot and creates the pause container record; returns the
/// rootfs mounts.
async fn create_records(
    cri: &Cri,
    metadata: &SandboxMetadata,
    image: &LocalImage,
    handler: &RuntimeHandler,
    spec: Vec<u8>,
) -> Result<Vec<berth_mount::Mount>> {
    let mut labels: BTreeMap<String, String> = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .map(|l| l.into_iter().collect())
        .unwrap_or_default();
    labels.extend(metadata.config.labels.clone());
    labels.insert(KIND_LABEL.to_owned(), KIND_SANDBOX.to_owned());
    let ext = AnyValue {
        type_url: METADATA_TYPE_URL.to_owned(),
        value: metadata.to_json()?,
    };
    let options = runtime_options(handler)?.map(|o| AnyValue {
        type_url: o.type_url,
        value: o.value,
    });
    let now = SystemTime::now();
    let record = Container {
        id: metadata.id.clone(),
        labels,
        image: image
            .references
            .first()
            .cloned()
            .unwrap_or_else(|| cri.config.sandbox_image.clone()),
        runtime: RuntimeRecord {
            name: handler.runtime_type.clone(),
            options,
        },
        spec: Some(AnyValue {
            type_url: SPEC_TYPE_URL.to_owned(),
            value: spec,
        }),
        snapshotter: cri.config.containerd.snapshotter.clone(),
        snapshot_key: metadata.id.clone(),
        created_at: now,
        updated_at: now,
        extensions: BTreeMap::from([(METADATA_EXTENSION.to_owned(), ext)]),
    };
    let (meta, snapshots) = (cri.meta.clone(), cri.snapshots.clone());
    let parent = image.chain_id.clone();
    blocking(move || {
        let id = record.id.clone();
        let lease = format!("cri-sandbox-{id}");
        let made = crate::rootfs::prepare_under_lease(
            &meta,
            &snapshots,
            &record.snapshotter,
            &id,
            &parent,
            BTreeMap::new(),
            &lease,
        )
        .and_then(|mounts| {
            meta.create_container(K8S_NAMESPACE, record)
                .map_err(|e| CriError::metadata(format!("create sandbox {id} record"), e))?;
            Ok(mounts)
        });
        if let Err(e) = meta.delete_lease(K8S_NAMESPACE, &lease) {
            tracing::warn!(lease = %lease, error = %e, "delete the sandbox creation lease");
        }
        made
    })
    .await
}

/// The runtime options of `handler` for the runc runtimes (`containerd.runc.v1.Options` from
/// the TOML `options` table, containerd's key names); `None` for none or other runtimes.
pub fn runtime_options(handler: &RuntimeHandler) -> Result<Option<prost_types::Any>> {
    let Some(table) = handler.options.as_ref() else {
        return Ok(None);
    };
    if !handler.runtime_type.starts_with("io.containerd.runc.") {
        return Ok(None);
    }
    let string = |k: &str| {
        table
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let boolean = |k: &str| table.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    let number = |k: &str| {
        table
            .get(k)
            .and_then(|v| v.as_integer())
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    };
    let opts = berth_proto::containerd::runc::v1::Options {
        no_pivot_root: boolean("NoPivotRoot"),
        no_new_keyring: boolean("NoNewKeyring"),
        shim_cgroup: string("ShimCgroup"),
        io_uid: number("IoUid"),
        io_gid: number("IoGid"),
        binary_name: string("BinaryName"),
        root: string("Root"),
        criu_path: string("CriuPath"),
        systemd_cgroup: boolean("SystemdCgroup"),
        criu_image_path: string("CriuImagePath"),
        criu_work_path: string("CriuWorkPath"),
    };
    Ok(Some(prost_types::Any {
        type_url: berth_runtime::manager::RUNC_OPTIONS_TYPE.to_owned(),
        value: opts.encode_to_vec(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_as_containerd_writes_it() {
        let r = resolv_conf(
            &["8.8.8.8".into(), "1.1.1.1".into()],
            &["a.example".into(), "b.example".into()],
            &["ndots:5".into()],
        )
        .unwrap();
        assert_eq!(
            r,
            "search a.example b.example\nnameserver 8.8.8.8\nnameserver 1.1.1.1\noptions ndots:5\n"
        );
        assert_eq!(resolv_conf(&[], &[], &[]).unwrap(), "");
        let many: Vec<String> = (0..7).map(|i| format!("d{i}")).collect();
        assert!(resolv_conf(&[], &many, &[]).is_err());
    }

    #[test]
    fn ids_are_64_hex_digits() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn runc_options_are_encoded() {
        let mut h = RuntimeHandler::default();
        assert!(runtime_options(&h).unwrap().is_none());
        h.options =
            Some(toml::from_str("BinaryName = \"/usr/bin/runc\"\nSystemdCgroup = false").unwrap());
        let any = runtime_options(&h).unwrap().unwrap();
        assert_eq!(any.type_url, "containerd.runc.v1.Options");
        let o = berth_proto::containerd::runc::v1::Options::decode(any.value.as_slice()).unwrap();
        assert_eq!(o.binary_name, "/usr/bin/runc");
    }
}
