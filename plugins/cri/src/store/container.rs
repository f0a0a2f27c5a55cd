//! Container records (containerd `pkg/cri/store/container`): what CreateContainer made, kept in
//! memory for the calls and persisted twice — the metadata as the container record's
//! `io.cri-containerd.container.metadata` extension, the changing status as an atomically
//! replaced file `<cri root>/containers/<id>/status` — from which
//! [`crate::container::recover`] rebuilds the store at start.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use berth_proto::runtime::v1::{ContainerConfig, ContainerState, LinuxContainerResources};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{CriError, Result};
use crate::logs::ContainerLogger;

/// The container extension holding a container's [`ContainerMetadata`] (containerd's key).
pub const METADATA_EXTENSION: &str = "io.cri-containerd.container.metadata";
/// The type URL of that extension's value (containerd's; the value is Berth's JSON).
pub const METADATA_TYPE_URL: &str = "github.com/containerd/cri/pkg/store/container/Metadata";
/// [`crate::store::sandbox::KIND_LABEL`]'s value on workload containers.
pub const KIND_CONTAINER: &str = "container";
/// The exit code of a container whose end nobody saw (containerd `unknownExitCode`).
pub const UNKNOWN_EXIT_CODE: i32 = 255;
/// Its reason (containerd `unknownExitReason`).
pub const UNKNOWN_EXIT_REASON: &str = "Unknown";
/// The reason of a container the kernel killed for memory (containerd `oomExitReason`).
pub const OOM_EXIT_REASON: &str = "OOMKilled";
/// The reason of an exit with code 0 (containerd `completeExitReason`).
pub const COMPLETED_EXIT_REASON: &str = "Completed";
/// The reason of an exit with another code (containerd `errorExitReason`).
pub const ERROR_EXIT_REASON: &str = "Error";
/// The reason of a container whose start failed (containerd `errorStartReason`).
pub const START_ERROR_REASON: &str = "StartError";
/// Its exit code (containerd `errorStartExitCode`).
pub const START_ERROR_EXIT_CODE: i32 = 128;

/// The version tag of the status file's format (containerd's `statusVersion`).
const STATUS_VERSION: &str = "v1";

/// What CreateContainer decided and never changes (containerd's `container.Metadata`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerMetadata {
    /// 64 hex digits.
    pub id: String,
    /// `<name>_<pod name>_<pod namespace>_<pod uid>_<attempt>`.
    pub name: String,
    /// The pod sandbox's id.
    pub sandbox_id: String,
    /// The request's config, protobuf-encoded in hex.
    #[serde(with = "config_hex")]
    pub config: ContainerConfig,
    /// The image id (config digest) the container runs.
    pub image_ref: String,
    /// `<pod log_directory>/<config log_path>`, "" when either is empty (no log file).
    pub log_path: String,
    /// The image's `StopSignal` ("" for SIGTERM).
    pub stop_signal: String,
    /// The spec's `linux.cgroupsPath`: where stats are read.
    pub cgroups_path: String,
}

mod config_hex {
    use berth_proto::runtime::v1::ContainerConfig;
    use prost::Message;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &ContainerConfig, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v.encode_to_vec()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ContainerConfig, D::Error> {
        let s = String::deserialize(d)?;
        let bytes = hex::decode(s).map_err(serde::de::Error::custom)?;
        ContainerConfig::decode(bytes.as_slice()).map_err(serde::de::Error::custom)
    }
}

impl ContainerMetadata {
    /// The JSON kept in the container extension.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| CriError::Internal(format!("encode container {} metadata: {e}", self.id)))
    }

    /// Reads the extension's JSON.
    pub fn from_json(data: &[u8]) -> Result<ContainerMetadata> {
        serde_json::from_slice(data)
            .map_err(|e| CriError::Internal(format!("decode container metadata: {e}")))
    }
}

/// Decodes a workload container record's metadata extension, if it is one.
pub fn metadata_of(container: &berth_core::Container) -> Option<Result<ContainerMetadata>> {
    let kind = container
        .labels
        .get(crate::store::sandbox::KIND_LABEL)
        .map(String::as_str);
    if kind != Some(KIND_CONTAINER) {
        return None;
    }
    let ext = container.extensions.get(METADATA_EXTENSION)?;
    Some(ContainerMetadata::from_json(&ext.value))
}

