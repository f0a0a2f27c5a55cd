//! End-to-end tests for containerd's top-level config keys (issue 12, item 5): `[cgroup] path`
//! puts the daemon, every shim and the containers placed relative to their shim under that
//! cgroup; `oom_score` sets the daemon's own OOM score; `imports` merges further files;
//! `[timeouts]` takes containerd's keys; and what berthd does not support
//! (`[stream_processors]` entries, unknown timeouts, `temp`, `plugin_dir`) stops start-up
//! with a message saying so, never "unknown field". (`[metrics]` is served: tests/metrics.rs.)
//!
//! `[cgroup] path` is also checked against a real containerd 1.6 (`containerd_*`, STYLE.md §5)
//! on the cgroup v1 hierarchies, the only ones containerd joins; berthd joins the cgroup2 one
//! too.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::containerd::Containerd;
use berth_integration::image::build_busybox_image;
use berth_integration::{
    ctr, ctr_at, parse_table, require_binary, require_root, spawn_raw, CmdOutput, Daemon,
};

/// Name of the test image.
const IMAGE: &str = "docker.io/library/bb:latest";

/// How long a berthd that is expected to fail may run before it is killed.
const FAIL_TIMEOUT: Duration = Duration::from_secs(20);

/// How long to wait for a task to run.
const WAIT: Duration = Duration::from_secs(20);

/// Where the cgroup hierarchies are mounted on the test machines.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// cgroup v1 controllers whose placement the cgroup case checks.
const V1_CONTROLLERS: [&str; 2] = ["memory", "pids"];

/// containerd 1.6's `[timeouts]` as `containerd config default` prints them.
const CONTAINERD_TIMEOUTS: &str = "[timeouts]
  \"io.containerd.timeout.bolt.open\" = \"0s\"
  \"io.containerd.timeout.shim.cleanup\" = \"5s\"
  \"io.containerd.timeout.shim.load\" = \"5s\"
  \"io.containerd.timeout.shim.shutdown\" = \"3s\"
  \"io.containerd.timeout.task.state\" = \"2s\"
";

