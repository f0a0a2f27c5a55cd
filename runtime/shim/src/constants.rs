//! Wire strings the shim shares with containerd 1.6: type URLs, topics, file names, defaults.
//!
//! Facts from containerd `runtime/v2/runc/` and `pkg/process/`, `api/events/`, `runtime/typeurl.go`.

/// The ttrpc service this shim serves (`runtime/v2/task/shim.proto`).
pub const TASK_SERVICE: &str = "containerd.task.v2.Task";
/// The daemon's ttrpc event service (`api/services/ttrpc/events/v1/events.proto`).
pub const EVENTS_SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";
/// Metadata key carrying the namespace on ttrpc (`pkg/namespaces/ttrpc.go`).
pub const TTRPC_NAMESPACE_HEADER: &str = "containerd-namespace-ttrpc";
/// Environment variable naming the daemon's ttrpc address.
pub const TTRPC_ADDRESS_ENV: &str = "TTRPC_ADDRESS";

/// Bare `Any` type URLs (no `type.googleapis.com/` prefix).
pub mod type_url {
    /// Runtime options of the runc shims.
    pub const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
    /// Per-pid details in `Pids` answers.
    pub const PROCESS_DETAILS: &str = "containerd.runc.v1.ProcessDetails";
    /// cgroup v1 metrics.
    pub const CGROUPS_V1_METRICS: &str = "io.containerd.cgroups.v1.Metrics";
    /// cgroup v2 metrics.
    pub const CGROUPS_V2_METRICS: &str = "io.containerd.cgroups.v2.Metrics";
    /// `containerd.events.TaskCreate`.
    pub const TASK_CREATE: &str = "containerd.events.TaskCreate";
    /// `containerd.events.TaskStart`.
    pub const TASK_START: &str = "containerd.events.TaskStart";
    /// `containerd.events.TaskExit`.
    pub const TASK_EXIT: &str = "containerd.events.TaskExit";
    /// `containerd.events.TaskDelete`.
    pub const TASK_DELETE: &str = "containerd.events.TaskDelete";
    /// Note the upper-case `OOM`: the Rust type is `TaskOom`.
    pub const TASK_OOM: &str = "containerd.events.TaskOOM";
    /// `containerd.events.TaskExecAdded`.
    pub const TASK_EXEC_ADDED: &str = "containerd.events.TaskExecAdded";
    /// `containerd.events.TaskExecStarted`.
    pub const TASK_EXEC_STARTED: &str = "containerd.events.TaskExecStarted";
    /// `containerd.events.TaskPaused`.
    pub const TASK_PAUSED: &str = "containerd.events.TaskPaused";
    /// `containerd.events.TaskResumed`.
    pub const TASK_RESUMED: &str = "containerd.events.TaskResumed";
}

/// Event topics (`runtime/events.go`).
pub mod topic {
    /// Task created.
    pub const TASK_CREATE: &str = "/tasks/create";
    /// Init process started.
    pub const TASK_START: &str = "/tasks/start";
    /// A process exited.
    pub const TASK_EXIT: &str = "/tasks/exit";
    /// Task deleted.
    pub const TASK_DELETE: &str = "/tasks/delete";
    /// The container hit its memory limit.
    pub const TASK_OOM: &str = "/tasks/oom";
    /// Exec process added.
    pub const TASK_EXEC_ADDED: &str = "/tasks/exec-added";
    /// Exec process started.
    pub const TASK_EXEC_STARTED: &str = "/tasks/exec-started";
    /// Task paused.
    pub const TASK_PAUSED: &str = "/tasks/paused";
    /// Task resumed.
    pub const TASK_RESUMED: &str = "/tasks/resumed";
}

/// Spec annotations that put several containers into one shim (`runtime/v2/runc/manager`).
pub const GROUP_LABELS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// Default runc state root; the namespace is appended (`pkg/process/init.go` `RuncRoot`).
pub const RUNC_ROOT: &str = "/run/containerd/runc";
/// Default runc binary.
pub const RUNC_BINARY: &str = "runc";
/// Socket directory of containerd 1.6 shims (`runtime/v2/shim/util_unix.go`).
pub const CONTAINERD_SOCKET_DIR: &str = "/run/containerd/s";
/// The daemon state tree that uses [`CONTAINERD_SOCKET_DIR`].
pub const CONTAINERD_STATE_DIR: &str = "/run/containerd";

/// Bundle files.
pub mod bundle {
    /// OCI spec.
    pub const CONFIG: &str = "config.json";
    /// Rootfs mount point.
    pub const ROOTFS: &str = "rootfs";
    /// Shim address written by `start`.
    pub const ADDRESS: &str = "address";
    /// Pid of the daemonised shim, written by `start` (containerd's runc shim writes it too);
    /// a restarted daemon kills a shim that does not answer through it.
    pub const SHIM_PID: &str = "shim.pid";
    /// FIFO the daemon reads shim logs from.
    pub const LOG_FIFO: &str = "log";
    /// runc's JSON log.
    pub const RUNC_LOG: &str = "log.json";
    /// Pid file of the init process.
    pub const INIT_PID: &str = "init.pid";
    /// Runtime options saved by Create for the `delete` action (JSON).
    pub const OPTIONS: &str = "options.json";
    /// runc binary saved by Create for the `delete` action.
    pub const RUNTIME: &str = "runtime";
}

/// Exit status reported for a process killed by the `delete` action (128 + SIGKILL).
pub const KILLED_EXIT_STATUS: u32 = 137;
/// Version reported by `-v` and `Connect`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
