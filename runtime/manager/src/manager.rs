//! The task manager (containerd `runtime/v2/manager.go` `ShimManager` + `TaskManager`,
//! `shim_load.go`): creates bundles, starts shims, keeps the live tasks per namespace, deletes
//! them, cleans up after shims that die, and reconnects to running shims after a restart.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use berth_mount::Mount;
use berth_proto::containerd::runc::v1::Options as RuncOptions;
use berth_proto::containerd::task::v2::{CreateTaskRequest, CreateTaskResponse};
use berth_proto::containerd::types::Mount as ProtoMount;
use berth_registry::{identifiers, Classify, ErrorKind};
use berth_ttrpc::Client;

use crate::binary::ShimResolver;
use crate::bundle::{self, Bundle};
use crate::config::Timeouts;
use crate::error::RuntimeError;
use crate::events::{publish_dead_shim, EventSink};
use crate::legacy;
use crate::shim::{is_executable, parse_address, spawn_log_pump, Exit, ShimBinary};
use crate::task::{Task, TaskIo};
use crate::{abort_points, orphan, restore};

/// How often a task's monitor wakes without its connection closing, to notice a task cleaned up
/// or a manager dropped; a dead shim is noticed at once (the connection's close wakes it).
const MONITOR_INTERVAL: Duration = Duration::from_secs(5);

/// Runtime options type the runc shims take (`io.containerd.runc.*`).
pub const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";

/// Where the manager lives and how shims reach the daemon.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// `<root>/io.containerd.runtime.v2.task`: work dirs.
    pub root: PathBuf,
    /// `<state>/io.containerd.runtime.v2.task`: bundles.
    pub state: PathBuf,
    /// The daemon's gRPC socket (shim `-address`).
    pub grpc_address: String,
    /// The daemon's ttrpc socket (shim `TTRPC_ADDRESS`).
    pub ttrpc_address: String,
    /// The daemon executable (shim `-publish-binary`).
    pub publish_binary: PathBuf,
    /// Runtime name → shim binary overrides (see [`crate::Config::runtimes`]).
    pub runtimes: BTreeMap<String, String>,
    /// Shim timeouts (the daemon's `[timeouts]`).
    pub timeouts: Timeouts,
}

/// What a new task needs.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    /// Namespace.
    pub namespace: String,
    /// Task (container) id.
    pub id: String,
    /// The OCI spec JSON, written as `config.json` unchanged.
    pub spec: Vec<u8>,
    /// Rootfs mounts, which the shim mounts on `<bundle>/rootfs`.
    pub rootfs: Vec<Mount>,
    /// The container's runtime name (`io.containerd.runc.v2`).
    pub runtime: String,
    /// A runtime binary path from the request; used instead of the name if non-empty (only
    /// configured paths are accepted).
    pub runtime_path: String,
    /// The container's runtime options.
    pub runtime_options: Option<prost_types::Any>,
    /// The request's task options; win over the runtime options.
    pub task_options: Option<prost_types::Any>,
    /// Stdio.
    pub io: TaskIo,
    /// A checkpoint directory to restore from, empty for none.
    pub checkpoint: String,
}

type TaskKey = (String, String);

/// The live tasks of every namespace.
pub struct TaskManager {
    config: ManagerConfig,
    resolver: ShimResolver,
    events: Arc<dyn EventSink>,
    tasks: Mutex<BTreeMap<TaskKey, Arc<Task>>>,
    me: Weak<TaskManager>,
    /// Runtime name → the options its tasks get where theirs leave a field empty.
    default_options: BTreeMap<String, RuncOptions>,
}

impl std::fmt::Debug for TaskManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskManager")
            .field("config", &self.config)
            .field("tasks", &self.lock().len())
            .finish_non_exhaustive()
    }
}

fn blocking_err(e: tokio::task::JoinError) -> RuntimeError {
    RuntimeError::Bundle {
        op: "blocking bundle operation",
        path: PathBuf::new(),
        source: std::io::Error::other(e),
    }
}

/// Runs filesystem work on the blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, RuntimeError>
where
    F: FnOnce() -> Result<T, RuntimeError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(blocking_err(e)))
}

async fn delete_bundle(bundle: &Bundle) {
    let b = bundle.clone();
    if let Err(e) = blocking(move || b.delete()).await {
        tracing::warn!(namespace = %bundle.namespace, id = %bundle.id, error = %e, "remove bundle");
    }
}

