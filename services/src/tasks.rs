//! `containerd.services.tasks.v1.Tasks` over the runtime v2 task manager (containerd
//! `services/tasks/local.go`): namespace, validate, call, convert, map the error. The
//! `io.containerd.runtime.v2.task` plugin that builds the manager registers beside it, in
//! `berth_runtime::plugin`.
//!
//! Task events (`/tasks/create`, `/tasks/start`, `/tasks/exit`, ...) come from the shims through
//! the ttrpc events service; the daemon publishes `/tasks/exit` and `/tasks/delete` itself only
//! when it cleans up after a dead shim.

use std::sync::Arc;
use std::time::SystemTime;

use berth_core::metadata::plugin::snapshot_view;
use berth_core::namespaced_snapshots::NamespacedSnapshots;
use berth_core::MetadataStore;
use berth_proto::containerd::services::tasks::v1::tasks_server::{
    Tasks, TasksServer, SERVICE_NAME,
};
use berth_proto::containerd::services::tasks::v1::{
    CheckpointTaskRequest, CheckpointTaskResponse, CloseIoRequest, CreateTaskRequest,
    CreateTaskResponse, DeleteProcessRequest, DeleteResponse, DeleteTaskRequest,
    ExecProcessRequest, GetRequest, GetResponse, KillRequest, ListPidsRequest, ListPidsResponse,
    ListTasksRequest, ListTasksResponse, MetricsRequest, MetricsResponse, PauseTaskRequest,
    ResizePtyRequest, ResumeTaskRequest, StartRequest, StartResponse, UpdateTaskRequest,
    WaitRequest, WaitResponse,
};
use berth_proto::containerd::task::v2::StateResponse;
use berth_proto::containerd::types::Metric;
use berth_proto::containerd::v1::types::{Process, Status as TaskStatus};
use berth_registry::{types, Classify, ErrorKind, Registration};
use berth_runtime::{CreateOpts, Exit, Mount, RuntimeError, Task, TaskIo, TaskManager};
use tonic::{Request, Response, Status};

use crate::grpc::GrpcService;
use crate::status::to_status;
use crate::{blocking, namespace, rpc_span};

/// A runtime error as a status; a missing task reads `task <id> not found`, exactly as
/// containerd words it [obs].
fn runtime_status(e: RuntimeError) -> Status {
    match e {
        RuntimeError::TaskNotFound(id) => task_not_found(&id),
        other => to_status(&other),
    }
}

fn task_not_found(id: &str) -> Status {
    to_status(&TasksRequestError::TaskNotFound(id.to_owned()))
}

/// What the Tasks service refuses itself, in containerd's complete words (no class suffix).
#[derive(Debug, thiserror::Error)]
enum TasksRequestError {
    /// No task for the container in the namespace.
    #[error("task {0} not found")]
    TaskNotFound(String),
    /// A request about an exec that names none.
    #[error("exec id cannot be empty")]
    EmptyExecId,
    /// Create with a checkpoint to restore from.
    #[error("restoring a task from a checkpoint is not supported")]
    RestoreUnsupported,
    /// Checkpoint (it would write an image to the content store; not wired yet).
    #[error("checkpoint is not supported")]
    CheckpointUnsupported,
}

impl Classify for TasksRequestError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::TaskNotFound(_) => ErrorKind::NotFound,
            Self::EmptyExecId => ErrorKind::InvalidArgument,
            Self::RestoreUnsupported | Self::CheckpointUnsupported => ErrorKind::NotImplemented,
        }
    }

    fn complete_message(&self) -> bool {
        true
    }
}

/// The Tasks service.
#[derive(Debug, Clone)]
pub struct TasksService {
    tasks: Arc<TaskManager>,
    store: Arc<MetadataStore>,
    snapshots: NamespacedSnapshots,
}

fn exit_to_delete(id: String, exit: Exit) -> DeleteResponse {
    DeleteResponse {
        id,
        pid: exit.pid,
        exit_status: exit.status,
        exited_at: exit.exited_at,
    }
}

/// A shim state as the API's Process; `container_id` stays empty as in containerd 1.6 [obs].
fn to_process(id: &str, s: StateResponse) -> Process {
    Process {
        container_id: String::new(),
        id: id.to_owned(),
        pid: s.pid,
        status: s.status,
        stdin: s.stdin,
        stdout: s.stdout,
        stderr: s.stderr,
        terminal: s.terminal,
        exit_status: s.exit_status,
        exited_at: s.exited_at,
    }
}

