//! A task's life under faults (issue 16, item 3 and the shim scenarios of item 4), with a
//! real `berthd`, its shim, real `runc` and the real `ctr`:
//!
//! - berthd `kill -9`'d right after a shim started, before its task was created, and during a
//!   task delete (reached deterministically through berthd's debug abort points,
//!   `BERTH_DEBUG_ABORT_AT`, see `plugins/base/abortpoint`);
//! - the shim `kill -9`'d under a running task; the container's init killed from outside;
//! - runc missing (a `--runc-binary` that does not exist, no runc on the daemon's PATH) or
//!   failing (a script that exits 1); a read-only task state dir.
//!
//! After each, the daemon serves and nothing is left: no shim process, bundle, work dir, rootfs
//! mount, shim socket, runc state or cgroup of the test's containers. Needs root, runc and
//! ctr; without them prints `skipped: <reason>`, under `CI=true` panics. The cases share
//! `/proc` and the mount table, so they run one at a time.

#![allow(clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::image::build_busybox_image;
use berth_integration::procs::{pid_alive, shim_processes};
use berth_integration::{berthd_bin, channel_at, namespaced, BackgroundCtr, Row, CTR_BIN};
use berth_integration::{ctr_at, parse_table, require_binary, require_root, CmdOutput, Daemon};
use berth_proto::containerd::services::tasks::v1::tasks_client::TasksClient;
use berth_proto::containerd::services::tasks::v1::WaitRequest;
use berth_runtime::abort_points;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const IMAGE: &str = "docker.io/library/bb:latest";
/// How long to wait for a process to go, an event or a status change.
const WAIT: Duration = Duration::from_secs(20);
/// The runtime plugin's dir under the daemon's state and root dirs.
const RUNTIME_DIR: &str = "io.containerd.runtime.v2.task";
/// Where the shim keeps runc's state, per namespace (the runc shims' default root).
const RUNC_ROOT: &str = "/run/containerd/runc";

/// One case at a time: they count processes and mounts.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn prerequisites() -> bool {
    require_root() && require_binary(CTR_BIN) && require_binary("runc")
}

/// A berthd with the test image imported into a namespace of the case's own.
struct Case {
    daemon: Daemon,
    ns: String,
    ids: Vec<String>,
}

impl Case {
    /// Starts berthd (with `abort_at` as its abort point, if any) and imports the image.
    fn start(tag: &str, abort_at: Option<&str>) -> Case {
        let mut daemon = Daemon::prepare(None, &[]);
        daemon.set_env(abort_points::ENV, abort_at);
        daemon.restart();
        let case = Case {
            ns: format!("shimfault-{tag}-{}", std::process::id()),
            daemon,
            ids: Vec::new(),
        };
        let img = build_busybox_image(case.daemon.dir(), IMAGE);
        case.ctr(&[
            "images",
            "import",
            img.archive.to_str().expect("utf-8 path"),
        ])
        .ok();
        case
    }

    /// A container id of this case (cleaned up on drop).
    fn id(&mut self, name: &str) -> String {
        let id = format!("{}-{name}", self.ns);
        self.ids.push(id.clone());
        id
    }

    /// `ctr -n <ns> <args>`.
    fn ctr(&self, args: &[&str]) -> CmdOutput {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        ctr_at(self.daemon.address(), &all)
    }

    /// The row of `ctr tasks ls` for `id`, if listed.
    fn task(&self, id: &str) -> Option<Row> {
        let out = self.ctr(&["tasks", "ls"]);
        let (_, rows) = parse_table(out.ok());
        rows.into_iter().find(|r| r["TASK"] == id)
    }

