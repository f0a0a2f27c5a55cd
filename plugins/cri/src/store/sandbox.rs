//! Pod sandbox records (containerd `pkg/cri/store/sandbox`): what RunPodSandbox made, kept in
//! memory for the calls and persisted as the pause container's
//! `io.cri-containerd.sandbox.metadata` extension, from which [`crate::sandbox::recover`]
//! rebuilds the store at start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use berth_proto::runtime::v1::{PodSandboxConfig, PodSandboxState};
use serde::{Deserialize, Serialize};

use crate::error::{CriError, Result};
use crate::spec::SandboxFiles;

/// The container extension holding a sandbox's [`SandboxMetadata`] (containerd's key).
pub const METADATA_EXTENSION: &str = "io.cri-containerd.sandbox.metadata";
/// The type URL of that extension's value (containerd's, the value is Berth's JSON).
pub const METADATA_TYPE_URL: &str = "github.com/containerd/cri/pkg/store/sandbox/Metadata";
/// The label saying what a CRI container record is (`sandbox` or `container`).
pub const KIND_LABEL: &str = "io.cri-containerd.kind";
/// [`KIND_LABEL`]'s value on pause containers.
pub const KIND_SANDBOX: &str = "sandbox";

/// Whether the pod's pause container runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    /// The pause container runs.
    Ready,
    /// Stopped, exited or never started.
    NotReady,
}

impl SandboxState {
    /// The CRI state.
    pub fn to_cri(self) -> PodSandboxState {
        match self {
            SandboxState::Ready => PodSandboxState::SandboxReady,
            SandboxState::NotReady => PodSandboxState::SandboxNotready,
        }
    }
}

/// The persisted part of a sandbox (containerd's `sandbox.Metadata`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxMetadata {
    /// 64 hex digits.
    pub id: String,
    /// `<name>_<namespace>_<uid>_<attempt>`.
    pub name: String,
    /// The request's config, protobuf-encoded in hex.
    #[serde(with = "config_hex")]
    pub config: PodSandboxConfig,
    /// The pinned network namespace; `None` for a host-network pod.
    pub netns_path: Option<PathBuf>,
    /// The pod IP ("" without one).
    pub ip: String,
    /// More pod IPs (the other family).
    pub additional_ips: Vec<String>,
    /// The runtime handler as the request named it ("" for the default).
    pub runtime_handler: String,
    /// The runtime type it resolved to (`io.containerd.runc.v2`).
    pub runtime_type: String,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
}

mod config_hex {
    use berth_proto::runtime::v1::PodSandboxConfig;
    use prost::Message;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &PodSandboxConfig, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v.encode_to_vec()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PodSandboxConfig, D::Error> {
        let s = String::deserialize(d)?;
        let bytes = hex::decode(s).map_err(serde::de::Error::custom)?;
        PodSandboxConfig::decode(bytes.as_slice()).map_err(serde::de::Error::custom)
    }
}

impl SandboxMetadata {
    /// The JSON kept in the container extension.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| CriError::Internal(format!("encode sandbox {} metadata: {e}", self.id)))
    }

    /// Reads the extension's JSON.
    pub fn from_json(data: &[u8]) -> Result<SandboxMetadata> {
        serde_json::from_slice(data)
            .map_err(|e| CriError::Internal(format!("decode sandbox metadata: {e}")))
    }
}

/// A pod sandbox: its persisted metadata and its live status.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// What is persisted.
    pub metadata: SandboxMetadata,
    /// Ready, not ready, or still being made.
    pub state: SandboxState,
    /// The pause process (0 when not running).
    pub pid: u32,
    /// The pod's files (hostname, hosts, resolv.conf, /dev/shm).
    pub files: SandboxFiles,
}

impl Sandbox {
    /// The sandbox id.
    pub fn id(&self) -> &str {
        &self.metadata.id
    }

    /// The request's config.
    pub fn config(&self) -> &PodSandboxConfig {
        &self.metadata.config
    }

    /// The network namespace path, `None` for a host-network pod.
    pub fn netns_path(&self) -> Option<&Path> {
        self.metadata.netns_path.as_deref()
    }
}

/// The files of sandbox `id` under the CRI root (`<root>/sandboxes/<id>/`); `shm` only when
/// the pod has its own IPC namespace.
pub fn sandbox_files(root: &Path, id: &str, own_ipc: bool) -> SandboxFiles {
    let dir = sandbox_dir(root, id);
    SandboxFiles {
        hostname: dir.join("hostname"),
        hosts: dir.join("hosts"),
        resolv_conf: dir.join("resolv.conf"),
        shm: own_ipc.then(|| dir.join("shm")),
    }
}

/// `<root>/sandboxes/<id>`.
pub fn sandbox_dir(root: &Path, id: &str) -> PathBuf {
    root.join("sandboxes").join(id)
}

/// The live pod sandboxes, by id, and the reserved sandbox names.
#[derive(Debug, Default)]
pub struct SandboxStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sandboxes: BTreeMap<String, Sandbox>,
    names: BTreeMap<String, String>,
}