impl TasksService {
    /// A service over the task manager, the metadata store (containers) and the snapshots
    /// (rootfs mounts when the request brings none).
    pub fn new(
        tasks: Arc<TaskManager>,
        store: Arc<MetadataStore>,
        snapshots: NamespacedSnapshots,
    ) -> Self {
        TasksService {
            tasks,
            store,
            snapshots,
        }
    }

    fn task<T>(&self, req: &Request<T>, id: &str) -> Result<(String, Arc<Task>), Status> {
        let ns = namespace::from_request(req)?;
        rpc_span::record("id", id);
        let task = self.tasks.get(&ns, id).map_err(|_| task_not_found(id))?;
        Ok((ns, task))
    }

    async fn container(&self, ns: &str, id: &str) -> Result<berth_core::Container, Status> {
        let (store, ns, id) = (self.store.clone(), ns.to_owned(), id.to_owned());
        blocking::run(move || store.get_container(&ns, &id))
            .await?
            .map_err(|e| to_status(&e))
    }

    async fn rootfs(
        &self,
        ns: &str,
        container: &berth_core::Container,
    ) -> Result<Vec<Mount>, Status> {
        if container.snapshot_key.is_empty() {
            return Ok(Vec::new());
        }
        let snapshots = self.snapshots.clone();
        let (ns, sn, key) = (
            ns.to_owned(),
            container.snapshotter.clone(),
            container.snapshot_key.clone(),
        );
        blocking::run(move || snapshots.mounts(&ns, &sn, &key))
            .await?
            .map_err(|e| to_status(&e))
    }
}

/// Requests that name an exec must name a valid one.
fn require_exec_id(exec_id: &str) -> Result<(), Status> {
    if exec_id.is_empty() {
        return Err(to_status(&TasksRequestError::EmptyExecId));
    }
    Ok(())
}

