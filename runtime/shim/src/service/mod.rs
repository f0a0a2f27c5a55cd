//! The `containerd.task.v2.Task` ttrpc service (containerd `runtime/v2/runc/task/service.go`):
//! shared state here, one file per method group.

mod control;
mod exec;
mod exits;
mod lifecycle;
mod shim;
mod status;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use berth_proto::containerd::task::v2 as api;
use berth_ttrpc::{unary, unimplemented_method, Context, HandlerFuture, RpcStatus, Service};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cgroup::Cgroup;
use crate::constants::TASK_SERVICE;
use crate::error::{Result, ShimError};
use crate::events::Publisher;
use crate::process::Process;
use crate::reaper::{Exit, Reaper};
use crate::runc::Runc;

/// One task (container) served by this shim.
#[derive(Debug)]
pub struct Container {
    /// Task id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// runc configured for this task.
    pub runc: Runc,
    /// Whether we mounted `<bundle>/rootfs`.
    pub rootfs_mounted: bool,
    /// The init process.
    pub init: Process,
    /// Exec processes by exec id.
    pub execs: HashMap<String, Process>,
    /// The container's cgroup, read once the init pid is known.
    pub cgroup: Option<Cgroup>,
    /// The OOM watcher.
    pub oom_watch: Option<JoinHandle<()>>,
    /// Kill every other process of the container when init exits (no PID namespace of its own).
    pub kill_all_on_exit: bool,
    /// What the shim does itself instead of starting the runtime (`runc start`, `runc delete`).
    pub own: crate::own::Eligibility,
}

impl Container {
    /// The init process (`exec_id` empty) or an exec process.
    pub fn process(&self, exec_id: &str) -> Result<&Process> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs
            .get(exec_id)
            .ok_or_else(|| ShimError::ProcessNotFound {
                exec_id: exec_id.to_owned(),
            })
    }

    /// Mutable [`Container::process`].
    pub fn process_mut(&mut self, exec_id: &str) -> Result<&mut Process> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| ShimError::ProcessNotFound {
                exec_id: exec_id.to_owned(),
            })
    }
}

/// Recent exits that matched no process, for starters racing the exit loop.
const UNMATCHED_KEEP: usize = 128;

#[derive(Debug, Default)]
struct State {
    containers: HashMap<String, Container>,
    unmatched: VecDeque<Exit>,
}

/// The shim's state, shared by every request.
#[derive(Debug)]
pub struct Shim {
    namespace: String,
    reaper: Reaper,
    publisher: Publisher,
    state: Mutex<State>,
    shutdown: watch::Sender<bool>,
}

impl Shim {
    /// A shim with no containers.
    pub fn new(namespace: String, reaper: Reaper, publisher: Publisher) -> Arc<Shim> {
        let (shutdown, _) = watch::channel(false);
        Arc::new(Shim {
            namespace,
            reaper,
            publisher,
            state: Mutex::new(State::default()),
            shutdown,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on container `id` under the lock.
    fn with_container<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Container) -> Result<T>,
    ) -> Result<T> {
        let mut state = self.lock();
        let c = state
            .containers
            .get_mut(id)
            .ok_or_else(|| ShimError::ContainerNotFound { id: id.to_owned() })?;
        f(c)
    }

    /// Resolves once Shutdown accepted (no containers left).
    pub fn shutdown_requested(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// The ttrpc face of a [`Shim`].
#[derive(Debug, Clone)]
pub struct TaskService {
    shim: Arc<Shim>,
}

impl TaskService {
    /// Wraps `shim`.
    pub fn new(shim: Arc<Shim>) -> TaskService {
        TaskService { shim }
    }
}

fn status(err: ShimError) -> RpcStatus {
    err.into()
}

macro_rules! route {
    ($shim:expr, $payload:expr, $req:ty, $resp:ty, $method:ident) => {{
        let shim = $shim.clone();
        unary::<$req, $resp, _, _>(&$payload, move |req| async move {
            shim.$method(req).await.map_err(status)
        })
    }};
}

impl Service for TaskService {
    fn name(&self) -> &str {
        TASK_SERVICE
    }

    fn call(&self, method: &str, _ctx: Context, payload: Vec<u8>) -> HandlerFuture {
        let s = &self.shim;
        match method {
            "State" => route!(s, payload, api::StateRequest, api::StateResponse, state),
            "Create" => route!(
                s,
                payload,
                api::CreateTaskRequest,
                api::CreateTaskResponse,
                create
            ),
            "Start" => route!(s, payload, api::StartRequest, api::StartResponse, start),
            "Delete" => route!(s, payload, api::DeleteRequest, api::DeleteResponse, delete),
            "Pids" => route!(s, payload, api::PidsRequest, api::PidsResponse, pids),
            "Pause" => route!(s, payload, api::PauseRequest, (), pause),
            "Resume" => route!(s, payload, api::ResumeRequest, (), resume),
            "Checkpoint" => route!(s, payload, api::CheckpointTaskRequest, (), checkpoint),
            "Kill" => route!(s, payload, api::KillRequest, (), kill),
            "Exec" => route!(s, payload, api::ExecProcessRequest, (), exec),
            "ResizePty" => route!(s, payload, api::ResizePtyRequest, (), resize_pty),
            "CloseIO" => route!(s, payload, api::CloseIoRequest, (), close_io),
            "Update" => route!(s, payload, api::UpdateTaskRequest, (), update),
            "Wait" => route!(s, payload, api::WaitRequest, api::WaitResponse, wait),
            "Stats" => route!(s, payload, api::StatsRequest, api::StatsResponse, stats),
            "Connect" => route!(
                s,
                payload,
                api::ConnectRequest,
                api::ConnectResponse,
                connect
            ),
            "Shutdown" => route!(s, payload, api::ShutdownRequest, (), shutdown),
            other => unimplemented_method(other),
        }
    }
}

/// Runs a blocking filesystem step off the async workers (rust-extensions `asyncify`).
pub async fn asyncify<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ShimError::Io {
            op: "blocking task",
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })?
}