/// Refuses options of the wrong type for the runc runtimes (containerd `getRestorePath`).
fn check_options(runtime: &str, options: Option<&prost_types::Any>) -> Result<(), RuntimeError> {
    match options {
        Some(o)
            if runtime.starts_with("io.containerd.runc.") && o.type_url != RUNC_OPTIONS_TYPE =>
        {
            Err(RuntimeError::InvalidOptions {
                runtime: runtime.to_owned(),
                type_url: o.type_url.clone(),
            })
        }
        _ => Ok(()),
    }
}

impl TaskManager {
    /// A manager over `config`, publishing its own events to `events`. Creates the root and
    /// state dirs; call [`TaskManager::load`] to pick up tasks that survived a restart.
    pub fn new(
        config: ManagerConfig,
        events: Arc<dyn EventSink>,
    ) -> Result<Arc<TaskManager>, RuntimeError> {
        TaskManager::with_default_options(config, events, BTreeMap::new())
    }

    /// [`TaskManager::new`], with default runc options per runtime name
    /// ([`crate::Config::default_options`]).
    pub fn with_default_options(
        config: ManagerConfig,
        events: Arc<dyn EventSink>,
        default_options: BTreeMap<String, RuncOptions>,
    ) -> Result<Arc<TaskManager>, RuntimeError> {
        for dir in [&config.root, &config.state] {
            // 0711 (containerd `NewShimManager`): a user-namespaced container's root must
            // traverse it to reach its bundle, while nobody else may list the tasks.
            std::fs::create_dir_all(dir)
                .and_then(|()| {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
                })
                .map_err(|source| RuntimeError::Bundle {
                    op: "create runtime dir",
                    path: dir.clone(),
                    source,
                })?;
        }
        let resolver = ShimResolver::new(config.runtimes.clone());
        Ok(Arc::new_cyclic(|me| TaskManager {
            config,
            resolver,
            events,
            tasks: Mutex::new(BTreeMap::new()),
            me: me.clone(),
            default_options,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<TaskKey, Arc<Task>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shim_binary(&self, binary: PathBuf, bundle: &Bundle) -> ShimBinary {
        ShimBinary {
            binary,
            namespace: bundle.namespace.clone(),
            id: bundle.id.clone(),
            bundle: bundle.path.clone(),
            grpc_address: self.config.grpc_address.clone(),
            ttrpc_address: self.config.ttrpc_address.clone(),
            publish_binary: self.config.publish_binary.clone(),
            timeouts: self.config.timeouts,
        }
    }

    /// The task `id` of namespace `ns`.
    pub fn get(&self, ns: &str, id: &str) -> Result<Arc<Task>, RuntimeError> {
        self.lock()
            .get(&(ns.to_owned(), id.to_owned()))
            .cloned()
            .ok_or_else(|| RuntimeError::TaskNotFound(id.to_owned()))
    }

    /// The tasks of namespace `ns`, by id.
    pub fn list(&self, ns: &str) -> Vec<Arc<Task>> {
        self.lock()
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// Every task of every namespace.
    pub fn list_all(&self) -> Vec<Arc<Task>> {
        self.lock().values().cloned().collect()
    }

    /// Removes `task` from the list if it is still the listed one; true if it was.
    /// Whether `task` is (still) the listed task of its namespace and id.
    fn is_listed(&self, task: &Arc<Task>) -> bool {
        let key = (task.namespace().to_owned(), task.id().to_owned());
        self.lock().get(&key).is_some_and(|t| Arc::ptr_eq(t, task))
    }

    fn unlist(&self, task: &Arc<Task>) -> bool {
        let key = (task.namespace().to_owned(), task.id().to_owned());
        let mut tasks = self.lock();
        match tasks.get(&key) {
            Some(t) if Arc::ptr_eq(t, task) => {
                tasks.remove(&key);
                true
            }
            _ => false,
        }
    }

    /// Creates a task: bundle, shim `start`, ttrpc connect, shim `Create`. Whatever fails is
    /// undone (shim delete action, bundle removal) before the error returns.
    pub async fn create(&self, opts: CreateOpts) -> Result<Arc<Task>, RuntimeError> {
        let (ns, id) = (opts.namespace.clone(), opts.id.clone());
        Bundle::locate(&self.config.state, &self.config.root, &ns, &id)?;
        if self.get(&ns, &id).is_ok() {
            return Err(RuntimeError::TaskExists(id));
        }
        let effective = legacy::effective(
            &opts.runtime,
            opts.runtime_options.as_ref(),
            opts.task_options.as_ref(),
        )?;
        let runtime = if opts.runtime_path.is_empty() {
            &effective.runtime
        } else {
            &opts.runtime_path
        };
        // Errors name the runtime as the client gave it.
        let binary = self.resolver.resolve(runtime).map_err(|e| match e {
            RuntimeError::ShimNotInstalled { binary, .. } if opts.runtime_path.is_empty() => {
                RuntimeError::ShimNotInstalled {
                    runtime: opts.runtime.clone(),
                    binary,
                }
            }
            other => other,
        })?;
        let mut options = effective.options;
        check_options(&effective.runtime, options.as_ref())?;
        if let Some(defaults) = self.default_options.get(&effective.runtime) {
            options = crate::config::apply_defaults(defaults, options).map_err(|source| {
                RuntimeError::UndecodableOptions {
                    runtime: effective.runtime.clone(),
                    source,
                }
            })?;
        }

        let (state, root, spec) = (
            self.config.state.clone(),
            self.config.root.clone(),
            opts.spec.clone(),
        );
        let (n, i) = (ns.clone(), id.clone());
        let bundle = blocking(move || Bundle::create(&state, &root, &n, &i, &spec)).await?;
        // Recorded before the shim starts: a restart after a crash at any later point
        // finds the binary whose `delete` action cleans up after the shim (issue 16).
        let (b, bin) = (bundle.clone(), binary.display().to_string());
        if let Err(e) =
            blocking(move || b.write_file(bundle::SHIM_BINARY_FILE, bin.as_bytes())).await
        {
            delete_bundle(&bundle).await;
            return Err(e);
        }
        let pump = match spawn_log_pump(&bundle) {
            Ok(p) => p,
            Err(e) => {
                delete_bundle(&bundle).await;
                return Err(e);
            }
        };
        let shim = self.shim_binary(binary.clone(), &bundle);
        let address = match shim.start(options.as_ref()).await {
            Ok(a) => a,
            Err(e) => {
                pump.abort();
                // A start that failed or timed out may have daemonised its shim already.
                let b = bundle.clone();
                let _ = blocking(move || {
                    orphan::kill_shim(&b, orphan::recorded_pid(&b));
                    if let Some(address) = b.read_file(bundle::ADDRESS_FILE)? {
                        orphan::remove_stale_socket(&address);
                    }
                    Ok(())
                })
                .await;
                delete_bundle(&bundle).await;
                return Err(e);
            }
        };
        tracing::debug!(namespace = %ns, id = %id, address = %address, "shim started");
        berth_abortpoint::hit(abort_points::CREATE_SHIM_STARTED);
        let task = match self.connect_new(&bundle, &address).await {
            Ok(client) => Arc::new(Task::new(bundle.clone(), shim.clone(), client, Some(pump))),
            Err(e) => {
                pump.abort();
                self.run_delete_action(&shim).await;
                delete_bundle(&bundle).await;
                return Err(e);
            }
        };
        let req = CreateTaskRequest {
            id: id.clone(),
            bundle: bundle.path.display().to_string(),
            rootfs: opts.rootfs.into_iter().map(ProtoMount::from).collect(),
            terminal: opts.io.terminal,
            stdin: opts.io.stdin,
            stdout: opts.io.stdout,
            stderr: opts.io.stderr,
            checkpoint: opts.checkpoint,
            parent_checkpoint: String::new(),
            options,
        };
        match task
            .call::<_, CreateTaskResponse>("Create", &req, None)
            .await
        {
            Ok(resp) => task.set_pid(resp.pid),
            Err(e) => {
                // containerd: shim Delete, Shutdown, then the delete action and bundle removal.
                let _ = task.shim_delete("").await;
                let _ = task.shutdown().await;
                self.cleanup_dead_shim(&task).await;
                return Err(e);
            }
        }
        self.lock().insert((ns, id), task.clone());
        self.spawn_monitor(task.clone());
        Ok(task)
    }

    async fn connect_new(&self, bundle: &Bundle, address: &str) -> Result<Client, RuntimeError> {
        // Recorded for restarts; the runc shims write `address` before they daemonise, other
        // shims may not.
        let (b, addr) = (bundle.clone(), address.to_owned());
        blocking(move || {
            if b.read_file(bundle::ADDRESS_FILE)?.is_none() {
                b.write_file(bundle::ADDRESS_FILE, addr.as_bytes())?;
            }
            Ok(())
        })
        .await?;
        Client::connect_address(address)
            .await
            .map_err(|source| RuntimeError::Connect {
                address: address.to_owned(),
                source,
            })
    }

    async fn run_delete_action(&self, shim: &ShimBinary) -> Option<Exit> {
        match shim.delete().await {
            Ok(exit) => Some(exit),
            Err(e) => {
                tracing::warn!(namespace = %shim.namespace, id = %shim.id, error = %e, "failed to clean up after shim");
                None
            }
        }
    }

    /// Watches the task's connection; when the shim goes away, cleans up after it. Ends when
    /// the task is cleaned up or the manager is dropped.
    fn spawn_monitor(&self, task: Arc<Task>) {
        let me = self.me.clone();
        tokio::spawn(async move {
            loop {
                let closed = tokio::select! {
                    _ = task.closed() => true,
                    _ = tokio::time::sleep(MONITOR_INTERVAL) => false,
                };
                if task.cleanup.initialized() || me.strong_count() == 0 {
                    return;
                }
                if closed || task.is_closed() {
                    break;
                }
            }
            if let Some(manager) = me.upgrade() {
                tracing::info!(namespace = %task.namespace(), id = %task.id(), "shim disconnected");
                manager.cleanup_dead_shim(&task).await;
            }
        });
    }

    /// containerd `cleanupAfterDeadShim` + bundle removal, once per task: the shim's `delete`
    /// action; if the task was still listed, TaskExit and TaskDelete (255 if the action failed);
    /// then the bundle goes.
    ///
    /// A task no longer listed was deleted through its shim (runc state and rootfs are gone),
    /// so only the bundle goes: no `delete` action, which would cost a shim and a
    /// `runc delete --force` start-up on every task (containerd skips it there too).
    async fn cleanup_dead_shim(&self, task: &Arc<Task>) {
        task.cleanup
            .get_or_init(|| async {
                let exit = if self.is_listed(task) {
                    self.run_delete_action(&task.shim).await
                } else {
                    None
                };
                if self.unlist(task) {
                    tracing::warn!(namespace = %task.namespace(), id = %task.id(), "cleaned up after dead shim");
                    publish_dead_shim(
                        self.events.as_ref(),
                        task.namespace(),
                        task.id(),
                        exit.as_ref(),
                    );
                }
                task.stop_log_pump();
                let b = task.bundle.clone();
                let address = blocking(move || b.read_file(bundle::ADDRESS_FILE))
                    .await
                    .ok()
                    .flatten();
                delete_bundle(&task.bundle).await;
                // A killed shim could not remove its socket.
                if let Some(address) = address {
                    let _ = blocking(move || {
                        orphan::remove_stale_socket(&address);
                        Ok(())
                    })
                    .await;
                }
            })
            .await;
    }

    /// Deletes the task's init process in the shim, shuts the shim down and removes the bundle;
    /// returns how the task exited. A shim that refuses (e.g. the task is running) keeps the task.
    pub async fn delete(&self, ns: &str, id: &str) -> Result<Exit, RuntimeError> {
        let task = self.get(ns, id)?;
        let result = match task.shim_delete("").await {
            Ok(resp) => {
                berth_abortpoint::hit(abort_points::DELETE_SHIM_DELETED);
                // The shim published its own exit and delete events: none from us.
                self.unlist(&task);
                Ok(Exit {
                    pid: resp.pid,
                    status: resp.exit_status,
                    exited_at: resp.exited_at,
                })
            }
            Err(e) if e.is_closed() || e.kind() == ErrorKind::NotFound => Err(e),
            Err(e) => return Err(e),
        };
        if let Err(e) = task.shutdown().await {
            tracing::warn!(namespace = %ns, id = %id, error = %e, "failed to shut down shim");
        }
        self.cleanup_dead_shim(&task).await;
        self.unlist(&task);
        result
    }

    /// Reconnects to the shims of tasks that survived a daemon restart (containerd
    /// `loadExistingTasks`): each `<state>/<ns>/<id>` bundle with a recorded shim and address
    /// is dialled and must answer Connect within 5 s; otherwise the shim's `delete` action runs,
    /// TaskExit and TaskDelete are published and the bundle is removed. Work dirs of tasks
    /// not loaded are removed too. Bundles load many at once ([`restore`]).
    pub async fn load(&self) -> Result<(), RuntimeError> {
        let state = self.config.state.clone();
        let namespaces = blocking(move || list_dirs(&state)).await?;
        let mut found = Vec::new();
        for ns in namespaces {
            if identifiers::validate_namespace(&ns).is_err() {
                tracing::warn!(namespace = %ns, "skipping state dir that is not a namespace");
                continue;
            }
            let dir = self.config.state.join(&ns);
            let work = self.config.root.join(&ns);
            let ids = blocking(move || {
                // Deletes a crash cut short (`.<id>`) finish before anything else.
                for d in [&dir, &work] {
                    match bundle::finish_interrupted_deletes(d) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(dir = %d.display(), removed = n, "finished interrupted bundle deletes"),
                        Err(e) => tracing::warn!(dir = %d.display(), error = %e, "finish interrupted bundle deletes"),
                    }
                }
                list_dirs(&dir)
            })
            .await?;
            for id in ids {
                if identifiers::validate(&id).is_err() {
                    tracing::warn!(namespace = %ns, id = %id, "skipping bundle with an invalid id");
                    continue;
                }
                found.push((ns.clone(), id));
            }
        }
        // None only while the manager is being dropped: nothing would keep what loads.
        if let Some(me) = self.me.upgrade() {
            restore::map_bounded(found, restore::PARALLEL_LOADS, move |(ns, id)| {
                let me = me.clone();
                async move { me.load_one(&ns, &id).await }
            })
            .await;
        }
        self.cleanup_work_dirs().await
    }

    async fn load_one(&self, ns: &str, id: &str) {
        let bundle = match Bundle::locate(&self.config.state, &self.config.root, ns, id) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(namespace = %ns, id = %id, error = %e, "skipping bundle");
                return;
            }
        };
        let b = bundle.clone();
        let files = blocking(move || {
            if b.is_empty() {
                return Ok(None);
            }
            Ok(Some((
                b.read_file(bundle::SHIM_BINARY_FILE)?,
                b.read_file(bundle::ADDRESS_FILE)?,
            )))
        })
        .await;
        let (binary, address) = match files {
            Ok(Some(found)) => found,
            Ok(None) => {
                delete_bundle(&bundle).await;
                return;
            }
            Err(e) => {
                tracing::warn!(namespace = %ns, id = %id, error = %e, "read bundle");
                delete_bundle(&bundle).await;
                return;
            }
        };
        let Some(binary) = binary.map(PathBuf::from).filter(|p| is_executable(p)) else {
            // shim-binary-path is written before a shim starts, so without it no shim ran for
            // this bundle (or its binary is gone and nothing can clean up with it).
            tracing::warn!(namespace = %ns, id = %id, "bundle has no usable shim-binary-path; removing it");
            delete_bundle(&bundle).await;
            return;
        };
        let shim = self.shim_binary(binary, &bundle);
        let pump = spawn_log_pump(&bundle).ok();
        match self
            .reconnect(&bundle, &shim, address.as_deref(), pump)
            .await
        {
            Ok(task) if task.pid() != 0 => {
                tracing::info!(namespace = %ns, id = %id, pid = task.pid(), "task reconnected");
                self.lock()
                    .insert((ns.to_owned(), id.to_owned()), task.clone());
                self.spawn_monitor(task);
            }
            Ok(task) => {
                // A shim without a process: its task was never created, or was deleted before
                // the daemon could shut the shim down. Nothing to keep and, as containerd's
                // cleanupAfterDeadShim for a task it does not list, nothing to publish.
                tracing::warn!(namespace = %ns, id = %id, "shim has no task; shutting it down");
                self.dispose(&bundle, &shim, address, Some(&task)).await;
            }
            Err(e) => {
                tracing::warn!(namespace = %ns, id = %id, error = %e, "shim did not answer; cleaning up");
                let exit = self.dispose(&bundle, &shim, address, None).await;
                // The delete action reads the init pid runc wrote at create: none means no
                // task was ever created, so there is no exit to report.
                if exit.as_ref().is_none_or(|e| e.pid != 0) {
                    publish_dead_shim(self.events.as_ref(), ns, id, exit.as_ref());
                }
            }
        }
    }

    /// Gets rid of a shim found at load that the daemon does not keep: a connected one is
    /// asked to shut down (it exits once it serves no task); one that did not answer is killed
    /// through its recorded `shim.pid`. Then the shim's `delete` action (runc state, rootfs
    /// mount), the bundle and, once nobody listens on it, the socket go. Returns the delete
    /// action's answer.
    async fn dispose(
        &self,
        bundle: &Bundle,
        shim: &ShimBinary,
        address: Option<String>,
        task: Option<&Arc<Task>>,
    ) -> Option<Exit> {
        match task {
            Some(task) => {
                if let Err(e) = task.shutdown().await {
                    tracing::warn!(namespace = %bundle.namespace, id = %bundle.id, error = %e, "shut down shim");
                }
                let deadline = tokio::time::Instant::now() + shim.timeouts.shutdown;
                while !task.is_closed() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                task.stop_log_pump();
            }
            None => {
                let b = bundle.clone();
                let _ = blocking(move || {
                    orphan::kill_shim(&b, orphan::recorded_pid(&b));
                    Ok(())
                })
                .await;
            }
        }
        let exit = self.run_delete_action(shim).await;
        delete_bundle(bundle).await;
        if let Some(address) = address {
            let _ = blocking(move || {
                orphan::remove_stale_socket(&address);
                Ok(())
            })
            .await;
        }
        exit
    }

    async fn reconnect(
        &self,
        bundle: &Bundle,
        shim: &ShimBinary,
        address: Option<&str>,
        pump: Option<tokio::task::JoinHandle<()>>,
    ) -> Result<Arc<Task>, RuntimeError> {
        let abort = |pump: &Option<tokio::task::JoinHandle<()>>| {
            if let Some(p) = pump {
                p.abort();
            }
        };
        let address = match address.map(parse_address) {
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                abort(&pump);
                return Err(e);
            }
            None => {
                abort(&pump);
                return Err(RuntimeError::InvalidAddress(String::new()));
            }
        };
        let connected = tokio::time::timeout(shim.timeouts.load, Client::connect_address(&address))
            .await
            .unwrap_or(Err(berth_ttrpc::TtrpcError::Timeout));
        let client = match connected {
            Ok(c) => c,
            Err(source) => {
                abort(&pump);
                return Err(RuntimeError::Connect { address, source });
            }
        };
        let task = Arc::new(Task::new(bundle.clone(), shim.clone(), client, pump));
        match task.connect(Some(shim.timeouts.load)).await {
            Ok(resp) => {
                task.set_pid(resp.task_pid);
                Ok(task)
            }
            Err(e) => {
                task.stop_log_pump();
                Err(e)
            }
        }
    }

    async fn cleanup_work_dirs(&self) -> Result<(), RuntimeError> {
        let root = self.config.root.clone();
        let live: Vec<TaskKey> = self.lock().keys().cloned().collect();
        blocking(move || {
            for ns in list_dirs(&root)? {
                for id in list_dirs(&root.join(&ns))? {
                    if live.iter().any(|(n, i)| *n == ns && *i == id) {
                        continue;
                    }
                    let path = root.join(&ns).join(&id);
                    if let Err(e) = std::fs::remove_dir_all(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "remove orphan work dir");
                    }
                }
            }
            Ok(())
        })
        .await
    }
}