/// Starts berthd on `config` expecting it to fail; returns its stderr.
#[track_caller]
fn start_fails(config: &str) -> String {
    let dir = tempfile::Builder::new()
        .prefix("berth-cfg-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let path = dir.path().join("config.toml");
    fs::write(&path, format!("version = 2\n{config}")).expect("write config");
    let root = dir.path().join("root");
    let state = dir.path().join("state");
    let socket = dir.path().join("s.sock");
    let out = spawn_raw(
        &[
            "--config",
            path.to_str().expect("utf-8"),
            "--root",
            root.to_str().expect("utf-8"),
            "--state",
            state.to_str().expect("utf-8"),
            "--address",
            socket.to_str().expect("utf-8"),
        ],
        FAIL_TIMEOUT,
    );
    assert!(!out.timed_out, "berthd started on {config:?}: {out}");
    assert!(!out.success(), "berthd accepted {config:?}: {out}");
    out.stderr
}

/// Each of containerd's top-level keys that berthd does not support stops start-up with a
/// message naming it as not supported; none is an "unknown field".
#[test]
fn unsupported_keys_are_refused_by_name() {
    if !require_root() {
        return;
    }
    for (config, key) in [
        (
            // containerd's own default stream processor (ocicrypt).
            "[stream_processors]\n  [stream_processors.\"io.containerd.ocicrypt.decoder.v1.tar\"]\n    \
             accepts = [\"application/vnd.oci.image.layer.v1.tar+encrypted\"]\n    \
             args = [\"--decryption-keys-path\", \"/etc/containerd/ocicrypt/keys\"]\n    \
             path = \"ctd-decoder\"\n    returns = \"application/vnd.oci.image.layer.v1.tar\"\n",
            "stream_processors.\"io.containerd.ocicrypt.decoder.v1.tar\"",
        ),
        (
            "[timeouts]\n  \"io.containerd.timeout.nope\" = \"1s\"\n",
            "timeouts.\"io.containerd.timeout.nope\"",
        ),
        (
            "[timeouts]\n  \"io.containerd.timeout.bolt.open\" = \"10s\"\n",
            "timeouts.\"io.containerd.timeout.bolt.open\"",
        ),
        ("temp = \"/var/tmp/x\"\n", "temp"),
        ("plugin_dir = \"/opt/plugins\"\n", "plugin_dir"),
    ] {
        let stderr = start_fails(config);
        assert!(
            stderr.contains(&format!("{key} is not supported")),
            "{config:?}: {stderr}"
        );
        assert!(!stderr.contains("unknown field"), "{config:?}: {stderr}");
    }
    // A bad value is named too.
    let stderr = start_fails("[timeouts]\n  \"io.containerd.timeout.shim.load\" = \"soon\"\n");
    assert!(stderr.contains("\"soon\" is not a duration"), "{stderr}");
    let stderr = start_fails("oom_score = -2000\n");
    assert!(
        stderr.contains("oom_score -2000 is out of range"),
        "{stderr}"
    );
}

/// containerd's defaults for the keys berthd honours start a daemon: `oom_score = 0`, an empty
/// `[cgroup] path`, containerd's `[timeouts]`, no `imports`, an empty `[stream_processors]` and
/// `[metrics]` without a listener.
#[test]
fn defaults_of_containerd_are_accepted() {
    if !require_root() || !require_binary("ctr") {
        return;
    }
    let config = format!(
        "oom_score = 0\nimports = []\n[cgroup]\n  path = \"\"\n[metrics]\n  address = \"\"\n  \
         grpc_histogram = false\n{CONTAINERD_TIMEOUTS}[stream_processors]\n"
    );
    let d = Daemon::start_with(Some(&config), &[]);
    ctr(&d, &["version"]).ok();
}

/// `oom_score` is the daemon's own `oom_score_adj`. A positive score: lowering one takes
/// CAP_SYS_RESOURCE, which root lacks on some test machines (berthd then logs the failure and
/// runs on, as containerd does).
#[test]
fn oom_score_is_the_daemons_own() {
    if !require_root() {
        return;
    }
    let d = Daemon::start_with(Some("oom_score = 123"), &[]);
    let adj = fs::read_to_string(format!("/proc/{}/oom_score_adj", d.pid())).expect("read");
    assert_eq!(adj.trim(), "123");
}

/// `imports` merges further files over the main one (containerd `LoadConfig`): relative to the
/// importing file, with globs; arrays append and non-zero values override.
#[test]
fn imports_are_merged() {
    if !require_root() || !require_binary("ctr") {
        return;
    }
    let mut d = Daemon::prepare(
        Some("imports = [\"conf.d/*.toml\"]\noom_score = 5\ndisabled_plugins = [\"io.containerd.snapshotter.v1.btrfs\"]"),
        &[],
    );
    let conf_d = d.dir().join("conf.d");
    fs::create_dir(&conf_d).expect("mkdir conf.d");
    fs::write(
        conf_d.join("10-native.toml"),
        "version = 2\noom_score = 7\ndisabled_plugins = [\"io.containerd.snapshotter.v1.native\"]\n",
    )
    .expect("write import");
    d.restart();
    let adj = fs::read_to_string(format!("/proc/{}/oom_score_adj", d.pid())).expect("read");
    assert_eq!(adj.trim(), "7", "the imported oom_score wins");
    let out = ctr(&d, &["plugins", "ls"]);
    let (_, rows) = parse_table(out.ok());
    let ids: Vec<&str> = rows.iter().map(|r| r["ID"].as_str()).collect();
    assert!(ids.contains(&"overlayfs"), "{out}");
    for disabled in ["native", "btrfs"] {
        assert!(!ids.contains(&disabled), "{disabled} listed: {out}");
    }
}

/// Removes the test's cgroup from every hierarchy on drop (after the daemon and its
/// containers are gone).
struct CgroupDirs(String);

impl Drop for CgroupDirs {
    fn drop(&mut self) {
        let Ok(entries) = fs::read_dir(CGROUP_ROOT) else {
            return;
        };
        for hierarchy in entries.filter_map(Result::ok) {
            let top = hierarchy.path().join(self.0.trim_start_matches('/'));
            remove_cgroup_tree(&top);
        }
    }
}

/// rmdir of a cgroup and its children, deepest first, retrying while processes leave.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir.exists() && fs::remove_dir(dir).is_err() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
}

/// The cgroup of `pid` in the hierarchy `controller` (`""` for cgroup2), from
/// `/proc/<pid>/cgroup`.
fn cgroup_of(pid: u32, controller: &str) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read /proc/PID/cgroup");
    text.lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_owned())
        })
        .unwrap_or_else(|| panic!("no {controller:?} line in /proc/{pid}/cgroup:\n{text}"))
}

/// The parent pid of `pid`.
fn ppid(pid: u32) -> u32 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // `pid (comm) state ppid ...`; comm may hold spaces, so split after its `)`.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    after
        .split(' ')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("ppid field")
}

/// Runs `ctr run -d --cgroup <relative> IMAGE <id> sleep 60` against `address` and returns the
/// task's pid, killing and removing it on drop.
struct Running {
    address: PathBuf,
    id: String,
    pid: u32,
}