    /// Waits for `id`'s task to show `status`; returns its row.
    #[track_caller]
    fn wait_status(&self, id: &str, status: &str) -> Row {
        let deadline = Instant::now() + WAIT;
        loop {
            let row = self.task(id);
            if let Some(row) = row.as_ref().filter(|r| r["STATUS"] == status) {
                return row.clone();
            }
            assert!(
                Instant::now() < deadline,
                "task {id} not {status} after {WAIT:?}: {row:?}\n{}",
                self.daemon.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for berthd to die at the abort point it was started with.
    #[track_caller]
    fn wait_aborted(&mut self, point: &str) {
        let deadline = Instant::now() + WAIT;
        while self.daemon.is_running() {
            assert!(
                Instant::now() < deadline,
                "berthd still running, abort point {point} not reached"
            );
            thread::sleep(Duration::from_millis(20));
        }
        let line = format!("berth: abort point {point} reached");
        assert!(self.daemon.log().contains(&line), "{}", self.daemon.log());
    }

    /// Starts berthd again, without an abort point.
    fn restart_clean(&mut self) {
        self.daemon.set_env(abort_points::ENV, None);
        self.daemon.restart();
    }

    /// Live shim processes serving this daemon (their `-address` is its socket).
    fn shims(&self) -> Vec<u32> {
        shim_processes(self.daemon.address())
            .into_iter()
            .map(|(pid, _)| pid)
            .collect()
    }

    fn shim_socket_dir(&self) -> PathBuf {
        self.daemon.dir().join("s")
    }

    /// Everything a task of `ids` could leave behind, as text; empty when nothing is left.
    fn leftovers(&self, ids: &[&str]) -> Vec<String> {
        let mut found = Vec::new();
        for pid in self.shims() {
            found.push(format!("shim process {pid}"));
        }
        let mount_root = self.daemon.state().join(RUNTIME_DIR);
        for point in mount_points() {
            if point.starts_with(&mount_root) {
                found.push(format!("mount {}", point.display()));
            }
        }
        for dir in [
            self.daemon.state().join(RUNTIME_DIR).join(&self.ns),
            self.daemon.root().join(RUNTIME_DIR).join(&self.ns),
            self.shim_socket_dir(),
        ] {
            for entry in entries(&dir) {
                found.push(format!("file {}", dir.join(entry).display()));
            }
        }
        let runc = Command::new("runc")
            .arg("--root")
            .arg(Path::new(RUNC_ROOT).join(&self.ns))
            .args(["list", "-q"])
            .output()
            .expect("run runc list");
        for line in String::from_utf8_lossy(&runc.stdout).lines() {
            if ids.contains(&line.trim()) {
                found.push(format!("runc container {line}"));
            }
        }
        for id in ids {
            for dir in cgroup_dirs(&self.ns, id) {
                found.push(format!("cgroup {}", dir.display()));
            }
        }
        found
    }

    /// Asserts that nothing of `ids` is left (waiting a little for shims that are exiting).
    #[track_caller]
    fn assert_no_leftovers(&self, ids: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.leftovers(ids);
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "left behind: {left:#?}\n--- berthd log ---\n{}",
                self.daemon.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asserts that berthd serves: it lists the namespace's containers.
    #[track_caller]
    fn assert_serving(&self) {
        self.ctr(&["containers", "ls"]).ok();
        self.ctr(&["tasks", "ls"]).ok();
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        if self.daemon.is_running() {
            for id in &self.ids {
                let _ = self.ctr(&["tasks", "kill", "-s", "KILL", id]);
            }
            thread::sleep(Duration::from_millis(300));
            for id in &self.ids {
                let _ = self.ctr(&["tasks", "rm", "-f", id]);
                let _ = self.ctr(&["containers", "rm", id]);
            }
        }
        for pid in self.shims() {
            let _ = kill(pid_of(pid), Signal::SIGKILL);
        }
        // runc's per-namespace root and the namespace's parent cgroups, if empty.
        let _ = std::fs::remove_dir(Path::new(RUNC_ROOT).join(&self.ns));
        for controller in entries(Path::new("/sys/fs/cgroup")) {
            let _ =
                std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(controller).join(&self.ns));
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(&self.ns));
    }
}

fn pid_of(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).expect("pid fits in i32"))
}

/// Names in `dir`; none when it does not exist.
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Mount points of this process's mount namespace (`/proc/self/mountinfo`, field 5).
fn mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read /proc/self/mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .collect()
}

