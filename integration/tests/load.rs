//! Load: a real `berthd` (real runc, both shims) running 100 container lifecycles at once, in
//! waves, while image imports and deletes run beside them and several clients watch the event
//! stream; all over the daemon's unix socket, nothing leaves the machine.
//!
//! Each lifecycle is what `ctr run --rm` does, over gRPC: a lease, a snapshot prepared on the
//! busybox image, a container, a task created and started (`sh -c 'exit N'`, so every task has
//! its own exit status) and waited for, then task, container, snapshot and lease deleted. Half
//! the lifecycles run on Berth's shim, half on containerd's runc shim.
//!
//! What must hold:
//! - no call fails, every wait and every task delete reports the task's own exit status;
//! - every subscriber receives each task's `/tasks/exit` exactly once, with its pid and status
//!   (subscribers are filtered and unfiltered, so the unfiltered ones see everything else too);
//! - berthd does not grow: between a sample after the first (warm-up) wave and one at the end,
//!   both taken once the daemon has been idle for [`SETTLE`], open fds grow by at most
//!   [`FD_GROWTH`], threads by at most [`THREAD_GROWTH`] and resident memory by at most
//!   [`RSS_GROWTH_KIB`];
//! - at the end no shim process, container, lease, active snapshot, runc state or mount is left.
//!
//! Cost: about 2 minutes on 2 cores (a wave of 100 takes 5 to 10 s; the waves after the warm-up
//! take [`DEFAULT_SECS`] seconds, the two idle periods 22 s). For a longer run set
//! `BERTH_LOAD_SECS` (seconds of waves after the warm-up) and `BERTH_LOAD_LIFECYCLES`
//! (lifecycles per wave). A long run fails the memory bound on the current main: sled 0.34,
//! the metadata and snapshot store, keeps about 6 KiB of every transaction for good (reproduced
//! outside Berth; plain inserts and removes do not grow), which is most of the ~20 KiB a
//! lifecycle costs; `BERTH_LOAD_SECS=300` (4,900 lifecycles) ended 35 MiB above the warm-up.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::image::build_busybox_image;
use berth_integration::layers::{build_image_of_layers, digest_of, RawEntry};
use berth_integration::procs::shim_processes;
use berth_integration::{
    berthd_bin, channel, ctr, namespaced, require_binary, require_root, CmdOutput, Daemon, CTR_BIN,
};
use berth_proto::containerd::events::TaskExit;
use berth_proto::containerd::services::containers::v1::container::Runtime;
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_proto::containerd::services::containers::v1::{
    Container, CreateContainerRequest, DeleteContainerRequest, ListContainersRequest,
};
use berth_proto::containerd::services::events::v1::events_client::EventsClient;
use berth_proto::containerd::services::events::v1::{PublishRequest, SubscribeRequest};
use berth_proto::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_proto::containerd::services::leases::v1::{
    CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest,
    ListRequest as ListLeasesRequest,
};
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::services::snapshots::v1::{
    Kind as SnapshotKind, ListSnapshotsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use berth_proto::containerd::services::tasks::v1::tasks_client::TasksClient;
use berth_proto::containerd::services::tasks::v1::{
    CreateTaskRequest, DeleteTaskRequest, StartRequest, WaitRequest,
};
use prost::Message;
use tonic::transport::Channel;
use tonic::Request;

/// Lifecycles started at once in each wave, unless `BERTH_LOAD_LIFECYCLES` says otherwise.
const DEFAULT_LIFECYCLES: usize = 100;

/// Seconds of waves after the warm-up wave, unless `BERTH_LOAD_SECS` says otherwise. Waves
/// start while this budget lasts; at least one follows the warm-up.
const DEFAULT_SECS: u64 = 75;

/// Event subscribers: the even ones filter on this namespace's `/tasks/exit`, the odd ones take
/// every event.
const SUBSCRIBERS: usize = 4;

/// Concurrent import-then-delete loops beside the lifecycles.
const IMPORT_LANES: usize = 2;

/// gRPC connections the lifecycles share (each one carries many concurrent calls).
const CONNECTIONS: usize = 8;

/// How long berthd is left idle before a sample: tokio ends an idle blocking-pool thread after
/// 10 s, so by then only threads that something keeps are left.
const SETTLE: Duration = Duration::from_secs(11);

/// Largest growth of berthd's open file descriptors from the warm-up sample to the last one.
/// Every client connection and subscription is open at both; a leak of one fd per lifecycle
/// would show as hundreds.
const FD_GROWTH: i64 = 16;

/// Largest growth of berthd's thread count from the warm-up sample to the last one.
const THREAD_GROWTH: i64 = 8;

/// Largest growth of berthd's resident memory (KiB) from the warm-up sample to the last one:
/// 32 MiB. The default run (600 to 1,000 lifecycles after the warm-up) grows 12 to 20 MiB on
/// the current main, nearly all of it sled's (see the module comment); a leak of 40 KiB per
/// lifecycle more would cross it.
const RSS_GROWTH_KIB: i64 = 32 * 1024;

/// How long one lifecycle may take, start to end, on a loaded machine.
const LIFECYCLE_TIMEOUT: Duration = Duration::from_secs(180);

/// How long subscribers get to receive the last exit events after the last wave.
const EVENT_WAIT: Duration = Duration::from_secs(30);

/// The busybox image every lifecycle runs.
const IMAGE: &str = "docker.io/library/load-busybox:latest";

/// The snapshotter of every lifecycle (berthd's default).
const SNAPSHOTTER: &str = "overlayfs";

/// The gRPC metadata key naming the lease of a call (containerd `leases/grpc.go`).
const LEASE_HEADER: &str = "containerd-lease";

/// The type URL containerd stores OCI runtime specs under.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// The type URL of a `/tasks/exit` event.
const TASK_EXIT_TYPE_URL: &str = "containerd.events.TaskExit";

/// The exit topic.
const EXIT_TOPIC: &str = "/tasks/exit";

/// Berth's shim and containerd's, with the runtime names that select them.
const RUNTIMES: [(&str, &str); 2] = [
    ("io.containerd.berth.v2", "containerd-shim-berth-v2"),
    ("io.containerd.runc.v2", "containerd-shim-runc-v2"),
];

/// Prefix of the container ids of the subscription probes (not lifecycles).
const PROBE_PREFIX: &str = "probe-";

/// A number read from the environment, or `default`.
fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// berthd's open fds, threads and resident memory at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    fds: i64,
    threads: i64,
    rss_kib: i64,
}