/// Names of the directories in `dir` that are not hidden; a missing dir has none.
fn list_dirs(dir: &Path) -> Result<Vec<String>, RuntimeError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RuntimeError::Bundle {
                op: "read dir",
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_dir && !name.starts_with('.') {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::DiscardEvents;

    fn manager(dir: &Path) -> Arc<TaskManager> {
        TaskManager::new(
            ManagerConfig {
                root: dir.join("root"),
                state: dir.join("state"),
                grpc_address: dir.join("grpc.sock").display().to_string(),
                ttrpc_address: dir.join("grpc.sock.ttrpc").display().to_string(),
                publish_binary: "/bin/true".into(),
                runtimes: BTreeMap::new(),
                timeouts: Timeouts::default(),
            },
            Arc::new(DiscardEvents),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn refusals_run_nothing_and_leave_no_bundle() {
        let d = tempfile::tempdir().unwrap();
        let m = manager(d.path());
        let base = CreateOpts {
            namespace: "ns1".into(),
            id: "c1".into(),
            spec: b"{}".to_vec(),
            runtime: "io.containerd.runc.v2".into(),
            ..Default::default()
        };
        let cases = [
            CreateOpts {
                id: "../x".into(),
                ..base.clone()
            },
            CreateOpts {
                runtime: "/bin/sh".into(),
                ..base.clone()
            },
            CreateOpts {
                runtime_path: "/bin/sh".into(),
                ..base.clone()
            },
            CreateOpts {
                runtime: "sh".into(),
                ..base.clone()
            },
            CreateOpts {
                runtime: "io.containerd.nosuchshim.v9".into(),
                ..base.clone()
            },
        ];
        for opts in cases {
            let err = m.create(opts).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        }
        assert!(list_dirs(&d.path().join("state")).unwrap().is_empty());
        let err = m.get("ns1", "c1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.to_string(), "task c1 not found");
        let err = m.delete("ns1", "c1").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    // A script checks plumbing only (STYLE §5): its start daemonises a stand-in shim, records
    // its pid and fails; the real shim's faults are in integration/tests/shim_faults.rs.
    #[tokio::test]
    async fn a_failed_start_takes_its_daemonised_shim_down() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("containerd-shim-fake-v1");
        std::fs::write(
            &script,
            "#!/bin/sh\nsh -c 'sleep 30; true' -namespace ns2 -id c2 >/dev/null 2>&1 &\n\
             echo $! > shim.pid\necho boom >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let m = TaskManager::new(
            ManagerConfig {
                runtimes: BTreeMap::from([(
                    "io.containerd.fake.v1".to_owned(),
                    script.display().to_string(),
                )]),
                ..manager(d.path()).config.clone()
            },
            Arc::new(DiscardEvents),
        )
        .unwrap();
        let opts = CreateOpts {
            namespace: "ns2".into(),
            id: "c2".into(),
            spec: b"{}".to_vec(),
            runtime: "io.containerd.fake.v1".into(),
            ..Default::default()
        };
        let err = m.create(opts).await.unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        let bundle = d.path().join("state/ns2/c2");
        assert!(!bundle.exists());
        // The stand-in shim's pid was in the bundle: it must be gone.
        let pids: Vec<u32> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    c.starts_with(b"sh\0-c\0sleep 30; true\0-namespace\0ns2\0-id\0c2")
                })
            })
            .filter(|pid| orphan::is_alive(*pid))
            .collect();
        assert!(pids.is_empty(), "stand-in shim still running: {pids:?}");
    }

    #[test]
    fn runc_runtimes_take_only_runc_options() {
        let runc = prost_types::Any {
            type_url: RUNC_OPTIONS_TYPE.into(),
            value: vec![],
        };
        let other = prost_types::Any {
            type_url: "x.Y".into(),
            value: vec![],
        };
        assert!(check_options("io.containerd.runc.v2", Some(&runc)).is_ok());
        assert!(check_options("io.containerd.runc.v2", None).is_ok());
        assert_eq!(
            check_options("io.containerd.runc.v1", Some(&other))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidArgument
        );
        assert!(check_options("io.containerd.kata.v2", Some(&other)).is_ok());
    }

    #[tokio::test]
    async fn load_drops_dead_bundles_and_orphan_work_dirs() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        let root = d.path().join("root");
        // A bundle whose shim binary is gone, an empty bundle, a hidden dir and an orphan
        // work dir.
        let b = Bundle::create(&state, &root, "ns1", "dead", b"{}").unwrap();
        b.write_file(bundle::SHIM_BINARY_FILE, b"/nonexistent/shim")
            .unwrap();
        std::fs::create_dir_all(state.join("ns1/empty")).unwrap();
        std::fs::create_dir_all(state.join("ns1/.hidden")).unwrap();
        std::fs::create_dir_all(root.join("ns1/orphan")).unwrap();
        // Deletes killed between their rename and their removal.
        std::fs::create_dir_all(state.join("ns1/.halfgone/rootfs")).unwrap();
        std::fs::write(state.join("ns1/.halfgone/config.json"), b"{}").unwrap();
        std::fs::create_dir_all(root.join("ns1/.halfgone")).unwrap();
        let m = manager(d.path());
        m.load().await.unwrap();
        assert!(m.list("ns1").is_empty());
        assert_eq!(list_dirs(&state.join("ns1")).unwrap(), Vec::<String>::new());
        assert!(list_dirs(&root.join("ns1")).unwrap().is_empty());
        assert!(!state.join("ns1/.halfgone").exists());
        assert!(!root.join("ns1/.halfgone").exists());
    }
}