/// The container's cgroup directories that exist: `/<ns>/<id>` (ctr's default cgroups path)
/// under the cgroup2 root or any v1 hierarchy.
fn cgroup_dirs(ns: &str, id: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut candidates = vec![root.join(ns).join(id)];
    for controller in entries(root) {
        candidates.push(root.join(controller).join(ns).join(id));
    }
    candidates.into_iter().filter(|p| p.is_dir()).collect()
}

/// Waits until `pid` is gone.
#[track_caller]
fn wait_gone(pid: u32) {
    let deadline = Instant::now() + WAIT;
    while pid_alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} still alive");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The event JSON of a `ctr events` line on `topic` (`<time> <ns> <topic> <json>`, the time
/// having spaces of its own).
fn event_on<'a>(line: &'a str, topic: &str) -> Option<&'a str> {
    line.split_once(&format!(" {topic} ")).map(|(_, json)| json)
}

#[test]
fn berthd_killed_after_the_shim_started_leaves_no_shim_after_restart() {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let point = abort_points::CREATE_SHIM_STARTED;
    let mut case = Case::start("a", Some(point));
    let id = case.id("c");
    // berthd dies between starting the shim and creating its task.
    case.ctr(&["run", "-d", IMAGE, &id, "sleep", "1000"])
        .fails();
    case.wait_aborted(point);
    // `start` returns once the shim's address is recorded, which can be just before the
    // daemonised shim has finished its exec (and shows its arguments): give it a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while case.shims().len() != 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        case.shims().len(),
        1,
        "the shim was started before the abort"
    );

    case.restart_clean();
    case.assert_no_leftovers(&[&id]);
    case.assert_serving();
    // The container stays, and a task of it runs now.
    assert!(case.ctr(&["containers", "ls", "-q"]).ok().contains(&id));
    assert!(case.task(&id).is_none());
    case.ctr(&["tasks", "start", "-d", &id]).ok();
    case.wait_status(&id, "RUNNING");
    case.ctr(&["tasks", "kill", "-s", "KILL", &id]).ok();
    case.wait_status(&id, "STOPPED");
    case.ctr(&["tasks", "rm", &id]);
    case.ctr(&["containers", "rm", &id]).ok();
    case.assert_no_leftovers(&[&id]);
}

#[test]
fn berthd_killed_during_a_task_delete_leaves_no_shim_after_restart() {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let point = abort_points::DELETE_SHIM_DELETED;
    let mut case = Case::start("b", Some(point));
    let id = case.id("c");
    case.ctr(&["run", "-d", IMAGE, &id, "sleep", "1000"]).ok();
    case.wait_status(&id, "RUNNING");
    case.ctr(&["tasks", "kill", "-s", "KILL", &id]).ok();
    case.wait_status(&id, "STOPPED");
    // berthd dies after the shim deleted the task, before it shut the shim down.
    case.ctr(&["tasks", "rm", &id]).fails();
    case.wait_aborted(point);
    assert_eq!(case.shims().len(), 1, "the shim outlived the daemon");

    case.restart_clean();
    case.assert_no_leftovers(&[&id]);
    case.assert_serving();
    assert!(case.task(&id).is_none(), "the deleted task is not listed");
    assert!(case.ctr(&["containers", "ls", "-q"]).ok().contains(&id));
    // A second restart finds nothing to reconnect either.
    case.daemon.restart();
    assert!(case.task(&id).is_none());
    case.ctr(&["containers", "rm", &id]).ok();
    case.assert_no_leftovers(&[&id]);
}