impl Sample {
    /// Reads `/proc/<pid>`.
    fn of(pid: u32) -> Self {
        let fds = fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap_or_else(|e| panic!("list /proc/{pid}/fd: {e}"))
            .count();
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
        let field = |key: &str| -> i64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        };
        Self {
            fds: i64::try_from(fds).expect("fd count fits i64"),
            threads: field("Threads:"),
            rss_kib: field("VmRSS:"),
        }
    }
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} fds, {} threads, {} KiB resident",
            self.fds, self.threads, self.rss_kib
        )
    }
}

/// What one subscriber received.
#[derive(Debug, Default)]
struct Seen {
    /// `/tasks/exit` of this namespace: (container id, pid) → exit statuses, one per delivery.
    exits: HashMap<(String, u32), Vec<u32>>,
    /// Every envelope received.
    total: u64,
    /// Why the stream ended, if it did.
    ended: Option<String>,
}

/// One lifecycle's identity and what it must report.
#[derive(Debug, Clone)]
struct Plan {
    id: String,
    runtime: &'static str,
    exit_status: u32,
}

/// What a finished lifecycle saw.
#[derive(Debug)]
struct Done {
    plan: Plan,
    pid: u32,
}

/// The shared clients of the lifecycles: one set per connection.
#[derive(Clone)]
struct Clients {
    leases: LeasesClient<Channel>,
    snapshots: SnapshotsClient<Channel>,
    containers: ContainersClient<Channel>,
    tasks: TasksClient<Channel>,
}

impl Clients {
    fn new(channel: Channel) -> Self {
        Self {
            leases: LeasesClient::new(channel.clone()),
            snapshots: SnapshotsClient::new(channel.clone()),
            containers: ContainersClient::new(channel.clone()),
            tasks: TasksClient::new(channel),
        }
    }
}

/// Everything a wave needs.
struct Load {
    ns: String,
    parent: String,
    clients: Vec<Clients>,
}

/// `message` in namespace `ns` under lease `lease`.
fn leased<T>(ns: &str, lease: &str, message: T) -> Request<T> {
    let mut request = namespaced(ns, message);
    request.metadata_mut().insert(
        LEASE_HEADER,
        lease.parse().expect("a lease id is a header value"),
    );
    request
}

