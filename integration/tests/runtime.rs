//! End-to-end tests for running containers: `ctr run`, the `ctr tasks` commands, the TTY path,
//! OOM and task events, daemon restart with live shims, cross-compatibility of Berth's shim and
//! daemon with containerd's, and the cleanup after rejected or failing runs.
//!
//! Each test starts its own `berthd` (its `PATH` starts with the directory holding
//! `containerd-shim-berth-v2`), imports the busybox test image and removes every container it
//! made through a drop guard, so that no shim outlives the test. runc's state directory
//! (`/run/containerd/runc/<ns>`) is host-global, so container ids carry the test process id and
//! the number of the target (daemon, shim and client) the case runs on.
//! Every case also runs against a real containerd with its runc shim (`reference_containerd_*`,
//! STYLE.md §5): a case failing there is a wrong test. And every case runs with Berth's own CLI,
//! `berth`, as the client too, against berthd (`berth_client_*`) and against containerd
//! (`berth_client_containerd_*`): a ctr user's expectations are the spec of `berth`. Finally
//! every shim case runs with the other shim of each daemon: berthd with containerd's
//! `containerd-shim-runc-v2` (`runc_shim_*`) and containerd with Berth's shim
//! (`containerd_berth_shim_*`), and must give the same results. And the cases run with crun as
//! the OCI runtime binary (`crun_*`, issue 20): berthd with crun as its configured default
//! binary, `berth run --runc-binary crun` against berthd, and containerd with
//! `ctr run --runc-binary crun` as the reference; each checks that the container's state is
//! crun's.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::fs::{self};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::containerd::Containerd;
use berth_integration::image::build_busybox_image;
use berth_integration::procs;
use berth_integration::{
    berthd_bin, client_at, parse_table, require_binary, require_root, run_with_timeout, CmdOutput,
    Daemon, Row, CTR_BIN, CTR_TIMEOUT,
};

/// The namespace ctr uses when none is chosen.
const NS: &str = "default";

/// Name of the test image.
const IMAGE: &str = "docker.io/library/bb:latest";

/// Berth's shim binary.
const BERTH_SHIM: &str = "containerd-shim-berth-v2";

/// containerd's runc shim.
const RUNC_SHIM: &str = "containerd-shim-runc-v2";

/// Runtime name a real containerd maps to [`BERTH_SHIM`].
const BERTH_RUNTIME: &str = "io.containerd.berth.v2";

/// Bundles and work dirs of runtime v2 tasks, under the state and root directories.
const TASK_DIR: &str = "io.containerd.runtime.v2.task";

/// cgroup v1 hierarchies whose `<ns>/<id>` directory a task gets.
const CGROUP_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "freezer"];

/// How long to wait for an asynchronous effect (an event, a status change, a shim exit).
const WAIT: Duration = Duration::from_secs(20);

/// Exit status of a task killed by SIGKILL (128 + 9).
const KILLED: i32 = 137;

/// Memory limit of the OOM test: 8 MiB.
const OOM_LIMIT: &str = "8388608";

/// The OCI runtime binary behind the shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Oci {
    Runc,
    Crun,
}

impl Oci {
    fn binary(self) -> &'static str {
        match self {
            Self::Runc => "runc",
            Self::Crun => "crun",
        }
    }

    /// The file each keeps in its state directory (`<root>/<id>/`).
    fn state_file(self) -> &'static str {
        match self {
            Self::Runc => "state.json",
            Self::Crun => "status",
        }
    }
}

/// Where both runc shims keep the OCI runtime's state, one directory per namespace.
const OCI_STATE_ROOT: &str = "/run/containerd/runc";

/// The client binary a case drives the daemon with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// containerd's `ctr` (the reference client).
    Ctr,
    /// Berth's `berth`, built next to `berthd`.
    Berth,
}

impl Client {
    /// Path of the client's executable.
    fn program(self) -> PathBuf {
        match self {
            Self::Ctr => PathBuf::from(CTR_BIN),
            // `cargo build --workspace` puts both binaries in the same target directory.
            Self::Berth => berthd_bin().with_file_name("berth"),
        }
    }

    /// Runs `<client> --address <address> <args>` (berthd or a real containerd).
    fn run(self, address: &Path, args: &[&str]) -> CmdOutput {
        client_at(&self.program(), address, args)
    }
}

/// Root, the client and `runc`: what every test here needs.
fn prerequisites(client: Client) -> bool {
    let program = client.program();
    require_root()
        && require_binary(program.to_str().expect("utf-8 client path"))
        && require_binary("runc")
}

/// Builds the busybox image in the target's directory and imports (and unpacks) it with the
/// target's client.
#[track_caller]
fn import_image(t: &Target) {
    let img = build_busybox_image(t.dir(), IMAGE);
    let archive = img.archive.to_str().expect("utf-8 archive path");
    t.cli(&["images", "import", archive]).ok();
}

/// True when `shim` is next to `berthd` or on `PATH` (where the daemon looks, see
/// `Daemon`'s `PATH`); otherwise skips (or panics under `CI=true`) naming it.
fn shim_available(shim: &str) -> bool {
    let built = berthd_bin().with_file_name(shim);
    match built.to_str() {
        Some(path) if built.is_file() => require_binary(path),
        _ => require_binary(shim),
    }
}