#[test]
fn a_killed_shim_is_cleaned_up_and_its_exit_published() {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let mut case = Case::start("c", None);
    let id = case.id("c");
    let events = BackgroundCtr::spawn(case.daemon.address(), &["-n", &case.ns, "events"]);
    case.ctr(&["run", "-d", IMAGE, &id, "sleep", "1000"]).ok();
    let row = case.wait_status(&id, "RUNNING");
    let init: u32 = row["PID"].parse().expect("a pid");
    let shims = case.shims();
    assert_eq!(shims.len(), 1, "one shim: {shims:?}");

    kill(pid_of(shims[0]), Signal::SIGKILL).expect("kill the shim");
    let exit = events.wait_line("TaskExit", |l| {
        event_on(l, "/tasks/exit")
            .is_some_and(|j| j.contains(&format!("\"container_id\":\"{id}\"")))
    });
    assert!(exit.contains("\"exit_status\":137"), "{exit}");
    events.wait_line("TaskDelete", |l| {
        event_on(l, "/tasks/delete")
            .is_some_and(|j| j.contains(&format!("\"container_id\":\"{id}\"")))
    });
    // The container went with its shim; its task is no longer running.
    wait_gone(init);
    assert!(
        case.task(&id).is_none_or(|r| r["STATUS"] != "RUNNING"),
        "{:?}",
        case.task(&id)
    );
    case.ctr(&["containers", "rm", &id]).ok();
    case.assert_no_leftovers(&[&id]);
    case.assert_serving();
}

#[test]
fn an_init_killed_from_outside_exits_137() {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let mut case = Case::start("d", None);

    // An attached `ctr run` waits for its task (Tasks.Wait) and exits with its status.
    let attached_id = case.id("attached");
    let mut attached = BackgroundCtr::spawn(
        case.daemon.address(),
        &["-n", &case.ns, "run", IMAGE, &attached_id, "sleep", "1000"],
    );
    let row = case.wait_status(&attached_id, "RUNNING");
    kill(pid_of(row["PID"].parse().expect("a pid")), Signal::SIGKILL).expect("kill init");
    assert_eq!(attached.wait_exit().0, Some(137));
    case.ctr(&["containers", "rm", &attached_id]).ok();

    // A detached one: Wait answers 137, `ctr tasks ls` says STOPPED, and `ctr tasks rm`
    // reports the status.
    let id = case.id("detached");
    case.ctr(&["run", "-d", IMAGE, &id, "sleep", "1000"]).ok();
    let row = case.wait_status(&id, "RUNNING");
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let wait = runtime.spawn({
        let (address, ns, id) = (
            case.daemon.address().to_owned(),
            case.ns.clone(),
            id.clone(),
        );
        async move {
            let mut tasks = TasksClient::new(channel_at(&address).await);
            let request = WaitRequest {
                container_id: id,
                exec_id: String::new(),
            };
            tasks.wait(namespaced(&ns, request)).await
        }
    });
    // Wait is in before the kill.
    thread::sleep(Duration::from_millis(300));
    kill(pid_of(row["PID"].parse().expect("a pid")), Signal::SIGKILL).expect("kill init");
    let waited = runtime
        .block_on(async { tokio::time::timeout(WAIT, wait).await })
        .expect("Wait answers")
        .expect("the Wait call ran")
        .expect("Wait succeeds")
        .into_inner();
    assert_eq!(waited.exit_status, 137);
    case.wait_status(&id, "STOPPED");
    // ctr 1.6 `tasks rm` warns with the status (cmd/ctr/commands/tasks/delete.go).
    let rm = case.ctr(&["tasks", "rm", &id]);
    rm.ok();
    assert!(
        rm.stderr.contains("exit with non-zero exit code 137"),
        "{rm}"
    );
    assert!(case.task(&id).is_none());
    case.ctr(&["containers", "rm", &id]).ok();
    case.assert_no_leftovers(&[&attached_id, &id]);
}