impl SandboxStore {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        super::lock(&self.inner)
    }

    /// The sandbox with id `id`, or the only one whose id starts with `id`; NotFound otherwise.
    pub fn get(&self, id: &str) -> Result<Sandbox> {
        let inner = self.lock();
        resolve(&inner.sandboxes, id).cloned()
    }

    /// The full id of the sandbox `id` names (an id or a unique prefix).
    pub fn resolve(&self, id: &str) -> Result<String> {
        let inner = self.lock();
        resolve(&inner.sandboxes, id).map(|s| s.metadata.id.clone())
    }

    /// Every sandbox, by id.
    pub fn list(&self) -> Vec<Sandbox> {
        self.lock().sandboxes.values().cloned().collect()
    }

    /// Adds (or replaces) a sandbox record.
    pub fn add(&self, sandbox: Sandbox) {
        let mut inner = self.lock();
        inner
            .names
            .insert(sandbox.metadata.name.clone(), sandbox.metadata.id.clone());
        inner.sandboxes.insert(sandbox.metadata.id.clone(), sandbox);
    }

    /// Changes the record of `id` in place; NotFound if absent.
    pub fn update<T>(&self, id: &str, f: impl FnOnce(&mut Sandbox) -> T) -> Result<T> {
        let mut inner = self.lock();
        match inner.sandboxes.get_mut(id) {
            Some(s) => Ok(f(s)),
            None => Err(not_found(id)),
        }
    }

    /// Drops the record of `id` (its name stays reserved until [`SandboxStore::release_name`]).
    pub fn delete(&self, id: &str) -> Option<Sandbox> {
        self.lock().sandboxes.remove(id)
    }

    /// Reserves `name` for `id`; AlreadyExists naming the holder if another id has it.
    pub fn reserve_name(&self, name: &str, id: &str) -> Result<()> {
        let mut inner = self.lock();
        match inner.names.get(name) {
            Some(holder) if holder != id => Err(CriError::AlreadyExists {
                what: "sandbox",
                name: name.to_owned(),
                id: holder.clone(),
            }),
            _ => {
                inner.names.insert(name.to_owned(), id.to_owned());
                Ok(())
            }
        }
    }

    /// Releases `name`.
    pub fn release_name(&self, name: &str) {
        self.lock().names.remove(name);
    }
}

fn not_found(id: &str) -> CriError {
    CriError::NotFound {
        what: "sandbox",
        id: id.to_owned(),
    }
}

fn resolve<'a>(sandboxes: &'a BTreeMap<String, Sandbox>, id: &str) -> Result<&'a Sandbox> {
    super::by_id_or_prefix(sandboxes, id, "pod_sandbox_id", "sandbox")
}

/// The sandbox name containerd gives a pod: `<name>_<namespace>_<uid>_<attempt>`.
pub fn sandbox_name(config: &PodSandboxConfig) -> Result<String> {
    let m = config
        .metadata
        .as_ref()
        .ok_or_else(|| CriError::invalid("config.metadata", "missing"))?;
    if m.name.is_empty() {
        return Err(CriError::invalid("config.metadata.name", "empty"));
    }
    Ok(format!(
        "{}_{}_{}_{}",
        m.name, m.namespace, m.uid, m.attempt
    ))
}

/// Decodes a pause container record's metadata extension, if it is one.
pub fn metadata_of(container: &berth_core::Container) -> Option<Result<SandboxMetadata>> {
    if container.labels.get(KIND_LABEL).map(String::as_str) != Some(KIND_SANDBOX) {
        return None;
    }
    let ext = container.extensions.get(METADATA_EXTENSION)?;
    Some(SandboxMetadata::from_json(&ext.value))
}

#[cfg(test)]
mod tests {
    use berth_proto::runtime::v1::PodSandboxMetadata;

    use super::*;

    fn sandbox(id: &str, name: &str) -> Sandbox {
        Sandbox {
            metadata: SandboxMetadata {
                id: id.to_owned(),
                name: name.to_owned(),
                config: PodSandboxConfig {
                    hostname: "h".into(),
                    ..Default::default()
                },
                netns_path: None,
                ip: String::new(),
                additional_ips: Vec::new(),
                runtime_handler: String::new(),
                runtime_type: String::new(),
                created_at: 1,
            },
            state: SandboxState::Ready,
            pid: 1,
            files: SandboxFiles::default(),
        }
    }

    #[test]
    fn get_by_id_and_unique_prefix() {
        let store = SandboxStore::default();
        store.add(sandbox("abc1", "a"));
        store.add(sandbox("abd2", "b"));
        assert_eq!(store.get("abc1").unwrap().id(), "abc1");
        assert_eq!(store.get("abd").unwrap().id(), "abd2");
        assert!(matches!(
            store.get("ab"),
            Err(CriError::InvalidArgument { .. })
        ));
        assert!(matches!(store.get("x"), Err(CriError::NotFound { .. })));
    }

    #[test]
    fn names_are_reserved_once() {
        let store = SandboxStore::default();
        store.reserve_name("n", "id1").unwrap();
        store.reserve_name("n", "id1").unwrap();
        match store.reserve_name("n", "id2") {
            Err(CriError::AlreadyExists { id, .. }) => assert_eq!(id, "id1"),
            other => panic!("{other:?}"),
        }
        store.release_name("n");
        store.reserve_name("n", "id2").unwrap();
    }

    #[test]
    fn metadata_round_trips_through_json() {
        let mut s = sandbox("id", "n");
        s.metadata.config.metadata = Some(PodSandboxMetadata {
            name: "p".into(),
            uid: "u".into(),
            namespace: "ns".into(),
            attempt: 2,
        });
        let json = s.metadata.to_json().unwrap();
        assert_eq!(SandboxMetadata::from_json(&json).unwrap(), s.metadata);
        assert_eq!(sandbox_name(&s.metadata.config).unwrap(), "p_ns_u_2");
    }
}