/// An OCI runtime spec running `sh -c 'exit <status>'` in new pid, ipc, uts and mount
/// namespaces (no network namespace: the host's network stays out of a test of the daemon),
/// in the cgroup `/<ns>/<id>` as ctr places containers.
fn spec(ns: &str, id: &str, exit_status: u32) -> Vec<u8> {
    let spec = serde_json::json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh", "-c", format!("exit {exit_status}")],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs"},
        "hostname": "load",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
        ],
        "linux": {
            "cgroupsPath": format!("/{ns}/{id}"),
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
        }
    });
    serde_json::to_vec(&spec).expect("a spec serializes")
}

/// Runs one lifecycle; the error names the step and the status.
async fn lifecycle(load: &Load, clients: &mut Clients, plan: &Plan) -> Result<Done, String> {
    let ns = load.ns.as_str();
    let id = plan.id.as_str();
    let step = |what: &'static str| move |s: tonic::Status| format!("{id}: {what}: {s}");
    let lease = clients
        .leases
        .create(namespaced(
            ns,
            CreateLeaseRequest {
                id: format!("lease-{id}"),
                labels: HashMap::new(),
            },
        ))
        .await
        .map_err(step("Leases.Create"))?
        .into_inner()
        .lease
        .ok_or_else(|| format!("{id}: Leases.Create returned no lease"))?
        .id;
    let mounts = clients
        .snapshots
        .prepare(leased(
            ns,
            &lease,
            PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.into(),
                parent: load.parent.clone(),
                labels: HashMap::new(),
            },
        ))
        .await
        .map_err(step("Snapshots.Prepare"))?
        .into_inner()
        .mounts;
    let container = Container {
        id: id.into(),
        image: IMAGE.into(),
        runtime: Some(Runtime {
            name: plan.runtime.into(),
            options: None,
        }),
        spec: Some(prost_types::Any {
            type_url: SPEC_TYPE_URL.into(),
            value: spec(ns, id, plan.exit_status),
        }),
        snapshotter: SNAPSHOTTER.into(),
        snapshot_key: id.into(),
        ..Container::default()
    };
    clients
        .containers
        .create(leased(
            ns,
            &lease,
            CreateContainerRequest {
                container: Some(container),
            },
        ))
        .await
        .map_err(step("Containers.Create"))?;
    let created = clients
        .tasks
        .create(namespaced(
            ns,
            CreateTaskRequest {
                container_id: id.into(),
                rootfs: mounts,
                ..CreateTaskRequest::default()
            },
        ))
        .await
        .map_err(step("Tasks.Create"))?
        .into_inner();
    // Wait before start, as ctr does, so the exit cannot be missed.
    let wait = {
        let mut tasks = clients.tasks.clone();
        let request = namespaced(
            ns,
            WaitRequest {
                container_id: id.into(),
                exec_id: String::new(),
            },
        );
        tokio::spawn(async move { tasks.wait(request).await })
    };
    let started = clients
        .tasks
        .start(namespaced(
            ns,
            StartRequest {
                container_id: id.into(),
                exec_id: String::new(),
            },
        ))
        .await
        .map_err(step("Tasks.Start"))?
        .into_inner();
    if started.pid != created.pid || started.pid == 0 {
        return Err(format!(
            "{id}: Tasks.Start said pid {} where Tasks.Create said {}",
            started.pid, created.pid
        ));
    }
    let waited = wait
        .await
        .map_err(|e| format!("{id}: wait task: {e}"))?
        .map_err(step("Tasks.Wait"))?
        .into_inner();
    if waited.exit_status != plan.exit_status {
        return Err(format!(
            "{id}: Tasks.Wait said exit status {}, the task exits {}",
            waited.exit_status, plan.exit_status
        ));
    }
    let deleted = clients
        .tasks
        .delete(namespaced(
            ns,
            DeleteTaskRequest {
                container_id: id.into(),
            },
        ))
        .await
        .map_err(step("Tasks.Delete"))?
        .into_inner();
    if deleted.exit_status != plan.exit_status || deleted.pid != started.pid {
        return Err(format!(
            "{id}: Tasks.Delete said pid {} status {}, expected pid {} status {}",
            deleted.pid, deleted.exit_status, started.pid, plan.exit_status
        ));
    }
    clients
        .containers
        .delete(namespaced(ns, DeleteContainerRequest { id: id.into() }))
        .await
        .map_err(step("Containers.Delete"))?;
    clients
        .snapshots
        .remove(namespaced(
            ns,
            RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.into(),
            },
        ))
        .await
        .map_err(step("Snapshots.Remove"))?;
    clients
        .leases
        .delete(namespaced(
            ns,
            DeleteLeaseRequest {
                id: lease,
                sync: false,
            },
        ))
        .await
        .map_err(step("Leases.Delete"))?;
    Ok(Done {
        plan: plan.clone(),
        pid: started.pid,
    })
}