/// Removes containers on drop, whatever state they are in: `tasks kill -s KILL`, `tasks delete`,
/// `containers rm`, each allowed to fail (the container may never have been created).
struct Containers {
    client: Client,
    address: PathBuf,
    ids: Vec<String>,
}

impl Containers {
    fn new(t: &Target, ids: &[&str]) -> Self {
        Self {
            client: t.client,
            address: t.address().to_owned(),
            ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn cli(&self, args: &[&str]) -> CmdOutput {
        self.client.run(&self.address, args)
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.cli(&["tasks", "kill", "-s", "KILL", id]);
            // Deleting a task that is still being killed fails; retry briefly.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let out = self.cli(&["tasks", "delete", id]);
                let gone = out.stderr.contains("not found") || out.stderr.contains("no running");
                if out.success() || gone || out.status.code().is_some_and(|c| c != 1) {
                    break;
                }
                if Instant::now() >= deadline {
                    break;
                }
                thread::sleep(Duration::from_millis(200));
            }
            let _ = self.cli(&["containers", "rm", id]);
        }
    }
}

/// Argument vectors of the running `shim` processes whose command line names `address` and,
/// when given, `-id <id>`.
fn shim_processes(shim: &str, address: &Path, id: Option<&str>) -> Vec<(u32, Vec<String>)> {
    procs::shim_processes(address)
        .into_iter()
        .filter(|(_, argv)| {
            argv.first()
                .is_some_and(|a0| Path::new(a0).file_name().is_some_and(|n| n == shim))
                && id.is_none_or(|id| procs::arg_after(argv, "-id") == Some(id))
        })
        .collect()
}