/// The container's resources as ContainerStatus reports them, kept with the status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusResources {
    /// CPU CFS period.
    pub cpu_period: i64,
    /// CPU CFS quota.
    pub cpu_quota: i64,
    /// CPU shares.
    pub cpu_shares: i64,
    /// Memory limit in bytes.
    pub memory_limit_in_bytes: i64,
    /// Memory + swap limit in bytes.
    pub memory_swap_limit_in_bytes: i64,
    /// cpuset cpus.
    pub cpuset_cpus: String,
    /// cpuset mems.
    pub cpuset_mems: String,
    /// cgroup v2 unified keys.
    pub unified: BTreeMap<String, String>,
}

impl StatusResources {
    /// As the CRI message.
    pub fn to_cri(&self) -> LinuxContainerResources {
        LinuxContainerResources {
            cpu_period: self.cpu_period,
            cpu_quota: self.cpu_quota,
            cpu_shares: self.cpu_shares,
            memory_limit_in_bytes: self.memory_limit_in_bytes,
            memory_swap_limit_in_bytes: self.memory_swap_limit_in_bytes,
            cpuset_cpus: self.cpuset_cpus.clone(),
            cpuset_mems: self.cpuset_mems.clone(),
            unified: self.unified.clone().into_iter().collect(),
            ..Default::default()
        }
    }