/// Runs `plans` all at once; returns the finished ones and the errors.
async fn wave(load: &Arc<Load>, plans: Vec<Plan>) -> (Vec<Done>, Vec<String>) {
    let mut handles = Vec::new();
    for (i, plan) in plans.into_iter().enumerate() {
        let load = load.clone();
        let mut clients = load.clients[i % load.clients.len()].clone();
        handles.push(tokio::spawn(async move {
            match tokio::time::timeout(LIFECYCLE_TIMEOUT, lifecycle(&load, &mut clients, &plan))
                .await
            {
                Ok(result) => result,
                Err(_) => Err(format!("{}: not done after {LIFECYCLE_TIMEOUT:?}", plan.id)),
            }
        }));
    }
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for handle in handles {
        match handle.await {
            Ok(Ok(d)) => done.push(d),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("lifecycle task: {e}")),
        }
    }
    (done, errors)
}

/// Subscribes with `filters` and records what arrives into `seen` until the stream ends.
async fn subscribe(
    channel: Channel,
    ns: String,
    filters: Vec<String>,
    seen: Arc<Mutex<Seen>>,
) -> Result<(), String> {
    let mut client = EventsClient::new(channel);
    let mut stream = client
        .subscribe(SubscribeRequest { filters })
        .await
        .map_err(|s| format!("Events.Subscribe: {s}"))?
        .into_inner();
    tokio::spawn(async move {
        let ended = loop {
            match stream.message().await {
                Ok(Some(envelope)) => {
                    let mut seen = seen.lock().expect("seen lock");
                    seen.total += 1;
                    if envelope.topic != EXIT_TOPIC || envelope.namespace != ns {
                        continue;
                    }
                    let Some(any) = envelope.event else {
                        seen.ended = Some("an exit envelope without an event".into());
                        break None;
                    };
                    match TaskExit::decode(&any.value[..]) {
                        Ok(exit) => seen
                            .exits
                            .entry((exit.container_id, exit.pid))
                            .or_default()
                            .push(exit.exit_status),
                        Err(e) => {
                            break Some(format!("undecodable TaskExit: {e}"));
                        }
                    }
                }
                Ok(None) => break Some("the stream ended".to_owned()),
                Err(s) => break Some(format!("the stream failed: {s}")),
            }
        };
        if let Some(why) = ended {
            seen.lock().expect("seen lock").ended = Some(why);
        }
    });
    Ok(())
}

/// Publishes probe exits until every subscriber has received one: then all are live.
async fn wait_subscribed(channel: Channel, ns: &str, subscribers: &[Arc<Mutex<Seen>>]) {
    let mut events = EventsClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in 0u32.. {
        let exit = TaskExit {
            container_id: format!("{PROBE_PREFIX}{n}"),
            id: format!("{PROBE_PREFIX}{n}"),
            pid: n,
            ..TaskExit::default()
        };
        events
            .publish(namespaced(
                ns,
                PublishRequest {
                    topic: EXIT_TOPIC.into(),
                    event: Some(prost_types::Any {
                        type_url: TASK_EXIT_TYPE_URL.into(),
                        value: exit.encode_to_vec(),
                    }),
                },
            ))
            .await
            .unwrap_or_else(|s| panic!("Events.Publish of a probe: {s}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let live = subscribers.iter().all(|s| {
            s.lock()
                .expect("seen lock")
                .exits
                .keys()
                .any(|(id, _)| id.starts_with(PROBE_PREFIX))
        });
        if live {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "subscribers got no probe event in 20 s"
        );
    }
}