impl Running {
    #[track_caller]
    fn start(address: &Path, dir: &Path, id: &str, cgroup: &str) -> Running {
        let img = build_busybox_image(dir, IMAGE);
        let run = |args: &[&str]| -> CmdOutput { ctr_at(address, args) };
        run(&["images", "import", img.archive.to_str().expect("utf-8")]).ok();
        let mut running = Running {
            address: address.to_owned(),
            id: id.to_owned(),
            pid: 0,
        };
        run(&["run", "-d", "--cgroup", cgroup, IMAGE, id, "sleep", "60"]).ok();
        let deadline = Instant::now() + WAIT;
        loop {
            let out = run(&["tasks", "ls"]);
            let (_, rows) = parse_table(out.ok());
            if let Some(row) = rows
                .iter()
                .find(|r| r["TASK"] == id && r["STATUS"] == "RUNNING")
            {
                running.pid = row["PID"].parse().expect("pid");
                return running;
            }
            assert!(Instant::now() < deadline, "{id} never ran: {out}");
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = ctr_at(&self.address, &["tasks", "kill", "-s", "KILL", &self.id]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ctr_at(&self.address, &["tasks", "delete", &self.id]).success()
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(200));
        }
        let _ = ctr_at(&self.address, &["containers", "rm", &self.id]);
    }
}

/// How the test machine mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// cgroup v1 controllers, plus an (almost empty) cgroup2 at `/sys/fs/cgroup/unified`.
    Hybrid,
    /// cgroup v1 only.
    Legacy,
    /// cgroup2 only, at `/sys/fs/cgroup`.
    Unified,
}

fn layout() -> Layout {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        Layout::Unified
    } else if root.join("unified/cgroup.procs").exists() {
        Layout::Hybrid
    } else {
        Layout::Legacy
    }
}

/// Case: the daemon (when `daemon_pid` is given) and the shim are in `path`; a container whose
/// spec gives a relative `cgroupsPath` is below its shim's cgroup, so below `path` too. On a
/// hybrid host the cgroup2 hierarchy is checked for the daemon and the shim only when
/// `check_hybrid_v2` (containerd joins only the v1 ones there), and never for the container:
/// runc places a container in the hybrid cgroup2 hierarchy from that hierarchy's root.
fn cgroup_case(
    address: &Path,
    dir: &Path,
    path: &str,
    daemon_pid: Option<u32>,
    check_hybrid_v2: bool,
) {
    // runc's state directory is host-global and the berthd and containerd cases run at once.
    let tag = if daemon_pid.is_some() { "b" } else { "c" };
    let id = format!("cg-{tag}-{}", std::process::id());
    let task = Running::start(address, dir, &id, "in-shim");
    let shim = ppid(task.pid);
    let nested = format!("{path}/in-shim");
    // (hierarchy as named in /proc/PID/cgroup, whether the container is checked there)
    let hierarchies: Vec<(&str, bool)> = match layout() {
        Layout::Unified => vec![("", true)],
        Layout::Legacy => V1_CONTROLLERS.iter().map(|c| (*c, true)).collect(),
        Layout::Hybrid => {
            let mut h: Vec<(&str, bool)> = V1_CONTROLLERS.iter().map(|c| (*c, true)).collect();
            if check_hybrid_v2 {
                h.push(("", false));
            }
            h
        }
    };
    for (controller, container_too) in hierarchies {
        if let Some(daemon) = daemon_pid {
            assert_eq!(
                cgroup_of(daemon, controller),
                path,
                "daemon, {controller:?}"
            );
        }
        assert_eq!(
            cgroup_of(shim, controller),
            path,
            "shim {shim}, {controller:?}"
        );
        if container_too {
            assert_eq!(
                cgroup_of(task.pid, controller),
                nested,
                "container {}, {controller:?}",
                task.pid
            );
        }
    }
}

#[test]
fn cgroup_path_holds_the_daemon_shims_and_containers() {
    if !require_root() || !require_binary("ctr") || !require_binary("runc") {
        return;
    }
    let path = format!("/berth-it-{}", std::process::id());
    let _cleanup = CgroupDirs(path.clone());
    let d = Daemon::start_with(Some(&format!("[cgroup]\n  path = \"{path}\"")), &[]);
    cgroup_case(d.address(), d.dir(), &path, Some(d.pid()), true);
}

#[test]
fn containerd_cgroup_path_holds_shims_and_containers() {
    if !require_root()
        || !require_binary("ctr")
        || !require_binary("runc")
        || !require_binary("containerd")
    {
        return;
    }
    let path = format!("/ctd-it-{}", std::process::id());
    let _cleanup = CgroupDirs(path.clone());
    let c = Containerd::start_with(&format!("[cgroup]\n  path = \"{path}\"\n"));
    // containerd joins only the v1 hierarchies on a hybrid host.
    cgroup_case(c.address(), c.dir(), &path, None, false);
}
