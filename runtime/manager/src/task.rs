//! One task: the ttrpc client to its shim and one method per `containerd.task.v2.Task` call
//! (containerd `runtime/v2/shim.go` `shimTask`, `process.go`). The daemon sends no namespace
//! metadata to shims [obs]; each shim serves exactly one namespace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use berth_proto::containerd::task::v2::{
    CheckpointTaskRequest, CloseIoRequest, ConnectRequest, ConnectResponse, DeleteRequest,
    DeleteResponse, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest, PidsResponse,
    ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest,
    StateResponse, StatsRequest, StatsResponse, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use berth_proto::containerd::v1::types::ProcessInfo;
use berth_registry::identifiers;
use berth_ttrpc::{CallOptions, Client};
use prost::Message;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use crate::bundle::Bundle;
use crate::error::RuntimeError;
use crate::shim::{Exit, ShimBinary};

/// The shim's ttrpc service.
pub const TASK_SERVICE: &str = "containerd.task.v2.Task";

/// I/O of a process: FIFO paths or URIs (`file://`, `binary://`) the shim opens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskIo {
    /// Stdin path, empty for none.
    pub stdin: String,
    /// Stdout path or URI.
    pub stdout: String,
    /// Stderr path or URI (empty with a terminal).
    pub stderr: String,
    /// Whether the process gets a pty.
    pub terminal: bool,
}

/// A running shim's task, shared by the manager and the service calls on it.
#[derive(Debug)]
pub struct Task {
    pub(crate) bundle: Bundle,
    pub(crate) shim: ShimBinary,
    pub(crate) client: Client,
    pid: AtomicU32,
    pub(crate) log_pump: Mutex<Option<JoinHandle<()>>>,
    /// Runs the dead-shim cleanup once, whoever notices first; later callers wait for it.
    pub(crate) cleanup: OnceCell<()>,
}

impl Task {
    pub(crate) fn new(
        bundle: Bundle,
        shim: ShimBinary,
        client: Client,
        log_pump: Option<JoinHandle<()>>,
    ) -> Task {
        Task {
            bundle,
            shim,
            client,
            pid: AtomicU32::new(0),
            log_pump: Mutex::new(log_pump),
            cleanup: OnceCell::new(),
        }
    }

    /// The task (container) id.
    pub fn id(&self) -> &str {
        &self.bundle.id
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.bundle.namespace
    }

    /// The init process pid from Create (or Connect after a restart).
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    pub(crate) fn set_pid(&self, pid: u32) {
        self.pid.store(pid, Ordering::Relaxed);
    }

    /// The bundle directory.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// True once the shim connection is gone.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Completes once the shim connection broke.
    pub async fn closed(&self) {
        self.client.closed().await
    }

