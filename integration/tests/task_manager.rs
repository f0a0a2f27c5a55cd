//! The task manager driving containerd's real `containerd-shim-runc-v2` (and so `runc`): run a
//! busybox `echo`, kill a `sleep`, exec into it, and reconnect after a "restart". Needs root,
//! `runc` and the shim; without them prints `skipped: <reason>`, under `CI=true` panics. The
//! manager runs in this process, with no `berthd`: what it drives is real, so the test lives here
//! with the other end-to-end tests rather than in `runtime/manager`.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_errdefs::{Classify, ErrorKind};
use berth_integration::{require_binary, require_root};
use berth_proto::containerd::events::TaskExit;
use berth_proto::containerd::services::events::ttrpc::v1::ForwardRequest;
use berth_proto::containerd::v1::types::Status;
use berth_runtime::{
    CreateOpts, DiscardEvents, EventSink, ManagerConfig, Mount, TaskIo, TaskManager,
};
use berth_ttrpc::{unary, Context, HandlerFuture, Server, Service};
use prost::Message;
use tempfile::TempDir;
use tokio::sync::mpsc;

const SHIM: &str = "containerd-shim-runc-v2";
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// Root, runc and the runc shim, or a skip (a failure under `CI=true`).
fn prerequisites() -> bool {
    require_root() && require_binary("runc") && require_binary(SHIM)
}

/// The daemon's ttrpc events endpoint, reduced to recording what shims forward.
struct Recorder(mpsc::UnboundedSender<(String, String, prost_types::Any)>);

impl Service for Recorder {
    fn name(&self) -> &str {
        "containerd.services.events.ttrpc.v1.Events"
    }

    fn call(&self, method: &str, ctx: Context, payload: Vec<u8>) -> HandlerFuture {
        if method != "Forward" {
            return berth_ttrpc::unimplemented_method(method);
        }
        let tx = self.0.clone();
        let header_ns = ctx.get("containerd-namespace-ttrpc").map(str::to_owned);
        unary::<ForwardRequest, (), _, _>(&payload, move |req| async move {
            if let Some(env) = req.envelope {
                let ns = header_ns.unwrap_or(env.namespace);
                let _ = tx.send((ns, env.topic, env.event.unwrap_or_default()));
            }
            Ok(())
        })
    }
}

/// The manager's own events (dead-shim cleanup).
#[derive(Default)]
struct Published(Mutex<Vec<(String, String, prost_types::Any)>>);

impl EventSink for Published {
    fn publish(&self, ns: &str, topic: &str, event: prost_types::Any) {
        self.0
            .lock()
            .expect("events lock")
            .push((ns.to_owned(), topic.to_owned(), event));
    }
}

struct Fixture {
    dir: TempDir,
    ns: String,
    rootfs: PathBuf,
    events: mpsc::UnboundedReceiver<(String, String, prost_types::Any)>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // runc keeps per-namespace state dirs under the host-global root; drop ours if empty.
        let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(&self.ns));
    }
}