#[tonic::async_trait]
impl Tasks for TasksService {
    async fn create(
        &self,
        req: Request<CreateTaskRequest>,
    ) -> Result<Response<CreateTaskResponse>, Status> {
        rpc_span::record("id", &req.get_ref().container_id);
        let ns = namespace::from_request(&req)?;
        let r = req.into_inner();
        if r.checkpoint.is_some() {
            return Err(to_status(&TasksRequestError::RestoreUnsupported));
        }
        let container = self.container(&ns, &r.container_id).await?;
        if self.tasks.get(&ns, &container.id).is_ok() {
            return Err(to_status(&RuntimeError::TaskExists(container.id)));
        }
        let rootfs = if r.rootfs.is_empty() {
            self.rootfs(&ns, &container).await?
        } else {
            r.rootfs.into_iter().map(Mount::from).collect()
        };
        let spec = container.spec.map(|s| s.value).unwrap_or_default();
        let opts = CreateOpts {
            namespace: ns,
            id: container.id.clone(),
            spec,
            rootfs,
            runtime: container.runtime.name,
            runtime_path: r.runtime_path,
            runtime_options: container.runtime.options.map(|o| prost_types::Any {
                type_url: o.type_url,
                value: o.value,
            }),
            task_options: r.options,
            io: TaskIo {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                terminal: r.terminal,
            },
            checkpoint: String::new(),
        };
        let task = self.tasks.create(opts).await.map_err(runtime_status)?;
        Ok(Response::new(CreateTaskResponse {
            container_id: container.id,
            pid: task.pid(),
        }))
    }

    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        rpc_span::record("exec_id", &req.get_ref().exec_id);
        let (_, task) = self.task(&req, &req.get_ref().container_id)?;
        let pid = task
            .start(&req.get_ref().exec_id)
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(StartResponse { pid }))
    }

    async fn delete(
        &self,
        req: Request<DeleteTaskRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        rpc_span::record("id", &req.get_ref().container_id);
        let ns = namespace::from_request(&req)?;
        let id = req.into_inner().container_id;
        let container = self.container(&ns, &id).await?;
        let exit = self
            .tasks
            .delete(&ns, &container.id)
            .await
            .map_err(runtime_status)?;
        // containerd 1.6 leaves `id` empty for the init process [obs].
        Ok(Response::new(exit_to_delete(String::new(), exit)))
    }

    async fn delete_process(
        &self,
        req: Request<DeleteProcessRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        rpc_span::record("exec_id", &req.get_ref().exec_id);
        let (_, task) = self.task(&req, &req.get_ref().container_id)?;
        let exec_id = req.into_inner().exec_id;
        require_exec_id(&exec_id)?;
        let exit = task
            .delete_process(&exec_id)
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(exit_to_delete(exec_id, exit)))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        rpc_span::record("exec_id", &req.get_ref().exec_id);
        let (_, task) = self.task(&req, &req.get_ref().container_id)?;
        let exec_id = &req.get_ref().exec_id;
        let state = task.state(exec_id).await.map_err(runtime_status)?;
        let id = if exec_id.is_empty() {
            task.id()
        } else {
            exec_id
        };
        Ok(Response::new(GetResponse {
            process: Some(to_process(id, state)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        // `filter` is ignored, as in containerd 1.6.
        let ns = namespace::from_request(&req)?;
        let mut tasks = Vec::new();
        for (task, state) in self.tasks.list_states(&ns).await {
            match state {
                Ok(state) => tasks.push(to_process(task.id(), state)),
                // Deleted meanwhile.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(id = %task.id(), error = %e, "get task state");
                    tasks.push(Process {
                        id: task.id().to_owned(),
                        status: TaskStatus::Unknown as i32,
                        ..Default::default()
                    });
                }
            }
        }
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<()>, Status> {
        rpc_span::record("exec_id", &req.get_ref().exec_id);
        tracing::Span::current().record("signal", req.get_ref().signal);
        let (_, task) = self.task(&req, &req.get_ref().container_id)?;
        let r = req.into_inner();
        task.kill(&r.exec_id, r.signal, r.all)
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<ExecProcessRequest>) -> Result<Response<()>, Status> {
        rpc_span::record("exec_id", &req.get_ref().exec_id);
        require_exec_id(&req.get_ref().exec_id)?;
        let (_, task) = self.task(&req, &req.get_ref().container_id)?;
        let r = req.into_inner();
        let io = TaskIo {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            terminal: r.terminal,
        };
        task.exec(&r.exec_id, io, r.spec)
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, req: Request<ResizePtyRequest>) -> Result<Response<()>, Status> {
        rpc_span::record("exec_id", &req.get_ref().exec_id);
        let (_, task) = self.task(&req, &req.get_ref().container_id)?;
        let r = req.into_inner();
        task.resize_pty(&r.exec_id, r.width, r.height)
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, req: Request<CloseIoRequest>) -> Result<Response<()>, Status> {
        rpc_span::record("exec_id", &req.get_ref().exec_id);
        let (_, task) = self.task(&req, &req.get_ref().container_id)?;
        let r = req.into_inner();
        if r.stdin {
            task.close_io(&r.exec_id, true)
                .await
                .map_err(runtime_status)?;
        }
        Ok(Response::new(()))
    }

    async fn pause(&self, req: Request<PauseTaskRequest>) -> Result<Response<()>, Status> {
        let (_, task) = self.task(&req, &req.get_ref().container_id)?;
        task.pause().await.map_err(runtime_status)?;
        Ok(Response::new(()))
    }

    async fn resume(&self, req: Request<ResumeTaskRequest>) -> Result<Response<()>, Status> {
        let (_, task) = self.task(&req, &req.get_ref().container_id)?;
        task.resume().await.map_err(runtime_status)?;
        Ok(Response::new(()))
    }

    async fn list_pids(
        &self,
        req: Request<ListPidsRequest>,
    ) -> Result<Response<ListPidsResponse>, Status> {
        let (_, task) = self.task(&req, &req.get_ref().container_id)?;
        let processes = task.pids().await.map_err(runtime_status)?;
        Ok(Response::new(ListPidsResponse { processes }))
    }

    async fn checkpoint(
        &self,
        req: Request<CheckpointTaskRequest>,
    ) -> Result<Response<CheckpointTaskResponse>, Status> {
        // Checkpoints go to the content store as an image; not wired yet.
        self.task(&req, &req.get_ref().container_id)?;
        Err(to_status(&TasksRequestError::CheckpointUnsupported))
    }

    async fn update(&self, req: Request<UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let (_, task) = self.task(&req, &req.get_ref().container_id)?;
        let r = req.into_inner();
        task.update(r.resources, r.annotations)
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(()))
    }

    async fn metrics(
        &self,
        req: Request<MetricsRequest>,
    ) -> Result<Response<MetricsResponse>, Status> {
        tracing::Span::current().record("filters", tracing::field::debug(&req.get_ref().filters));
        let ns = namespace::from_request(&req)?;
        let filter = berth_filters::parse_any(&req.get_ref().filters).map_err(|e| to_status(&e))?;
        let mut metrics = Vec::new();
        for task in self.tasks.list(&ns) {
            let adaptor = |path: &[String]| match path.first().map(String::as_str) {
                Some("id") => Some(task.id().to_owned()),
                Some("namespace") => Some(task.namespace().to_owned()),
                _ => None,
            };
            if !filter.matches(&adaptor) {
                continue;
            }
            let collected = SystemTime::now();
            match task.stats().await {
                Ok(data) => metrics.push(Metric {
                    timestamp: Some(collected.into()),
                    id: task.id().to_owned(),
                    data,
                }),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(id = %task.id(), error = %e, "collect task metrics"),
            }
        }
        Ok(Response::new(MetricsResponse { metrics }))
    }

    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        rpc_span::record("exec_id", &req.get_ref().exec_id);
        let (_, task) = self.task(&req, &req.get_ref().container_id)?;
        let resp = task
            .wait(&req.get_ref().exec_id)
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(WaitResponse {
            exit_status: resp.exit_status,
            exited_at: resp.exited_at,
        }))
    }
}