/// Imports a fresh image (busybox plus a layer of its own), then deletes it, until `stop`;
/// returns how many rounds ran and the failures.
fn import_loop(
    address: PathBuf,
    dir: PathBuf,
    ns: String,
    lane: usize,
    stop: Arc<AtomicBool>,
    start_round: usize,
) -> (usize, Vec<String>) {
    let mut rounds = 0;
    let mut errors = Vec::new();
    let run = |args: &[&str]| -> CmdOutput {
        berth_integration::ctr_at(&address, &[&["-n", ns.as_str()][..], args].concat())
    };
    while !stop.load(Ordering::Relaxed) {
        let k = start_round + rounds;
        let name = format!("docker.io/library/load-import-{lane}:{k}");
        // Content that no other round has: new blobs, a new unpack, then a GC that frees them.
        let unique = format!("lane {lane} round {k} pid {}\n", std::process::id());
        let filler = digest_of(unique.as_bytes()).repeat(512);
        let layers = [
            vec![
                RawEntry::dir("data"),
                RawEntry::file("data/unique", unique.as_bytes(), 0o644),
            ],
            vec![RawEntry::file("data/filler", filler.as_bytes(), 0o644)],
        ];
        let image = build_image_of_layers(&dir, &name, &layers);
        let archive = image.archive.to_str().expect("utf-8 archive path");
        let out = run(&["images", "import", archive]);
        if !out.success() {
            errors.push(format!("import {name}: {out}"));
        }
        let out = run(&["images", "rm", "--sync", &name]);
        if !out.success() {
            errors.push(format!("delete {name}: {out}"));
        }
        let _ = fs::remove_file(&image.archive);
        rounds += 1;
    }
    (rounds, errors)
}

/// An import loop's thread: it returns its rounds and failures.
type ImportLane = thread::JoinHandle<(usize, Vec<String>)>;

/// Starts [`IMPORT_LANES`] import loops on threads; the returned flag stops them.
fn start_imports(
    daemon: &Daemon,
    ns: &str,
    round_base: usize,
) -> (Arc<AtomicBool>, Vec<ImportLane>) {
    let stop = Arc::new(AtomicBool::new(false));
    let lanes = (0..IMPORT_LANES)
        .map(|lane| {
            let (address, dir) = (daemon.address().to_owned(), daemon.dir().to_owned());
            let (ns, stop) = (ns.to_owned(), stop.clone());
            thread::spawn(move || import_loop(address, dir, ns, lane, stop, round_base))
        })
        .collect();
    (stop, lanes)
}

/// Stops the import loops and returns their rounds and failures.
fn stop_imports(stop: &AtomicBool, lanes: Vec<ImportLane>) -> (usize, Vec<String>) {
    stop.store(true, Ordering::Relaxed);
    let mut rounds = 0;
    let mut errors = Vec::new();
    for lane in lanes {
        let (r, e) = lane.join().expect("import lane panicked");
        rounds += r;
        errors.extend(e);
    }
    (rounds, errors)
}

/// Pids and command lines of the shim processes whose command line names `address`.
fn shims_of(address: &Path) -> Vec<(u32, String)> {
    shim_processes(address)
        .into_iter()
        .map(|(pid, argv)| (pid, argv.join(" ")))
        .collect()
}

/// Removes what the runtime leaves per namespace on the host: runc's state directory and the
/// (empty) namespace cgroups.
fn remove_namespace_leftovers(ns: &str) {
    let _ = fs::remove_dir(Path::new("/run/containerd/runc").join(ns));
    if let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") {
        for c in controllers.filter_map(Result::ok) {
            let _ = fs::remove_dir(c.path().join(ns));
        }
    }
    let _ = fs::remove_dir(Path::new("/sys/fs/cgroup").join(ns));
}

/// Kills and removes whatever a failed run left: shims of this daemon, then runc state and
/// cgroups. Runs on drop so that a failing test does not leave 100 shims behind.
struct Cleanup {
    address: PathBuf,
    ns: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (pid, _) in shims_of(&self.address) {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        remove_namespace_leftovers(&self.ns);
    }
}

/// The mount points under `dir` (bundle rootfs mounts left behind).
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&dir))
        .map(str::to_owned)
        .collect()
}