    pub(crate) async fn call<Req, Resp>(
        &self,
        method: &'static str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, RuntimeError>
    where
        Req: Message,
        Resp: Message + Default,
    {
        let opts = CallOptions {
            timeout,
            metadata: Vec::new(),
        };
        self.client
            .call(TASK_SERVICE, method, req, opts)
            .await
            .map_err(|error| RuntimeError::Shim { method, error })
    }

    fn check_exec_id(exec_id: &str) -> Result<(), RuntimeError> {
        if exec_id.is_empty() {
            return Ok(());
        }
        identifiers::validate(exec_id).map_err(|source| RuntimeError::InvalidExecId {
            id: exec_id.to_owned(),
            source,
        })
    }

    /// State of the init process (`exec_id` empty) or an exec; a gone shim reads as NotFound.
    pub async fn state(&self, exec_id: &str) -> Result<StateResponse, RuntimeError> {
        let req = StateRequest {
            id: self.id().to_owned(),
            exec_id: exec_id.to_owned(),
        };
        match self
            .call("State", &req, Some(self.shim.timeouts.state))
            .await
        {
            Err(e) if e.is_closed() => Err(RuntimeError::TaskNotFound(self.id().to_owned())),
            other => other,
        }
    }

    /// Starts the init process or an exec; returns its pid.
    pub async fn start(&self, exec_id: &str) -> Result<u32, RuntimeError> {
        let req = StartRequest {
            id: self.id().to_owned(),
            exec_id: exec_id.to_owned(),
        };
        let resp: StartResponse = self.call("Start", &req, None).await?;
        Ok(resp.pid)
    }

    /// Deletes an exec process in the shim (the init process goes through the manager).
    pub async fn delete_process(&self, exec_id: &str) -> Result<Exit, RuntimeError> {
        Task::check_exec_id(exec_id)?;
        let resp = self.shim_delete(exec_id).await?;
        Ok(Exit {
            pid: resp.pid,
            status: resp.exit_status,
            exited_at: resp.exited_at,
        })
    }

    pub(crate) async fn shim_delete(&self, exec_id: &str) -> Result<DeleteResponse, RuntimeError> {
        let req = DeleteRequest {
            id: self.id().to_owned(),
            exec_id: exec_id.to_owned(),
        };
        self.call("Delete", &req, None).await
    }

    /// Every process in the task's container.
    pub async fn pids(&self) -> Result<Vec<ProcessInfo>, RuntimeError> {
        let req = PidsRequest {
            id: self.id().to_owned(),
        };
        let resp: PidsResponse = self.call("Pids", &req, None).await?;
        Ok(resp.processes)
    }

    /// Freezes the task.
    pub async fn pause(&self) -> Result<(), RuntimeError> {
        let req = PauseRequest {
            id: self.id().to_owned(),
        };
        self.call::<_, ()>("Pause", &req, None).await
    }

    /// Thaws the task.
    pub async fn resume(&self) -> Result<(), RuntimeError> {
        let req = ResumeRequest {
            id: self.id().to_owned(),
        };
        self.call::<_, ()>("Resume", &req, None).await
    }

    /// Checkpoints the task into `path`.
    pub async fn checkpoint(
        &self,
        path: &str,
        options: Option<prost_types::Any>,
    ) -> Result<(), RuntimeError> {
        let req = CheckpointTaskRequest {
            id: self.id().to_owned(),
            path: path.to_owned(),
            options,
        };
        self.call::<_, ()>("Checkpoint", &req, None).await
    }

    /// Signals the init process (`all`: every process) or an exec.
    pub async fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<(), RuntimeError> {
        let req = KillRequest {
            id: self.id().to_owned(),
            exec_id: exec_id.to_owned(),
            signal,
            all,
        };
        self.call::<_, ()>("Kill", &req, None).await
    }

    /// Adds an exec process (`spec` is the JSON OCI Process `Any`); Start runs it.
    pub async fn exec(
        &self,
        exec_id: &str,
        io: TaskIo,
        spec: Option<prost_types::Any>,
    ) -> Result<(), RuntimeError> {
        identifiers::validate(exec_id).map_err(|source| RuntimeError::InvalidExecId {
            id: exec_id.to_owned(),
            source,
        })?;
        let req = ExecProcessRequest {
            id: self.id().to_owned(),
            exec_id: exec_id.to_owned(),
            terminal: io.terminal,
            stdin: io.stdin,
            stdout: io.stdout,
            stderr: io.stderr,
            spec,
        };
        self.call::<_, ()>("Exec", &req, None).await
    }

    /// Resizes a process's pty.
    pub async fn resize_pty(
        &self,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), RuntimeError> {
        let req = ResizePtyRequest {
            id: self.id().to_owned(),
            exec_id: exec_id.to_owned(),
            width,
            height,
        };
        self.call::<_, ()>("ResizePty", &req, None).await
    }

    /// Closes a process's stdin.
    pub async fn close_io(&self, exec_id: &str, stdin: bool) -> Result<(), RuntimeError> {
        let req = CloseIoRequest {
            id: self.id().to_owned(),
            exec_id: exec_id.to_owned(),
            stdin,
        };
        self.call::<_, ()>("CloseIO", &req, None).await
    }

    /// Updates resources (a `LinuxResources` JSON `Any`) and annotations.
    pub async fn update(
        &self,
        resources: Option<prost_types::Any>,
        annotations: HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let req = UpdateTaskRequest {
            id: self.id().to_owned(),
            resources,
            annotations,
        };
        self.call::<_, ()>("Update", &req, None).await
    }

    /// Waits for the init process or an exec to exit.
    pub async fn wait(&self, exec_id: &str) -> Result<WaitResponse, RuntimeError> {
        let req = WaitRequest {
            id: self.id().to_owned(),
            exec_id: exec_id.to_owned(),
        };
        self.call("Wait", &req, None).await
    }

    /// The task's cgroup metrics as the shim packs them.
    pub async fn stats(&self) -> Result<Option<prost_types::Any>, RuntimeError> {
        let req = StatsRequest {
            id: self.id().to_owned(),
        };
        let resp: StatsResponse = self.call("Stats", &req, None).await?;
        Ok(resp.stats)
    }

    /// Shim and task pids; proves the shim answers.
    pub async fn connect(
        &self,
        timeout: Option<Duration>,
    ) -> Result<ConnectResponse, RuntimeError> {
        let req = ConnectRequest {
            id: self.id().to_owned(),
        };
        self.call("Connect", &req, timeout).await
    }

    /// Asks the shim to exit (it does so only with no tasks left); a closed connection counts
    /// as done.
    pub(crate) async fn shutdown(&self) -> Result<(), RuntimeError> {
        let req = ShutdownRequest {
            id: self.id().to_owned(),
            now: false,
        };
        match self
            .call::<_, ()>("Shutdown", &req, Some(self.shim.timeouts.shutdown))
            .await
        {
            Err(e) if e.is_closed() => Ok(()),
            other => other,
        }
    }

    pub(crate) fn stop_log_pump(&self) {
        let pump = self
            .log_pump
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(p) = pump {
            p.abort();
        }
    }
}