impl Fixture {
    async fn new(tag: &str) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("berth-rt")
            .tempdir()
            .expect("tempdir");
        let rootfs = dir.path().join("busybox");
        std::fs::create_dir_all(rootfs.join("bin")).expect("test fixture");
        std::fs::copy("/usr/bin/busybox", rootfs.join("bin/busybox")).expect("busybox");
        for name in ["sh", "echo", "sleep", "true", "cat"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(name))
                .expect("test fixture");
        }
        let (tx, events) = mpsc::unbounded_channel();
        let listener =
            tokio::net::UnixListener::bind(dir.path().join("d.sock.ttrpc")).expect("test fixture");
        let mut server = Server::new();
        server.add_service(Arc::new(Recorder(tx)));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        Fixture {
            ns: format!("berth-rt-{tag}-{}", std::process::id()),
            dir,
            rootfs,
            events,
            _stop: stop,
        }
    }

    fn manager(&self) -> Arc<TaskManager> {
        self.manager_with(Arc::new(DiscardEvents))
    }

    fn manager_with(&self, events: Arc<dyn EventSink>) -> Arc<TaskManager> {
        let d = self.dir.path();
        TaskManager::new(
            ManagerConfig {
                root: d.join("root"),
                state: d.join("state"),
                grpc_address: d.join("d.sock").display().to_string(),
                ttrpc_address: d.join("d.sock.ttrpc").display().to_string(),
                publish_binary: "/usr/bin/containerd".into(),
                runtimes: BTreeMap::from([("io.containerd.runc.v2".to_owned(), SHIM.to_owned())]),
                timeouts: berth_runtime::Timeouts::default(),
            },
            events,
        )
        .expect("manager")
    }

    /// A spec like `runc spec` gives, running `args`, without a network namespace.
    fn spec(&self, args: &[&str]) -> Vec<u8> {
        let spec_dir = self.dir.path().join("spec");
        std::fs::create_dir_all(&spec_dir).expect("test fixture");
        let _ = std::fs::remove_file(spec_dir.join("config.json"));
        let out = std::process::Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(&spec_dir)
            .output()
            .expect("runc spec");
        assert!(out.status.success(), "runc spec: {out:?}");
        let mut spec: serde_json::Value = serde_json::from_slice(
            &std::fs::read(spec_dir.join("config.json")).expect("test fixture"),
        )
        .expect("test fixture");
        spec["process"]["args"] = serde_json::json!(args);
        spec["process"]["terminal"] = serde_json::json!(false);
        let namespaces = spec["linux"]["namespaces"]
            .as_array_mut()
            .expect("test fixture");
        namespaces.retain(|n| n["type"] != "network");
        serde_json::to_vec(&spec).expect("test fixture")
    }

    fn out_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn opts(&self, id: &str, args: &[&str], out: &Path) -> CreateOpts {
        let uri = format!("file://{}", out.display());
        CreateOpts {
            namespace: self.ns.clone(),
            id: id.to_owned(),
            spec: self.spec(args),
            rootfs: vec![Mount {
                mount_type: "bind".into(),
                source: self.rootfs.display().to_string(),
                target: String::new(),
                options: vec!["rbind".into(), "rw".into()],
            }],
            runtime: "io.containerd.runc.v2".into(),
            runtime_options: Some(prost_types::Any {
                type_url: RUNC_OPTIONS.into(),
                value: vec![],
            }),
            io: TaskIo {
                stdin: String::new(),
                stdout: uri.clone(),
                stderr: uri,
                terminal: false,
            },
            ..Default::default()
        }
    }

    async fn next_exit(&mut self, id: &str) -> TaskExit {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (ns, topic, event) = tokio::time::timeout(left, self.events.recv())
                .await
                .expect("a TaskExit arrives")
                .expect("events server running");
            if topic == "/tasks/exit" && ns == self.ns {
                assert_eq!(event.type_url, "containerd.events.TaskExit");
                let exit = TaskExit::decode(event.value.as_slice()).expect("test fixture");
                if exit.container_id == id && exit.id == id {
                    return exit;
                }
            }
        }
    }
}