/// Leases, containers and active snapshots left in `ns`.
async fn leftovers(channel: Channel, ns: &str) -> Vec<String> {
    let mut left = Vec::new();
    let leases = LeasesClient::new(channel.clone())
        .list(namespaced(ns, ListLeasesRequest { filters: vec![] }))
        .await
        .unwrap_or_else(|s| panic!("Leases.List: {s}"))
        .into_inner()
        .leases;
    left.extend(leases.into_iter().map(|l| format!("lease {}", l.id)));
    let containers = ContainersClient::new(channel.clone())
        .list(namespaced(ns, ListContainersRequest { filters: vec![] }))
        .await
        .unwrap_or_else(|s| panic!("Containers.List: {s}"))
        .into_inner()
        .containers;
    left.extend(
        containers
            .into_iter()
            .map(|c| format!("container {}", c.id)),
    );
    let mut stream = SnapshotsClient::new(channel)
        .list(namespaced(
            ns,
            ListSnapshotsRequest {
                snapshotter: SNAPSHOTTER.into(),
                filters: vec![],
            },
        ))
        .await
        .unwrap_or_else(|s| panic!("Snapshots.List: {s}"))
        .into_inner();
    while let Some(page) = stream
        .message()
        .await
        .unwrap_or_else(|s| panic!("Snapshots.List stream: {s}"))
    {
        left.extend(
            page.info
                .into_iter()
                .filter(|i| i.kind != SnapshotKind::Committed as i32)
                .map(|i| format!("active snapshot {}", i.name)),
        );
    }
    left
}

/// The chain id of the top layer of `diff_ids` (bottom first): the committed snapshot a
/// container of the image starts from.
fn chain_id(diff_ids: &[String]) -> String {
    let mut chain = diff_ids.first().expect("an image has layers").clone();
    for diff_id in &diff_ids[1..] {
        chain = digest_of(format!("{chain} {diff_id}").as_bytes());
    }
    chain
}

/// Lifecycle plans of wave `w`: ids unique to this process, runtimes alternating, exit
/// statuses 0 to 6.
fn plans(w: usize, count: usize) -> Vec<Plan> {
    (0..count)
        .map(|i| Plan {
            id: format!("load-{}-w{w}-{i}", std::process::id()),
            runtime: RUNTIMES[i % RUNTIMES.len()].0,
            exit_status: u32::try_from(i % 7).expect("small"),
        })
        .collect()
}