#[test]
fn a_missing_or_failing_runc_fails_task_create_and_leaves_nothing() {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let mut case = Case::start("e", None);
    let fake = case.daemon.dir().join("fake").join("runc");
    std::fs::create_dir_all(fake.parent().expect("a parent")).expect("mkdir");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'fake runc: no containers today' >&2\nexit 1\n",
    )
    .expect("write the fake runc");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let missing = case.daemon.dir().join("nowhere").join("runc");
    let (missing, fake) = (missing.display().to_string(), fake.display().to_string());
    for (name, binary, says) in [
        ("missing", missing.as_str(), "No such file or directory"),
        (
            "failing",
            fake.as_str(),
            "did not terminate successfully: exit status 1",
        ),
    ] {
        let id = case.id(name);
        let out = case.ctr(&["run", "--runc-binary", binary, "-d", IMAGE, &id, "true"]);
        let err = out.fails();
        assert!(
            err.contains(binary),
            "{name}: the error names the runc binary: {err}"
        );
        assert!(err.contains(says), "{name}: {err}");
        assert!(case.task(&id).is_none(), "{name}: no task");
        case.ctr(&["containers", "rm", &id]).ok();
        case.assert_no_leftovers(&[&id]);
    }

    // No runc on the daemon's PATH (the shims inherit it): the default binary name fails.
    let bin_dir = berthd_bin()
        .parent()
        .expect("berthd has a directory")
        .display()
        .to_string();
    // Only berthd's own directory (Debian links /usr/bin/runc to /usr/sbin/runc).
    let path = bin_dir;
    assert!(
        !std::env::split_paths(&path).any(|d| d.join("runc").exists()),
        "runc found on {path}"
    );
    case.daemon.set_env("PATH", Some(&path));
    case.daemon.restart();
    let id = case.id("nopath");
    let err = case
        .ctr(&["run", "-d", IMAGE, &id, "true"])
        .fails()
        .to_owned();
    assert!(
        err.contains("exec runc: No such file or directory"),
        "{err}"
    );
    assert!(case.task(&id).is_none(), "no task");
    case.ctr(&["containers", "rm", &id]).ok();
    case.assert_no_leftovers(&[&id]);
    case.assert_serving();
}

/// A read-only bind mount over a directory, undone on drop.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn over(dir: &Path) -> ReadOnly {
        let mount = |args: &[&std::ffi::OsStr]| {
            let out = Command::new("mount")
                .args(args)
                .output()
                .expect("run mount");
            assert!(out.status.success(), "mount {args:?}: {out:?}");
        };
        mount(&["--bind".as_ref(), dir.as_os_str(), dir.as_os_str()]);
        let guard = ReadOnly(dir.to_path_buf());
        mount(&["-o".as_ref(), "remount,ro,bind".as_ref(), dir.as_os_str()]);
        guard
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_state_dir_fails_task_create_naming_the_path() {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let mut case = Case::start("f", None);
    let id = case.id("c");
    let state = case.daemon.state().join(RUNTIME_DIR);
    {
        let _ro = ReadOnly::over(&state);
        let out = case.ctr(&["run", "-d", IMAGE, &id, "sleep", "1000"]);
        let err = out.fails();
        assert!(
            err.contains(&state.display().to_string())
                && err.to_lowercase().contains("read-only file system"),
            "the error names the path and the cause: {err}"
        );
        case.assert_serving();
        assert!(case.task(&id).is_none());
    }
    // Writable again: the same container runs.
    case.ctr(&["tasks", "start", "-d", &id]).ok();
    case.wait_status(&id, "RUNNING");
    case.ctr(&["tasks", "kill", "-s", "KILL", &id]).ok();
    case.wait_status(&id, "STOPPED");
    case.ctr(&["tasks", "rm", &id]);
    case.ctr(&["containers", "rm", &id]).ok();
    case.assert_no_leftovers(&[&id]);
}