async fn read_eventually(path: &Path, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = std::fs::read_to_string(path).unwrap_or_default();
        if got.contains(want) || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_runs_to_exit_zero_through_the_runc_shim() {
    if !prerequisites() {
        return;
    }
    let mut fx = Fixture::new("echo").await;
    let m = fx.manager();
    let out = fx.out_file("echo.out");
    let task = m
        .create(fx.opts("echo1", &["echo", "hello"], &out))
        .await
        .expect("create");
    assert!(task.pid() > 0);
    let bundle = task.bundle().path.clone();
    assert!(bundle.join("config.json").is_file());
    assert!(bundle.join("shim-binary-path").is_file());
    assert_eq!(task.state("").await.unwrap().status, Status::Created as i32);
    assert_eq!(m.list(&fx.ns).len(), 1);
    let err = m
        .create(fx.opts("echo1", &["true"], &out))
        .await
        .unwrap_err();
    assert_eq!(Classify::kind(&err), ErrorKind::AlreadyExists);

    // Wait before Start, as ctr does.
    let waiter = {
        let task = task.clone();
        tokio::spawn(async move { task.wait("").await })
    };
    task.start("").await.expect("start");
    let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("wait returns")
        .unwrap()
        .expect("wait");
    assert_eq!(waited.exit_status, 0);
    let exit = fx.next_exit("echo1").await;
    assert_eq!(exit.exit_status, 0);
    assert_eq!(read_eventually(&out, "hello").await.trim(), "hello");
    assert_eq!(task.state("").await.unwrap().status, Status::Stopped as i32);

    let exit = m.delete(&fx.ns, "echo1").await.expect("delete");
    assert_eq!(exit.status, 0);
    assert!(!bundle.exists(), "bundle removed");
    assert!(m.list(&fx.ns).is_empty());
    assert!(m.get(&fx.ns, "echo1").is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_and_exec_on_a_sleeping_task() {
    if !prerequisites() {
        return;
    }
    let mut fx = Fixture::new("kill").await;
    let m = fx.manager();
    let out = fx.out_file("sleep.out");
    let task = m
        .create(fx.opts("sleep1", &["sleep", "100"], &out))
        .await
        .expect("create");
    task.start("").await.expect("start");
    assert_eq!(task.state("").await.unwrap().status, Status::Running as i32);

    let exec_out = fx.out_file("exec.out");
    let process = serde_json::json!({
        "args": ["echo", "from-exec"],
        "cwd": "/",
        "env": ["PATH=/bin"],
        "user": {"uid": 0, "gid": 0},
        "terminal": false,
    });
    let uri = format!("file://{}", exec_out.display());
    task.exec(
        "e1",
        TaskIo {
            stdout: uri.clone(),
            stderr: uri,
            ..Default::default()
        },
        Some(prost_types::Any {
            type_url: PROCESS_TYPE.into(),
            value: serde_json::to_vec(&process).unwrap(),
        }),
    )
    .await
    .expect("exec");
    task.start("e1").await.expect("start exec");
    let waited = tokio::time::timeout(Duration::from_secs(10), task.wait("e1"))
        .await
        .expect("exec wait returns")
        .expect("exec wait");
    assert_eq!(waited.exit_status, 0);
    assert_eq!(
        read_eventually(&exec_out, "from-exec").await.trim(),
        "from-exec"
    );
    task.delete_process("e1").await.expect("delete exec");
    assert!(!task.pids().await.expect("pids").is_empty());

    task.kill("", 9, false).await.expect("kill");
    let waited = tokio::time::timeout(Duration::from_secs(10), task.wait(""))
        .await
        .expect("wait returns")
        .expect("wait");
    assert_eq!(waited.exit_status, 137);
    assert_eq!(fx.next_exit("sleep1").await.exit_status, 137);
    let exit = m.delete(&fx.ns, "sleep1").await.expect("delete");
    assert_eq!(exit.status, 137);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_manager_reconnects_to_a_running_task() {
    if !prerequisites() {
        return;
    }
    let fx = Fixture::new("load").await;
    let out = fx.out_file("sleep.out");
    let (pid, bundle) = {
        let m = fx.manager();
        let task = m
            .create(fx.opts("survivor", &["sleep", "100"], &out))
            .await
            .expect("create");
        task.start("").await.expect("start");
        (task.pid(), task.bundle().path.clone())
        // The manager and its client drop here, as in a daemon restart.
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(bundle.is_dir(), "the bundle outlives the manager");

    let m = fx.manager();
    m.load().await.expect("load");
    let task = m.get(&fx.ns, "survivor").expect("task reloaded");
    assert_eq!(task.pid(), pid);
    assert_eq!(task.state("").await.unwrap().status, Status::Running as i32);
    task.kill("", 9, false).await.expect("kill");
    let waited = tokio::time::timeout(Duration::from_secs(10), task.wait(""))
        .await
        .expect("wait returns")
        .expect("wait");
    assert_eq!(waited.exit_status, 137);
    let exit = m.delete(&fx.ns, "survivor").await.expect("delete");
    assert_eq!(exit.status, 137);
    assert!(!bundle.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_shim_is_cleaned_up_with_exit_and_delete_events() {
    if !prerequisites() {
        return;
    }
    let fx = Fixture::new("dead").await;
    let published = Arc::new(Published::default());
    let m = fx.manager_with(published.clone());
    let out = fx.out_file("sleep.out");
    let task = m
        .create(fx.opts("doomed", &["sleep", "100"], &out))
        .await
        .expect("create");
    task.start("").await.expect("start");
    let bundle = task.bundle().path.clone();
    let shim_pid = task.connect(None).await.expect("connect").shim_pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(shim_pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    while m.get(&fx.ns, "doomed").is_ok() || bundle.exists() {
        assert!(Instant::now() < deadline, "dead shim not cleaned up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = published.0.lock().unwrap().clone();
    let topics: Vec<&str> = events.iter().map(|(_, t, _)| t.as_str()).collect();
    assert_eq!(topics, ["/tasks/exit", "/tasks/delete"]);
    assert!(events.iter().all(|(ns, _, _)| *ns == fx.ns));
    let exit = TaskExit::decode(events[0].2.value.as_slice()).unwrap();
    assert_eq!(exit.container_id, "doomed");
    assert_eq!(exit.exit_status, 137, "the delete action's forced kill");
}