#[test]
fn hundred_concurrent_lifecycles_with_imports_and_subscribers_do_not_leak() {
    let shims_built = RUNTIMES.iter().all(|(_, shim)| {
        let built = berthd_bin().with_file_name(shim);
        match built.to_str() {
            Some(path) if built.is_file() => require_binary(path),
            _ => require_binary(shim),
        }
    });
    if !(require_root() && require_binary("runc") && require_binary(CTR_BIN) && shims_built) {
        return;
    }
    let count: usize = env_number("BERTH_LOAD_LIFECYCLES", DEFAULT_LIFECYCLES);
    let budget = Duration::from_secs(env_number("BERTH_LOAD_SECS", DEFAULT_SECS));
    let started = Instant::now();
    let ns = format!("load-{}", std::process::id());

    let daemon = Daemon::start();
    let _cleanup = Cleanup {
        address: daemon.address().to_owned(),
        ns: ns.clone(),
    };
    let image = build_busybox_image(daemon.dir(), IMAGE);
    let archive = image.archive.to_str().expect("utf-8 archive path");
    ctr(&daemon, &["-n", &ns, "images", "import", archive]).ok();
    let diff_ids: Vec<String> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
    let pid = daemon.pid();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            clients.push(Clients::new(channel(&daemon).await));
        }
        let load = Arc::new(Load {
            ns: ns.clone(),
            parent: chain_id(&diff_ids),
            clients,
        });
        let subscribers: Vec<Arc<Mutex<Seen>>> = (0..SUBSCRIBERS)
            .map(|_| Arc::new(Mutex::new(Seen::default())))
            .collect();
        for (i, seen) in subscribers.iter().enumerate() {
            let filters = if i % 2 == 0 {
                vec![format!("namespace=={ns},topic==\"{EXIT_TOPIC}\"")]
            } else {
                Vec::new()
            };
            subscribe(channel(&daemon).await, ns.clone(), filters, seen.clone())
                .await
                .unwrap_or_else(|e| panic!("subscriber {i}: {e}"));
        }
        wait_subscribed(channel(&daemon).await, &ns, &subscribers).await;

        let mut finished: Vec<Done> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        let mut import_rounds = 0;
        let mut report = Vec::new();
        let mut baseline = None;
        let mut waves_started = None;
        for w in 0.. {
            if let Some(t) = waves_started {
                let t: Instant = t;
                if w > 1 && t.elapsed() >= budget {
                    break;
                }
            }
            let wave_start = Instant::now();
            let (stop, lanes) = start_imports(&daemon, &ns, w * 1000);
            let (done, errs) = wave(&load, plans(w, count)).await;
            let (rounds, import_errors) = stop_imports(&stop, lanes);
            let wall = wave_start.elapsed();
            let sample = Sample::of(pid);
            report.push(format!(
                "wave {w}: {} lifecycles in {:.1} s, {rounds} imports, then {sample}",
                done.len(),
                wall.as_secs_f64()
            ));
            import_rounds += rounds;
            errors.extend(errs);
            errors.extend(import_errors);
            finished.extend(done);
            assert!(
                errors.is_empty(),
                "wave {w} failed ({} errors):\n{}",
                errors.len(),
                errors.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
            );
            if w == 0 {
                // Warm-up done: everything the daemon allocates once is allocated.
                tokio::time::sleep(SETTLE).await;
                let sample = Sample::of(pid);
                report.push(format!("after warm-up, idle {SETTLE:?}: {sample}"));
                baseline = Some(sample);
                waves_started = Some(Instant::now());
            }
        }
        tokio::time::sleep(SETTLE).await;
        let end = Sample::of(pid);
        let baseline = baseline.expect("the warm-up wave ran");
        report.push(format!("at the end, idle {SETTLE:?}: {end}"));
        report.push(format!(
            "{} lifecycles, {import_rounds} image imports and deletes, {:.0} s in all",
            finished.len(),
            started.elapsed().as_secs_f64()
        ));

        // Every subscriber gets every exit once.
        let deadline = Instant::now() + EVENT_WAIT;
        let complete = |seen: &Seen| {
            finished
                .iter()
                .all(|d| seen.exits.contains_key(&(d.plan.id.clone(), d.pid)))
        };
        while !subscribers
            .iter()
            .all(|s| complete(&s.lock().expect("seen lock")))
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Late duplicates would arrive now.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut event_errors = Vec::new();
        for (i, seen) in subscribers.iter().enumerate() {
            let seen = seen.lock().expect("seen lock");
            report.push(format!("subscriber {i}: {} envelopes", seen.total));
            if let Some(why) = &seen.ended {
                event_errors.push(format!("subscriber {i}: {why}"));
            }
            let mut expected: BTreeMap<(String, u32), u32> = BTreeMap::new();
            for d in &finished {
                expected.insert((d.plan.id.clone(), d.pid), d.plan.exit_status);
            }
            for ((id, pid), status) in &expected {
                match seen.exits.get(&(id.clone(), *pid)) {
                    None => event_errors.push(format!("subscriber {i}: no exit of {id} pid {pid}")),
                    Some(got) if got.as_slice() != [*status] => event_errors.push(format!(
                        "subscriber {i}: exit of {id} pid {pid} delivered as {got:?}, expected [{status}]"
                    )),
                    Some(_) => {}
                }
            }
            for (id, pid) in seen.exits.keys() {
                if !id.starts_with(PROBE_PREFIX) && !expected.contains_key(&(id.clone(), *pid)) {
                    event_errors.push(format!("subscriber {i}: exit of unknown {id} pid {pid}"));
                }
            }
        }
        let left = leftovers(channel(&daemon).await, &ns).await;
        println!("{}", report.join("\n"));
        assert!(
            event_errors.is_empty(),
            "{} exit event errors:\n{}\n{}",
            event_errors.len(),
            event_errors.iter().take(30).cloned().collect::<Vec<_>>().join("\n"),
            report.join("\n")
        );
        assert!(left.is_empty(), "left in namespace {ns}: {left:?}");
        let growth = (
            end.fds - baseline.fds,
            end.threads - baseline.threads,
            end.rss_kib - baseline.rss_kib,
        );
        assert!(
            growth.0 <= FD_GROWTH && growth.1 <= THREAD_GROWTH && growth.2 <= RSS_GROWTH_KIB,
            "berthd grew from {baseline} to {end} (bounds: +{FD_GROWTH} fds, +{THREAD_GROWTH} \
             threads, +{RSS_GROWTH_KIB} KiB)\n{}",
            report.join("\n")
        );
    });

    let shims = shims_of(daemon.address());
    assert!(shims.is_empty(), "shims left running: {shims:?}");
    let mounts = mounts_under(daemon.dir());
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    let runc_state = Path::new("/run/containerd/runc").join(&ns);
    let states: Vec<_> = fs::read_dir(&runc_state)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        states.is_empty(),
        "runc state left in {}: {states:?}",
        runc_state.display()
    );
}