    /// Read from an OCI spec's `linux.resources` (JSON).
    pub fn from_spec(spec: &serde_json::Value) -> Option<StatusResources> {
        let r = spec.get("linux")?.get("resources")?;
        let int = |v: Option<&serde_json::Value>| v.and_then(serde_json::Value::as_i64);
        let text = |v: Option<&serde_json::Value>| {
            v.and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let cpu = r.get("cpu");
        let memory = r.get("memory");
        Some(StatusResources {
            cpu_period: int(cpu.and_then(|c| c.get("period"))).unwrap_or(0),
            cpu_quota: int(cpu.and_then(|c| c.get("quota"))).unwrap_or(0),
            cpu_shares: int(cpu.and_then(|c| c.get("shares"))).unwrap_or(0),
            cpuset_cpus: text(cpu.and_then(|c| c.get("cpus"))),
            cpuset_mems: text(cpu.and_then(|c| c.get("mems"))),
            memory_limit_in_bytes: int(memory.and_then(|m| m.get("limit"))).unwrap_or(0),
            memory_swap_limit_in_bytes: int(memory.and_then(|m| m.get("swap"))).unwrap_or(0),
            unified: r
                .get("unified")
                .and_then(serde_json::Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// The changing part of a container (containerd's `container.Status`). Times are nanoseconds
/// since the epoch, 0 for "not yet".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    /// The init process while running, else 0.
    pub pid: u32,
    /// When CreateContainer finished.
    pub created_at: i64,
    /// When the task started.
    pub started_at: i64,
    /// When the task exited.
    pub finished_at: i64,
    /// The exit code.
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`, `Unknown`, `StartError` ("" while not known).
    pub reason: String,
    /// A human-readable message (the start error).
    pub message: String,
    /// The container's resources.
    pub resources: Option<StatusResources>,
    /// StartContainer is under way (not persisted).
    #[serde(skip)]
    pub starting: bool,
    /// RemoveContainer is under way (not persisted).
    #[serde(skip)]
    pub removing: bool,
    /// The state could not be read at recovery (not persisted).
    #[serde(skip)]
    pub unknown: bool,
}

impl Status {
    /// The CRI state these fields mean (containerd `Status.State`).
    pub fn state(&self) -> ContainerState {
        if self.unknown {
            ContainerState::ContainerUnknown
        } else if self.finished_at != 0 {
            ContainerState::ContainerExited
        } else if self.started_at != 0 {
            ContainerState::ContainerRunning
        } else if self.created_at != 0 {
            ContainerState::ContainerCreated
        } else {
            ContainerState::ContainerUnknown
        }
    }

    /// The status after a start that never happened: unknown state, exit code 255.
    pub fn unknown_exit() -> Status {
        Status {
            created_at: now_nanos(),
            finished_at: now_nanos(),
            exit_code: UNKNOWN_EXIT_CODE,
            reason: UNKNOWN_EXIT_REASON.to_owned(),
            ..Default::default()
        }
    }
}

#[derive(Serialize, Deserialize)]
struct VersionedStatus {
    version: String,
    status: Status,
}

/// Nanoseconds since the epoch, now.
pub fn now_nanos() -> i64 {
    nanos(SystemTime::now())
}

/// Nanoseconds since the epoch of `t` (0 before the epoch).
pub fn nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `<cri root>/containers/<id>`: the status file's directory.
pub fn container_dir(root: &Path, id: &str) -> PathBuf {
    root.join("containers").join(id)
}

/// Writes `status` to `<dir>/status` atomically (temp file, fsync, rename).
pub fn write_status(dir: &Path, status: &Status) -> Result<()> {
    let data = serde_json::to_vec(&VersionedStatus {
        version: STATUS_VERSION.to_owned(),
        status: status.clone(),
    })
    .map_err(|e| CriError::Internal(format!("encode container status: {e}")))?;
    std::fs::create_dir_all(dir).map_err(|e| CriError::io("create", dir, e))?;
    let tmp = dir.join(".status.tmp");
    let path = dir.join("status");
    let mut f = std::fs::File::create(&tmp).map_err(|e| CriError::io("create", &tmp, e))?;
    f.write_all(&data)
        .and_then(|()| f.sync_all())
        .map_err(|e| CriError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| CriError::io("rename", &path, e))
}

/// Reads `<dir>/status`.
pub fn load_status(dir: &Path) -> Result<Status> {
    let path = dir.join("status");
    let data = std::fs::read(&path).map_err(|e| CriError::io("read", &path, e))?;
    let v: VersionedStatus = serde_json::from_slice(&data)
        .map_err(|e| CriError::Internal(format!("decode {}: {e}", path.display())))?;
    if v.version != STATUS_VERSION {
        return Err(CriError::Internal(format!(
            "{}: unsupported status version {:?}",
            path.display(),
            v.version
        )));
    }
    Ok(v.status)
}

/// The previous CPU sample of a container, for `usage_nano_cores`.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    /// Cumulative CPU time in nanoseconds.
    pub usage_core_nanos: u64,
    /// When it was read, nanoseconds since the epoch.
    pub timestamp: i64,
}

/// A container: its metadata, its status (in memory and on disk), its log writer and the
/// signal its end is seen by.
#[derive(Debug)]
pub struct Container {
    /// What CreateContainer decided.
    pub meta: ContainerMetadata,
    status: Mutex<Status>,
    dir: PathBuf,
    stopped: watch::Sender<bool>,
    /// The log writer while the task runs.
    pub logger: Mutex<Option<ContainerLogger>>,
    /// Set once StopContainer sent the stop signal (it is sent once).
    pub stop_signaled: AtomicBool,
    /// The previous CPU sample (for `usage_nano_cores`).
    pub cpu_sample: Mutex<Option<CpuSample>>,
    /// berthd's end of the stdin FIFO, held open so the container's stdin stays open.
    stdin: Mutex<Option<std::fs::File>>,
}

use super::lock;

impl Container {
    /// A container whose status lives in `dir` (`<cri root>/containers/<id>`).
    pub fn new(meta: ContainerMetadata, status: Status, dir: PathBuf) -> Container {
        let done = status.state() == ContainerState::ContainerExited;
        Container {
            meta,
            status: Mutex::new(status),
            dir,
            stopped: watch::channel(done).0,
            logger: Mutex::new(None),
            stop_signaled: AtomicBool::new(false),
            cpu_sample: Mutex::new(None),
            stdin: Mutex::new(None),
        }
    }

    /// The id.
    pub fn id(&self) -> &str {
        &self.meta.id
    }

    /// The status directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A copy of the status.
    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    /// Changes the status and persists it; nothing changes if `f` or the write fails.
    /// Blocking (fsync): call it on the blocking pool.
    pub fn update_sync<T>(&self, f: impl FnOnce(&mut Status) -> Result<T>) -> Result<T> {
        let mut guard = lock(&self.status);
        let mut next = guard.clone();
        let out = f(&mut next)?;
        write_status(&self.dir, &next)?;
        *guard = next;
        Ok(out)
    }

    /// [`Container::update_sync`] on the blocking pool.
    pub async fn update<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        F: FnOnce(&mut Status) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let me = self.clone();
        crate::blocking::blocking(move || me.update_sync(f)).await
    }

    /// Changes the in-memory-only fields (`starting`, `removing`); nothing changes if `f` fails.
    pub fn update_memory<T>(&self, f: impl FnOnce(&mut Status) -> Result<T>) -> Result<T> {
        let mut guard = lock(&self.status);
        let mut next = guard.clone();
        let out = f(&mut next)?;
        *guard = next;
        Ok(out)
    }

    /// Says the task has exited and its exit is recorded.
    pub fn mark_stopped(&self) {
        self.stopped.send_replace(true);
    }

    /// Waits until [`Container::mark_stopped`].
    pub async fn wait_stopped(&self) {
        let mut rx = self.stopped.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Whether the stop signal was sent before; marks it sent.
    pub fn take_stop_signal(&self) -> bool {
        !self.stop_signaled.swap(true, Ordering::SeqCst)
    }

    /// The log writer, if the task runs with one.
    pub fn logger(&self) -> Option<ContainerLogger> {
        lock(&self.logger).clone()
    }

    /// Sets (or clears) the log writer.
    pub fn set_logger(&self, logger: Option<ContainerLogger>) {
        *lock(&self.logger) = logger;
    }

    /// Holds `file` (the stdin FIFO) open while the task runs.
    pub fn set_stdin(&self, file: Option<std::fs::File>) {
        *lock(&self.stdin) = file;
    }

    /// Closes the stdin FIFO end berthd held.
    pub fn close_stdin(&self) {
        lock(&self.stdin).take();
    }

    /// Swaps in a new CPU sample, returning the previous one.
    pub fn swap_cpu_sample(&self, sample: CpuSample) -> Option<CpuSample> {
        lock(&self.cpu_sample).replace(sample)
    }
}

/// The live containers, by id, and the reserved container names.
#[derive(Debug, Default)]
pub struct ContainerStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    containers: BTreeMap<String, Arc<Container>>,
    names: BTreeMap<String, String>,
}

impl ContainerStore {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The container with id `id`, or the only one whose id starts with `id`; NotFound
    /// otherwise.
    pub fn get(&self, id: &str) -> Result<Arc<Container>> {
        super::by_id_or_prefix(&self.lock().containers, id, "container_id", "container").cloned()
    }

    /// Every container, by id.
    pub fn list(&self) -> Vec<Arc<Container>> {
        self.lock().containers.values().cloned().collect()
    }

    /// Adds a container (its name should be reserved already; it is reserved now if not).
    pub fn add(&self, container: Arc<Container>) {
        let mut inner = self.lock();
        inner
            .names
            .insert(container.meta.name.clone(), container.meta.id.clone());
        inner
            .containers
            .insert(container.meta.id.clone(), container);
    }

    /// Drops the container `id` and releases its name.
    pub fn delete(&self, id: &str) -> Option<Arc<Container>> {
        let mut inner = self.lock();
        let c = inner.containers.remove(id)?;
        if inner.names.get(&c.meta.name).map(String::as_str) == Some(id) {
            inner.names.remove(&c.meta.name);
        }
        Some(c)
    }

    /// Reserves `name` for `id`; AlreadyExists naming the holder if another id has it.
    pub fn reserve_name(&self, name: &str, id: &str) -> Result<()> {
        let mut inner = self.lock();
        match inner.names.get(name) {
            Some(holder) if holder != id => Err(CriError::AlreadyExists {
                what: "container",
                name: name.to_owned(),
                id: holder.clone(),
            }),
            _ => {
                inner.names.insert(name.to_owned(), id.to_owned());
                Ok(())
            }
        }
    }

    /// Releases `name` if `id` holds it.
    pub fn release_name(&self, name: &str, id: &str) {
        let mut inner = self.lock();
        if inner.names.get(name).map(String::as_str) == Some(id) {
            inner.names.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_proto::runtime::v1::ContainerMetadata as CriMetadata;

    use super::*;

    fn meta(id: &str, name: &str) -> ContainerMetadata {
        ContainerMetadata {
            id: id.to_owned(),
            name: name.to_owned(),
            sandbox_id: "sb".into(),
            config: ContainerConfig {
                metadata: Some(CriMetadata {
                    name: "c".into(),
                    attempt: 1,
                }),
                log_path: "c.log".into(),
                ..Default::default()
            },
            image_ref: "sha256:aa".into(),
            log_path: "/logs/c.log".into(),
            stop_signal: String::new(),
            cgroups_path: "/k8s.io/x".into(),
        }
    }

    fn container(dir: &Path, id: &str, name: &str) -> Arc<Container> {
        Arc::new(Container::new(
            meta(id, name),
            Status {
                created_at: 1,
                ..Default::default()
            },
            container_dir(dir, id),
        ))
    }

    #[test]
    fn states_follow_the_times() {
        let mut s = Status::default();
        assert_eq!(s.state(), ContainerState::ContainerUnknown);
        s.created_at = 1;
        assert_eq!(s.state(), ContainerState::ContainerCreated);
        s.started_at = 2;
        assert_eq!(s.state(), ContainerState::ContainerRunning);
        s.finished_at = 3;
        assert_eq!(s.state(), ContainerState::ContainerExited);
        s.unknown = true;
        assert_eq!(s.state(), ContainerState::ContainerUnknown);
    }

    #[test]
    fn status_persists_atomically_and_keeps_memory_only_fields_out() {
        let d = tempfile::tempdir().unwrap();
        let c = container(d.path(), "abc", "n");
        c.update_sync(|s| {
            s.started_at = 5;
            s.pid = 42;
            s.starting = true;
            Ok(())
        })
        .unwrap();
        let loaded = load_status(c.dir()).unwrap();
        assert_eq!((loaded.started_at, loaded.pid), (5, 42));
        assert!(!loaded.starting);
        // A failing update changes nothing.
        let err = c.update_sync(|s| {
            s.pid = 7;
            Err::<(), _>(CriError::FailedPrecondition("no".into()))
        });
        assert!(err.is_err());
        assert_eq!(c.status().pid, 42);
        assert_eq!(load_status(c.dir()).unwrap().pid, 42);
        assert!(!c.dir().join(".status.tmp").exists());
    }

    #[test]
    fn get_by_id_or_unique_prefix_and_names() {
        let d = tempfile::tempdir().unwrap();
        let store = ContainerStore::default();
        store.reserve_name("n1", "abc1").unwrap();
        store.add(container(d.path(), "abc1", "n1"));
        store.add(container(d.path(), "abd2", "n2"));
        assert_eq!(store.get("abc1").unwrap().id(), "abc1");
        assert_eq!(store.get("abd").unwrap().id(), "abd2");
        assert!(matches!(
            store.get("ab"),
            Err(CriError::InvalidArgument { .. })
        ));
        assert!(matches!(store.get("zz"), Err(CriError::NotFound { .. })));
        match store.reserve_name("n1", "other") {
            Err(CriError::AlreadyExists { id, .. }) => assert_eq!(id, "abc1"),
            other => panic!("{other:?}"),
        }
        store.delete("abc1");
        store.reserve_name("n1", "other").unwrap();
        assert_eq!(store.list().len(), 1);
    }

    #[test]
    fn metadata_round_trips_and_resources_read_from_spec() {
        let m = meta("id", "n");
        assert_eq!(
            ContainerMetadata::from_json(&m.to_json().unwrap()).unwrap(),
            m
        );
        let spec = serde_json::json!({"linux": {"resources": {
            "cpu": {"period": 100000, "quota": 50000, "shares": 512, "cpus": "0"},
            "memory": {"limit": 1048576}
        }}});
        let r = StatusResources::from_spec(&spec).unwrap();
        assert_eq!((r.cpu_quota, r.memory_limit_in_bytes), (50000, 1048576));
        assert_eq!(r.to_cri().cpuset_cpus, "0");
    }

    #[tokio::test]
    async fn waiters_see_the_stop() {
        let d = tempfile::tempdir().unwrap();
        let c = container(d.path(), "x", "n");
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.wait_stopped().await })
        };
        c.mark_stopped();
        waiter.await.unwrap();
        c.wait_stopped().await;
    }
}