/// The `io.containerd.grpc.v1.tasks` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "tasks")
        .serves(&[SERVICE_NAME])
        .reloadable()
        .requires(&[
            types::METADATA,
            types::SNAPSHOTTER,
            types::EVENT,
            types::RUNTIME_V2,
        ])
        .init(|ctx| {
            let store: Arc<MetadataStore> = ctx.get_single(types::METADATA)?;
            let tasks: Arc<TaskManager> =
                ctx.get_by_id(types::RUNTIME_V2, berth_runtime::PLUGIN_ID)?;
            let snapshots = snapshot_view(ctx)?;
            let svc = TasksService::new(tasks, store, snapshots);
            Ok(Arc::new(GrpcService::new(TasksServer::new(svc))))
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::time::Duration;

    use berth_core::events::{Event, Exchange};
    use berth_core::metadata::{AnyValue, RuntimeRecord};
    use berth_integration::{require_binary, require_root};
    use berth_proto::containerd::events::TaskExit;
    use berth_proto::containerd::types::Mount;

    use berth_runtime::plugin::ExchangeSink;
    use berth_runtime::ManagerConfig;

    use super::*;
    use crate::namespace::NAMESPACE_HEADER;

    const SHIM: &str = "containerd-shim-runc-v2";
    const RUNC: &str = "runc";

    fn with_ns<T>(ns: &str, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut()
            .insert(NAMESPACE_HEADER, ns.parse().unwrap());
        req
    }

    fn busybox_rootfs(dir: &Path) -> String {
        let rootfs = dir.join("busybox");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        let busybox = std::env::split_paths(&std::env::var_os("PATH").unwrap())
            .map(|d| d.join("busybox"))
            .find(|p| p.is_file())
            .unwrap();
        std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
        for name in ["sh", "echo", "sleep"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(name)).unwrap();
        }
        rootfs.display().to_string()
    }

    fn spec(dir: &Path, args: &[&str]) -> Vec<u8> {
        let out = std::process::Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        spec["process"]["args"] = serde_json::json!(args);
        spec["process"]["terminal"] = serde_json::json!(false);
        spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "network");
        serde_json::to_vec(&spec).unwrap()
    }

    /// The `ctr run --rm` sequence against the real runc shim: Create (rootfs from the
    /// request), Wait before Start, Get = STOPPED, Delete, Get = NotFound.
    #[tokio::test(flavor = "multi_thread")]
    async fn run_rm_sequence_through_the_runc_shim() {
        if !require_root() || ![RUNC, SHIM, "busybox"].into_iter().all(require_binary) {
            return;
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-ts")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let ns = format!("berth-ts-{}", std::process::id());
        let store = Arc::new(MetadataStore::open(&d.join("meta")).unwrap());
        let exchange = Arc::new(Exchange::new());
        let mut exits =
            exchange.subscribe(berth_filters::parse_any(&["topic==\"/tasks/exit\""]).unwrap());
        let listener = tokio::net::UnixListener::bind(d.join("d.sock.ttrpc")).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(crate::ttrpc_events::serve_ttrpc_events(
            listener,
            exchange.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        let manager = TaskManager::new(
            ManagerConfig {
                root: d.join("root"),
                state: d.join("state"),
                grpc_address: d.join("d.sock").display().to_string(),
                ttrpc_address: d.join("d.sock.ttrpc").display().to_string(),
                publish_binary: "/usr/bin/containerd".into(),
                runtimes: BTreeMap::from([("io.containerd.runc.v2".to_owned(), SHIM.to_owned())]),
                timeouts: berth_runtime::Timeouts::default(),
            },
            Arc::new(ExchangeSink(exchange.clone())),
        )
        .unwrap();
        let svc = TasksService::new(
            manager,
            store.clone(),
            NamespacedSnapshots::new(store.clone(), BTreeMap::new()),
        );

        let spec_dir = d.join("spec");
        std::fs::create_dir_all(&spec_dir).unwrap();
        store
            .create_container(
                &ns,
                berth_core::Container {
                    id: "c1".into(),
                    labels: BTreeMap::new(),
                    image: String::new(),
                    runtime: RuntimeRecord {
                        name: "io.containerd.runc.v2".into(),
                        options: Some(AnyValue {
                            type_url: "containerd.runc.v1.Options".into(),
                            value: vec![],
                        }),
                    },
                    spec: Some(AnyValue {
                        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                        value: spec(&spec_dir, &["echo", "hi"]),
                    }),
                    snapshotter: String::new(),
                    snapshot_key: String::new(),
                    created_at: SystemTime::now(),
                    updated_at: SystemTime::now(),
                    extensions: BTreeMap::new(),
                },
            )
            .unwrap();

        let out = d.join("out");
        let uri = format!("file://{}", out.display());
        let created = svc
            .create(with_ns(
                &ns,
                CreateTaskRequest {
                    container_id: "c1".into(),
                    rootfs: vec![Mount {
                        r#type: "bind".into(),
                        source: busybox_rootfs(d),
                        target: String::new(),
                        options: vec!["rbind".into(), "rw".into()],
                    }],
                    stdout: uri.clone(),
                    stderr: uri,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(created.container_id, "c1");
        assert!(created.pid > 0);
        let again = svc
            .create(with_ns(
                &ns,
                CreateTaskRequest {
                    container_id: "c1".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(again.code(), tonic::Code::AlreadyExists);

        let waiter = {
            let svc = svc.clone();
            let ns = ns.clone();
            tokio::spawn(async move {
                svc.wait(with_ns(
                    &ns,
                    WaitRequest {
                        container_id: "c1".into(),
                        exec_id: String::new(),
                    },
                ))
                .await
            })
        };
        let started = svc
            .start(with_ns(
                &ns,
                StartRequest {
                    container_id: "c1".into(),
                    exec_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(started.pid, created.pid);
        let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .into_inner();
        assert_eq!(waited.exit_status, 0);

        let got = svc
            .get(with_ns(
                &ns,
                GetRequest {
                    container_id: "c1".into(),
                    exec_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .process
            .unwrap();
        assert_eq!(got.status, TaskStatus::Stopped as i32);
        assert_eq!(got.id, "c1");
        assert_eq!(got.container_id, "");
        let listed = svc
            .list(with_ns(&ns, ListTasksRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.tasks.len(), 1);

        let deleted = svc
            .delete(with_ns(
                &ns,
                DeleteTaskRequest {
                    container_id: "c1".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((deleted.id.as_str(), deleted.exit_status), ("", 0));
        let err = svc
            .get(with_ns(
                &ns,
                GetRequest {
                    container_id: "c1".into(),
                    exec_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert_eq!(err.message(), "task c1 not found");
        assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), "hi");

        // The shim's TaskExit came back through the ttrpc events service.
        let exit = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(e) = exits.try_recv() {
                    return e;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(exit.namespace, ns);
        assert_eq!(exit.event.type_url, TaskExit::TYPE_URL);

        let missing = svc
            .create(with_ns(
                &ns,
                CreateTaskRequest {
                    container_id: "nope".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
        let _ = stop.send(());
        let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(&ns));
    }

    #[test]
    fn missing_tasks_use_containerds_words() {
        let s = runtime_status(RuntimeError::TaskNotFound("c1".into()));
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert_eq!(s.message(), "task c1 not found");
        let s = runtime_status(RuntimeError::TaskExists("c1".into()));
        assert_eq!(s.code(), tonic::Code::AlreadyExists);
        assert_eq!(s.message(), "task c1: already exists");
    }

    #[test]
    fn own_refusals_keep_their_words_and_codes() {
        let cases = [
            (TasksRequestError::EmptyExecId, tonic::Code::InvalidArgument),
            (
                TasksRequestError::CheckpointUnsupported,
                tonic::Code::Unimplemented,
            ),
            (
                TasksRequestError::RestoreUnsupported,
                tonic::Code::Unimplemented,
            ),
        ];
        for (err, code) in cases {
            let s = to_status(&err);
            assert_eq!(s.code(), code);
            assert_eq!(s.message(), err.to_string());
        }
        assert_eq!(
            to_status(&TasksRequestError::CheckpointUnsupported).message(),
            "checkpoint is not supported"
        );
    }
}