/// Waits until no `shim` process names `address` (and `-id <id>` when given).
#[track_caller]
fn assert_no_shim(shim: &str, address: &Path, id: Option<&str>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = shim_processes(shim, address, id);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{shim} processes for {} {id:?} still running after {WAIT:?}: {left:?}",
            address.display()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Mount points under `dir`, from `/proc/self/mountinfo` (field 5).
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .expect("read /proc/self/mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// Checks that nothing of container `id` is left on the host: no shim, no bundle or work dir,
/// no rootfs mount, no cgroup, no OCI runtime state.
#[track_caller]
fn assert_no_leftovers(t: &Target, id: &str) {
    assert_no_shim(t.shim, t.address(), Some(id));
    let state = Path::new(OCI_STATE_ROOT).join(NS).join(id);
    assert!(
        !state.exists(),
        "{} survived the container",
        state.display()
    );
    for dir in [t.state(), t.root()] {
        let path = dir.join(TASK_DIR).join(NS).join(id);
        assert!(!path.exists(), "{} survived the container", path.display());
    }
    let mounts = mounts_under(t.dir());
    assert!(
        !mounts.iter().any(|m| m.contains(id)),
        "mounts of {id} survived: {mounts:?}"
    );
    for controller in CGROUP_CONTROLLERS {
        let path = Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(NS)
            .join(id);
        assert!(!path.exists(), "cgroup {} survived", path.display());
    }
}

/// The rows of `tasks ls` (`TASK PID STATUS`).
#[track_caller]
fn tasks_ls(t: &Target) -> Vec<Row> {
    let out = t.cli(&["tasks", "ls"]);
    let (header, rows) = parse_table(out.ok());
    assert_eq!(header, ["TASK", "PID", "STATUS"], "{out}");
    rows
}

/// The `tasks ls` row of task `id`, if listed.
fn task_row(t: &Target, id: &str) -> Option<Row> {
    tasks_ls(t).into_iter().find(|r| r["TASK"] == id)
}

/// Waits until `tasks ls` shows task `id` with `status`; returns its row.
#[track_caller]
fn wait_status(t: &Target, id: &str, status: &str) -> Row {
    let deadline = Instant::now() + WAIT;
    loop {
        let row = task_row(t, id);
        if let Some(row) = row.as_ref().filter(|r| r["STATUS"] == status) {
            return row.clone();
        }
        assert!(
            Instant::now() < deadline,
            "task {id} not {status} after {WAIT:?}: {row:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// `tasks delete <id>` of a stopped task, checking its exit status: ctr 1.6.20 (and `berth`)
/// exits 0 and warns `task <id> exit with non-zero exit code <n>` on stderr when it is not 0.
#[track_caller]
fn delete_task(t: &Target, id: &str, exit_status: i32) {
    let out = t.cli(&["tasks", "delete", id]);
    out.ok();
    let warning = format!("task {id} exit with non-zero exit code");
    if exit_status == 0 {
        assert!(!out.stderr.contains(&warning), "{out}");
    } else {
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(&warning))
            .unwrap_or_else(|| panic!("no exit status reported: {out}"));
        let code = line[line.find(&warning).expect("found") + warning.len()..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap_or("");
        assert_eq!(code, exit_status.to_string(), "{out}");
    }
    assert!(task_row(t, id).is_none(), "task {id} listed after delete");
}

/// `events` running as a child of the target's client, its lines collected by a reader thread.
struct Events {
    child: Child,
    rx: mpsc::Receiver<String>,
    lines: Vec<String>,
}

impl Events {
    /// Starts `events` against the target and waits until the subscription is live: an image
    /// tag made afterwards is reported (tagging `IMAGE`, which must exist, as `probe:<n>`).
    #[track_caller]
    fn subscribe(t: &Target) -> Self {
        let mut child = Command::new(t.client.program())
            .arg("--address")
            .arg(t.address())
            .arg("events")
            .env_remove("CONTAINERD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?} events: {e}", t.client));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let events = Self {
            child,
            rx,
            lines: Vec::new(),
        };
        let deadline = Instant::now() + WAIT;
        let mut n = 0;
        loop {
            let probe = format!("example.com/probe:{n}");
            n += 1;
            t.cli(&["images", "tag", IMAGE, &probe]).ok();
            if events.rx.recv_timeout(Duration::from_millis(500)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "events reported nothing");
        }
        while events.rx.recv_timeout(Duration::from_millis(200)).is_ok() {}
        events
    }

    /// Waits until a line (received now or earlier) carries `topic` and contains `needle`;
    /// returns it.
    #[track_caller]
    fn wait_for(&mut self, topic: &str, needle: &str) -> String {
        let topic = format!(" {NS} {topic} ");
        let matches = |l: &str| l.contains(&topic) && l.contains(needle);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.lines.iter().find(|l| matches(l)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => self.lines.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(e) => panic!(
                    "no event{topic}with {needle} ({e:?}); got:\n{}",
                    self.lines.join("\n")
                ),
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `"container_id":"<id>"`, as task events print it.
fn container_field(id: &str) -> String {
    format!("\"container_id\":\"{id}\"")
}

/// The daemon a case runs against.
enum Server {
    Berthd(Daemon),
    /// The reference: the cases must hold on containerd too (STYLE.md §5).
    Containerd(Containerd),
}

/// A daemon with the busybox image imported, the shim its default runtime starts and the client
/// the case drives it with.
struct Target {
    server: Server,
    shim: &'static str,
    client: Client,
    /// The `--runtime` every `run` and `containers create` of the case passes; `None` for the
    /// client's default (`io.containerd.runc.v2`).
    runtime: Option<&'static str>,
    /// This target's number within the test process, part of every container id it makes.
    seq: u32,
    /// The OCI runtime binary its containers run with.
    oci: Oci,
    /// Whether `run` and `containers create` pass `--runc-binary <oci>` (else the daemon's
    /// default binary is `oci`).
    oci_flag: bool,
}

/// Numbers the targets of this test process.
static NEXT_TARGET: AtomicU32 = AtomicU32::new(0);

impl Target {
    /// `berthd` with the default config (`io.containerd.runc.v2` → Berth's shim); `None` when a
    /// prerequisite is missing.
    fn berthd(client: Client) -> Option<Self> {
        Self::berthd_with(None, BERTH_SHIM, client)
    }

    /// `berthd` with `config` whose default runtime starts `shim`.
    fn berthd_with(config: Option<&str>, shim: &'static str, client: Client) -> Option<Self> {
        if !prerequisites(client) || !shim_available(shim) {
            return None;
        }
        Some(Self::ready(
            Server::Berthd(Daemon::start_with(config, &[])),
            shim,
            client,
        ))
    }

    /// `berthd` whose default runtime (`io.containerd.runc.v2`) starts containerd's own
    /// `containerd-shim-runc-v2`.
    fn berthd_runc_shim(client: Client) -> Option<Self> {
        let config = format!(
            "[plugins.\"io.containerd.runtime.v2.task\"]\n  \
             runtimes = {{ \"io.containerd.runc.v2\" = \"{RUNC_SHIM}\" }}\n"
        );
        Self::berthd_with(Some(&config), RUNC_SHIM, client)
    }

    /// A real containerd running every container of the case on Berth's shim
    /// (`--runtime io.containerd.berth.v2`).
    fn containerd_berth_shim(client: Client) -> Option<Self> {
        if !prerequisites(client) || !shim_available(BERTH_SHIM) {
            return None;
        }
        let mut target = Self::containerd(client)?;
        target.shim = BERTH_SHIM;
        target.runtime = Some(BERTH_RUNTIME);
        Some(target)
    }

    /// `berthd` whose default runtime runs crun: `BinaryName` in the runtime's default options.
    fn berthd_crun(client: Client) -> Option<Self> {
        if !require_binary(Oci::Crun.binary()) {
            return None;
        }
        let config = "[plugins.\"io.containerd.runtime.v2.task\".runtimes.\"io.containerd.runc.v2\".options]\n  \
             BinaryName = \"crun\"\n";
        let mut target = Self::berthd_with(Some(config), BERTH_SHIM, client)?;
        target.oci = Oci::Crun;
        Some(target)
    }

    /// `berthd` with the default config, every container run with `--runc-binary crun`.
    fn berthd_crun_flag(client: Client) -> Option<Self> {
        if !require_binary(Oci::Crun.binary()) {
            return None;
        }
        let mut target = Self::berthd(client)?;
        target.oci = Oci::Crun;
        target.oci_flag = true;
        Some(target)
    }

    /// A real containerd with its runc shim, every container run with `--runc-binary crun`.
    fn containerd_crun(client: Client) -> Option<Self> {
        if !require_binary(Oci::Crun.binary()) {
            return None;
        }
        let mut target = Self::containerd(client)?;
        target.oci = Oci::Crun;
        target.oci_flag = true;
        Some(target)
    }

    /// A real containerd with its own runc shim; `None` when a prerequisite is missing.
    fn containerd(client: Client) -> Option<Self> {
        if !prerequisites(client) || !require_binary("containerd") || !require_binary(RUNC_SHIM) {
            return None;
        }
        Some(Self::ready(
            Server::Containerd(Containerd::start()),
            RUNC_SHIM,
            client,
        ))
    }

    fn ready(server: Server, shim: &'static str, client: Client) -> Self {
        let target = Self {
            server,
            shim,
            client,
            runtime: None,
            seq: NEXT_TARGET.fetch_add(1, Ordering::Relaxed),
            oci: Oci::Runc,
            oci_flag: false,
        };
        import_image(&target);
        target
    }

    fn address(&self) -> &Path {
        match &self.server {
            Server::Berthd(d) => d.address(),
            Server::Containerd(c) => c.address(),
        }
    }

    /// The private directory holding everything of the daemon.
    fn dir(&self) -> &Path {
        match &self.server {
            Server::Berthd(d) => d.dir(),
            Server::Containerd(c) => c.dir(),
        }
    }

    fn state(&self) -> PathBuf {
        match &self.server {
            Server::Berthd(d) => d.state().to_owned(),
            Server::Containerd(c) => c.dir().join("state"),
        }
    }

    fn root(&self) -> PathBuf {
        match &self.server {
            Server::Berthd(d) => d.root().to_owned(),
            Server::Containerd(c) => c.dir().join("root"),
        }
    }

    /// A container id unique to this target: runc's state directory (`/run/containerd/runc/<ns>`)
    /// is host-global and the same case runs against several targets at once, so ids carry the
    /// test process id and the target's number.
    fn unique(&self, base: &str) -> String {
        format!("{base}-{}-{}", std::process::id(), self.seq)
    }

    /// Runs the target's client against the daemon, with the target's `--runtime` added to
    /// `run` and `containers create` and its `--runc-binary` to `run` (`ctr containers create`
    /// has no such flag).
    fn cli(&self, args: &[&str]) -> CmdOutput {
        let mut args = args.to_vec();
        let at = match args.as_slice() {
            ["run", ..] => Some((1, true)),
            ["containers" | "container" | "c", "create", ..] => Some((2, false)),
            _ => None,
        };
        if let Some((at, run)) = at {
            args.splice(at..at, self.runtime_flags(run));
        }
        self.client.run(self.address(), &args)
    }

    /// The `--runtime <name>` flag and, for `run`, `--runc-binary <binary>` of the target.
    fn runtime_flags(&self, run: bool) -> Vec<&'static str> {
        let mut flags = Vec::new();
        if let Some(runtime) = self.runtime {
            flags.extend(["--runtime", runtime]);
        }
        if run && self.oci_flag {
            flags.extend(["--runc-binary", self.oci.binary()]);
        }
        flags
    }

    /// [`Target::runtime_flags`] for a hand-built command line.
    fn runtime_flag(&self) -> String {
        self.runtime_flags(true).join(" ")
    }

    /// Checks that the OCI runtime of the target keeps the state of the running container
    /// `id`: the binary in use is the one the case asked for.
    #[track_caller]
    fn assert_oci_state(&self, id: &str) {
        let dir = Path::new(OCI_STATE_ROOT).join(NS).join(id);
        let file = dir.join(self.oci.state_file());
        let listing: Vec<String> = fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            file.is_file(),
            "{} is not {}'s state: {} holds {listing:?}",
            dir.display(),
            self.oci.binary(),
            dir.display()
        );
    }

    /// Kills the daemon with SIGKILL, waits `down`, and starts it again on the same root, state
    /// and socket.
    fn crash_and_restart(&mut self, down: Duration) {
        match &mut self.server {
            Server::Berthd(d) => {
                d.kill9();
                thread::sleep(down);
                d.restart();
            }
            Server::Containerd(c) => {
                c.kill9();
                thread::sleep(down);
                c.spawn();
            }
        }
    }
}

/// `run --rm [extra] IMAGE <id> echo hello` prints hello; `sh -c 'exit 7'` exits 7.
#[track_caller]
fn run_hello_and_exit_7(t: &Target, extra: &[&str], hello_id: &str, exit_id: &str) {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(extra);
    let mut hello = args.clone();
    hello.extend([IMAGE, hello_id, "echo", "hello"]);
    let out = t.cli(&hello);
    assert_eq!(out.ok(), "hello\n", "{out}");
    let mut exit = args;
    exit.extend([IMAGE, exit_id, "sh", "-c", "exit 7"]);
    let out = t.cli(&exit);
    assert_eq!(out.status.code(), Some(7), "{out}");
    assert!(!out.timed_out, "{out}");
}

/// Case 1: `run --rm` prints the output and exits with the task's status.
fn run_rm_case(t: &Target) {
    let (c1, c2) = (t.unique("c1"), t.unique("c2"));
    let guard = Containers::new(t, &[&c1, &c2]);

    run_hello_and_exit_7(t, &[], &c1, &c2);

    let out = t.cli(&["containers", "ls", "-q"]);
    assert!(
        !out.ok().contains(&c1) && !out.stdout.contains(&c2),
        "{out}"
    );
    drop(guard);
    assert_no_leftovers(t, &c1);
    assert_no_leftovers(t, &c2);
}

/// Case 2: a detached task through ls, ps, exec, pause/resume, metrics, kill, delete and rm.
fn detached_task_case(t: &Target) {
    let addr = t.address();
    let id = t.unique("c3");
    let guard = Containers::new(t, &[&id]);

    t.cli(&["run", "-d", IMAGE, &id, "sleep", "300"]).ok();
    let row = wait_status(t, &id, "RUNNING");
    let pid: u32 = row["PID"]
        .parse()
        .unwrap_or_else(|e| panic!("PID of {row:?}: {e}"));
    assert!(pid > 0, "{row:?}");
    assert_eq!(shim_processes(t.shim, addr, Some(&id)).len(), 1);
    t.assert_oci_state(&id);

    let out = t.cli(&["tasks", "ps", &id]);
    let (header, rows) = parse_table(out.ok());
    assert_eq!(header, ["PID", "INFO"], "{out}");
    assert!(
        rows.iter().any(|r| r["PID"] == pid.to_string()),
        "init pid {pid} not listed:\n{out}"
    );

    let out = t.cli(&["tasks", "exec", "--exec-id", "e1", &id, "ls", "/"]);
    assert!(
        out.ok().lines().any(|l| l.trim() == "bin"),
        "ls / lists no bin:\n{out}"
    );

    t.cli(&["tasks", "pause", &id]).ok();
    wait_status(t, &id, "PAUSED");
    t.cli(&["tasks", "resume", &id]).ok();
    wait_status(t, &id, "RUNNING");

    let out = t.cli(&["tasks", "metrics", &id]);
    let usage = out
        .ok()
        .lines()
        .filter_map(|l| {
            let mut cells = l.split_whitespace();
            (cells.next() == Some("memory.usage_in_bytes")).then(|| cells.next())?
        })
        .find_map(|v| v.parse::<u64>().ok());
    assert!(
        usage.is_some_and(|u| u > 0),
        "no positive memory.usage_in_bytes:\n{out}"
    );

    t.cli(&["tasks", "kill", "-s", "KILL", &id]).ok();
    wait_status(t, &id, "STOPPED");
    delete_task(t, &id, KILLED);
    t.cli(&["containers", "rm", &id]).ok();

    drop(guard);
    assert_no_leftovers(t, &id);
}

/// Case 3: `run -t` under `script` gets a pseudo-terminal.
fn tty_case(t: &Target) {
    if !require_binary("script") {
        return;
    }
    let id = t.unique("t1");
    let guard = Containers::new(t, &[&id]);

    let inner = format!(
        "{} --address {} run --rm -t {} {IMAGE} {id} sh -c 'tty; echo ok'",
        t.client.program().display(),
        t.address().display(),
        t.runtime_flag(),
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &inner, "/dev/null"])
        .env_remove("CONTAINERD_ADDRESS")
        .env_remove("CONTAINERD_NAMESPACE");
    let out = run_with_timeout(cmd, CTR_TIMEOUT);
    let text = out.ok();
    assert!(
        text.contains("/dev/pts/") && text.contains("ok"),
        "no tty or no ok:\n{out}"
    );

    drop(guard);
    assert_no_leftovers(t, &id);
}

/// Case 4: a memory hog over its limit is OOM-killed and `/tasks/oom` is published.
fn oom_case(t: &Target) {
    let id = t.unique("oom1");
    let guard = Containers::new(t, &[&id]);
    let mut events = Events::subscribe(t);

    let out = t.cli(&[
        "run",
        "--rm",
        "--memory-limit",
        OOM_LIMIT,
        IMAGE,
        &id,
        "sh",
        "-c",
        // The pause lets the shim watch the cgroup first: containerd 1.6's shim registers its OOM
        // eventfd only after `runc start` returns, and a hog killed within those milliseconds
        // gives no /tasks/oom on the reference (1 run in 4 here).
        "sleep 0.5; x=a; while true; do x=$x$x; done",
    ]);
    assert!(
        !out.timed_out && out.status.code().is_some_and(|c| c != 0),
        "the memory hog did not fail: {out}"
    );
    events.wait_for("/tasks/oom", &container_field(&id));

    drop(guard);
    assert_no_leftovers(t, &id);
}

/// Case 5: `run --rm` publishes create, start, exit and delete task events.
fn events_case(t: &Target) {
    let id = t.unique("ev1");
    let guard = Containers::new(t, &[&id]);
    let mut events = Events::subscribe(t);

    t.cli(&["run", "--rm", IMAGE, &id, "true"]).ok();
    let field = container_field(&id);
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        events.wait_for(topic, &field);
    }
    let exit = events.wait_for("/tasks/exit", &field);
    assert!(
        exit.contains(&format!("\"id\":\"{id}\"")),
        "exit of the init process names the container id: {exit}"
    );

    drop(guard);
    assert_no_leftovers(t, &id);
}

/// Case 6: tasks survive a daemon crash; an exit while the daemon is down is reported after.
fn restart_case(t: &mut Target) {
    let sleepers: Vec<String> = (0..5).map(|n| t.unique(&format!("r{n}"))).collect();
    let short = t.unique("rshort");
    let mut all: Vec<&str> = sleepers.iter().map(String::as_str).collect();
    all.push(&short);
    let guard = Containers::new(t, &all);

    let mut pids = Vec::new();
    for id in &sleepers {
        t.cli(&["run", "-d", IMAGE, id, "sleep", "300"]).ok();
        pids.push(wait_status(t, id, "RUNNING")["PID"].clone());
    }
    t.cli(&["run", "-d", IMAGE, &short, "sh", "-c", "sleep 3; exit 3"])
        .ok();
    wait_status(t, &short, "RUNNING");

    // The short task exits while the daemon is down.
    t.crash_and_restart(Duration::from_secs(5));

    for (id, pid) in sleepers.iter().zip(&pids) {
        let row = task_row(t, id).unwrap_or_else(|| panic!("{id} not listed after restart"));
        assert_eq!(row["STATUS"], "RUNNING", "{row:?}");
        assert_eq!(&row["PID"], pid, "{row:?}");
    }
    wait_status(t, &short, "STOPPED");
    delete_task(t, &short, 3);

    for id in &sleepers {
        t.cli(&["tasks", "kill", "-s", "KILL", id]).ok();
    }
    for id in &sleepers {
        wait_status(t, id, "STOPPED");
        delete_task(t, id, KILLED);
        t.cli(&["containers", "rm", id]).ok();
    }
    t.cli(&["containers", "rm", &short]).ok();

    drop(guard);
    for id in &all {
        assert_no_leftovers(t, id);
    }
}

/// Case 8: an invalid id, a missing binary and a missing rootfs snapshot fail clearly and
/// leave no shim, bundle, mount or cgroup.
fn bad_input_case(t: &Target) {
    let addr = t.address();
    let (nb, rs) = (t.unique("nb1"), t.unique("rs1"));
    let guard = Containers::new(t, &["../x", &nb, &rs]);

    // An id that is no identifier is rejected before anything runs.
    let out = t.cli(&["run", "--rm", IMAGE, "../x", "echo"]);
    assert!(
        out.fails().contains("invalid argument"),
        "not InvalidArgument: {out}"
    );
    assert_no_shim(t.shim, addr, None);
    let mounts = mounts_under(t.dir());
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    for controller in CGROUP_CONTROLLERS {
        let base = Path::new("/sys/fs/cgroup").join(controller);
        assert!(!base.join("x").exists(), "cgroup {controller}/x made");
        if let Ok(entries) = fs::read_dir(base.join(NS)) {
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                assert!(!name.contains(".."), "cgroup {controller}/{NS}/{name} made");
            }
        }
    }
    for dir in [t.state(), t.root()] {
        let escaped = dir.join(TASK_DIR).join("x");
        assert!(!escaped.exists(), "{} made", escaped.display());
    }

    // A missing binary fails the start with an error naming it.
    let out = t.cli(&["run", "--rm", IMAGE, &nb, "/no/such/binary"]);
    assert!(
        out.fails().contains("/no/such/binary"),
        "the error does not name the binary: {out}"
    );
    // ctr run --rm deletes the container after the failure.
    let out = t.cli(&["containers", "ls", "-q"]);
    assert!(!out.ok().contains(&nb), "{out}");
    assert_no_leftovers(t, &nb);

    // A container whose rootfs snapshot is gone cannot start.
    t.cli(&["containers", "create", IMAGE, &rs, "true"]).ok();
    t.cli(&["snapshots", "rm", &rs]).ok();
    let out = t.cli(&["tasks", "start", &rs]);
    let err = out.fails();
    assert!(
        err.contains(&rs) && err.contains("not found"),
        "the error does not name the missing snapshot: {out}"
    );
    assert!(task_row(t, &rs).is_none(), "a task of {rs} exists");
    t.cli(&["containers", "rm", &rs]).ok();
    assert_no_leftovers(t, &rs);

    drop(guard);
    assert_no_shim(t.shim, addr, None);
}

/// One `#[test]` per line: `name: daemon(client) => case`, where the daemon is `berthd` or
/// `containerd` and a case taking `&mut Target` is marked `mut`.
/// `containers ls` shows every create, label change and delete at once, applies label filters
/// and keeps namespaces apart; a bad filter is refused naming it.
fn containers_ls_case(t: &Target) {
    let (red, blue) = (t.unique("ls-red"), t.unique("ls-blue"));
    let _cleanup = Containers::new(t, &[&red, &blue]);
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["containers", "ls", "-q"];
        all.extend_from_slice(args);
        let mut ids: Vec<String> = t.cli(&all).ok().lines().map(str::to_owned).collect();
        ids.retain(|id| id == &red || id == &blue);
        ids.sort();
        ids
    };
    assert!(ids(&[]).is_empty());
    t.cli(&["containers", "create", "--label", "team=red", IMAGE, &red])
        .ok();
    assert_eq!(ids(&[]), std::slice::from_ref(&red));
    t.cli(&["containers", "create", "--label", "team=blue", IMAGE, &blue])
        .ok();
    assert_eq!(ids(&[]).len(), 2);
    assert_eq!(ids(&["labels.team==blue"]), std::slice::from_ref(&blue));
    t.cli(&["containers", "label", &blue, "team=red"]).ok();
    assert_eq!(ids(&["labels.team==red"]).len(), 2);
    assert!(ids(&["labels.team==blue"]).is_empty());
    let other = t.cli(&["--namespace", "ls-other", "containers", "ls", "-q"]);
    assert!(!other.ok().contains(&red), "{other}");
    t.cli(&["containers", "rm", &red]).ok();
    assert_eq!(ids(&[]), std::slice::from_ref(&blue));
    let bad = t.cli(&["containers", "ls", "labels.team=="]);
    assert!(bad.fails().contains("labels.team=="), "{bad}");
}

macro_rules! cases {
    ($($name:ident: $daemon:ident($client:ident) => $(@$mut:tt)? $case:ident;)*) => {$(
        #[test]
        fn $name() {
            if let Some($($mut)? t) = Target::$daemon(Client::$client) {
                $case(&$($mut)? t);
            }
        }
    )*};
}

// berthd with the real `ctr`.
cases! {
    run_rm_prints_output_and_returns_the_exit_code: berthd(Ctr) => run_rm_case;
    detached_task_lists_execs_pauses_reports_metrics_and_is_removed: berthd(Ctr) => detached_task_case;
    run_with_tty_gets_a_pseudo_terminal: berthd(Ctr) => tty_case;
    memory_hog_is_oom_killed_and_reported: berthd(Ctr) => oom_case;
    run_rm_publishes_task_lifecycle_events: berthd(Ctr) => events_case;
    tasks_survive_a_daemon_crash_and_report_exits_missed_while_down: berthd(Ctr) => @mut restart_case;
    rejected_and_failing_runs_leave_nothing_behind: berthd(Ctr) => bad_input_case;
    containers_ls_follows_changes_and_filters: berthd(Ctr) => containers_ls_case;
}

// The same cases against a real containerd with its runc shim: a case failing there is a wrong
// test (STYLE.md §5).
cases! {
    reference_containerd_run_rm: containerd(Ctr) => run_rm_case;
    reference_containerd_detached_task: containerd(Ctr) => detached_task_case;
    reference_containerd_tty: containerd(Ctr) => tty_case;
    reference_containerd_oom: containerd(Ctr) => oom_case;
    reference_containerd_events: containerd(Ctr) => events_case;
    reference_containerd_restart: containerd(Ctr) => @mut restart_case;
    reference_containerd_bad_input: containerd(Ctr) => bad_input_case;
    reference_containerd_containers_ls: containerd(Ctr) => containers_ls_case;
}

// The same cases with `berth` as the client, against berthd (issue 7: "the same lifecycle suite
// that the runtime issue runs with the real ctr also passes with berth").
cases! {
    berth_client_run_rm: berthd(Berth) => run_rm_case;
    berth_client_detached_task: berthd(Berth) => detached_task_case;
    berth_client_tty: berthd(Berth) => tty_case;
    berth_client_oom: berthd(Berth) => oom_case;
    berth_client_events: berthd(Berth) => events_case;
    berth_client_restart: berthd(Berth) => @mut restart_case;
    berth_client_bad_input: berthd(Berth) => bad_input_case;
    berth_client_containers_ls: berthd(Berth) => containers_ls_case;
}

// ... and against a real containerd.
cases! {
    berth_client_containerd_run_rm: containerd(Berth) => run_rm_case;
    berth_client_containerd_detached_task: containerd(Berth) => detached_task_case;
    berth_client_containerd_tty: containerd(Berth) => tty_case;
    berth_client_containerd_oom: containerd(Berth) => oom_case;
    berth_client_containerd_events: containerd(Berth) => events_case;
    berth_client_containerd_restart: containerd(Berth) => @mut restart_case;
    berth_client_containerd_bad_input: containerd(Berth) => bad_input_case;
}

// The same cases on the other shim of each daemon (issue 12: "the runtime suite runs with both
// shims against berthd, and ours under containerd, and gives the same results"): berthd with
// containerd's `containerd-shim-runc-v2` as its default runtime, ...
cases! {
    runc_shim_run_rm: berthd_runc_shim(Ctr) => run_rm_case;
    runc_shim_detached_task: berthd_runc_shim(Ctr) => detached_task_case;
    runc_shim_tty: berthd_runc_shim(Ctr) => tty_case;
    runc_shim_oom: berthd_runc_shim(Ctr) => oom_case;
    runc_shim_events: berthd_runc_shim(Ctr) => events_case;
    runc_shim_restart: berthd_runc_shim(Ctr) => @mut restart_case;
    runc_shim_bad_input: berthd_runc_shim(Ctr) => bad_input_case;
}

// The same cases with crun as the OCI runtime binary (issue 20): berthd with crun as the
// default binary of `io.containerd.runc.v2` in its config (runtime options' `BinaryName`), ...
cases! {
    crun_run_rm: berthd_crun(Ctr) => run_rm_case;
    crun_detached_task: berthd_crun(Ctr) => detached_task_case;
    crun_tty: berthd_crun(Ctr) => tty_case;
    crun_oom: berthd_crun(Ctr) => oom_case;
    crun_events: berthd_crun(Ctr) => events_case;
    crun_restart: berthd_crun(Ctr) => @mut restart_case;
    crun_bad_input: berthd_crun(Ctr) => bad_input_case;
}

// ... `berth run --runc-binary crun` against berthd's default config, ...
cases! {
    crun_flag_berth_client_run_rm: berthd_crun_flag(Berth) => run_rm_case;
    crun_flag_berth_client_detached_task: berthd_crun_flag(Berth) => detached_task_case;
    crun_flag_berth_client_bad_input: berthd_crun_flag(Berth) => bad_input_case;
}

// ... and the reference: a real containerd with `ctr run --runc-binary crun`.
cases! {
    reference_containerd_crun_run_rm: containerd_crun(Ctr) => run_rm_case;
    reference_containerd_crun_detached_task: containerd_crun(Ctr) => detached_task_case;
    reference_containerd_crun_tty: containerd_crun(Ctr) => tty_case;
    reference_containerd_crun_oom: containerd_crun(Ctr) => oom_case;
    reference_containerd_crun_events: containerd_crun(Ctr) => events_case;
    reference_containerd_crun_restart: containerd_crun(Ctr) => @mut restart_case;
    reference_containerd_crun_bad_input: containerd_crun(Ctr) => bad_input_case;
}

// ... and a real containerd running Berth's shim.
cases! {
    containerd_berth_shim_run_rm: containerd_berth_shim(Ctr) => run_rm_case;
    containerd_berth_shim_detached_task: containerd_berth_shim(Ctr) => detached_task_case;
    containerd_berth_shim_tty: containerd_berth_shim(Ctr) => tty_case;
    containerd_berth_shim_oom: containerd_berth_shim(Ctr) => oom_case;
    containerd_berth_shim_events: containerd_berth_shim(Ctr) => events_case;
    containerd_berth_shim_restart: containerd_berth_shim(Ctr) => @mut restart_case;
    containerd_berth_shim_bad_input: containerd_berth_shim(Ctr) => bad_input_case;
}

/// A plain lifecycle (no hooks, cgroupfs, a PID namespace of its own) starts runc once, for
/// `create`: Berth's shim does what `runc start` and `runc delete` do itself (issue 20). crun,
/// whose state the shim does not read, is started for each step. The runtime binary is a
/// script that logs each verb and runs the real one.
#[test]
fn berthd_starts_runc_once_per_plain_lifecycle() {
    let Some(t) = Target::berthd(Client::Ctr) else {
        return;
    };
    let cases: [(Oci, &[&str]); 2] = [
        (Oci::Runc, &["create"]),
        (Oci::Crun, &["create", "start", "delete"]),
    ];
    for (oci, expected) in cases {
        if !require_binary(oci.binary()) {
            continue;
        }
        let log = t.dir().join(format!("{}-verbs.log", oci.binary()));
        let wrapper = t.dir().join(format!("{}-logging", oci.binary()));
        let script = format!(
            "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in \
             create|start|delete|kill|exec|pause|resume|update|ps|state) \
             echo \"$a\" >> {log}; break;; esac; done\nexec {binary} \"$@\"\n",
            log = log.display(),
            binary = oci.binary()
        );
        fs::write(&wrapper, script).expect("write the wrapper");
        fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod the wrapper");
        let id = t.unique(&format!("once-{}", oci.binary()));
        let guard = Containers::new(&t, &[&id]);
        let wrapper = wrapper.to_str().expect("utf-8 path");
        let out = t.cli(&["run", "--rm", "--runc-binary", wrapper, IMAGE, &id, "true"]);
        out.ok();
        let verbs = fs::read_to_string(&log).unwrap_or_default();
        let verbs: Vec<&str> = verbs.lines().collect();
        assert_eq!(
            verbs,
            expected,
            "{} verbs of a plain lifecycle",
            oci.binary()
        );
        drop(guard);
        assert_no_leftovers(&t, &id);
    }
}

#[test]
fn containerd_runs_the_berth_shim() {
    let Some(t) = Target::containerd(Client::Ctr) else {
        return;
    };
    let (x1, x2) = (t.unique("x1"), t.unique("x2"));
    let guard = Containers::new(&t, &[&x1, &x2]);

    run_hello_and_exit_7(&t, &["--runtime", BERTH_RUNTIME], &x1, &x2);

    drop(guard);
    assert_no_shim(BERTH_SHIM, t.address(), None);
    for id in [&x1, &x2] {
        let bundle = t.state().join(TASK_DIR).join(NS).join(id);
        assert!(!bundle.exists(), "{} survived", bundle.display());
    }
}

#[test]
fn berthd_runs_the_containerd_runc_shim() {
    let config = format!(
        "[plugins.\"io.containerd.runtime.v2.task\"]\n  \
         runtimes = {{ \"io.containerd.runc.v2\" = \"{RUNC_SHIM}\" }}\n"
    );
    let Some(t) = Target::berthd_with(Some(&config), RUNC_SHIM, Client::Ctr) else {
        return;
    };
    run_rm_case(&t);
    assert_no_shim(BERTH_SHIM, t.address(), None);
}
