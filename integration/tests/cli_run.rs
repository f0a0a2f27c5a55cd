//! End-to-end tests of `berth run`, `berth containers create` and `berth tasks` against a real
//! `berthd` (with `containerd-shim-berth-v2` found on the `PATH` the harness gives it) and, for
//! the compatibility case, against a real containerd 1.6 with its runc shim.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::berth_cli::{berth, import_archive, RemoveContainers};
use berth_integration::containerd::Containerd;
use berth_integration::image::{build_busybox_image, BUSYBOX};
use berth_integration::{require_binary, require_root, Daemon};

const IMAGE: &str = "docker.io/library/bb:latest";

/// A container id unique to this test process: runc's state directory is host-global, so
/// daemons of concurrent tests must not reuse ids.
fn uid(base: &str) -> String {
    format!("{base}-{}", std::process::id())
}

/// Status of task `id` in `tasks ls --format json`, if listed.
fn task_status(a: &Path, id: &str) -> Option<String> {
    let ls = berth(a, &["tasks", "ls", "--format", "json"]).json();
    ls.as_array()
        .expect("an array")
        .iter()
        .find(|t| t["id"] == id)
        .map(|t| t["status"].as_str().unwrap_or_default().to_owned())
}

/// Waits until task `id` has `status`.
#[track_caller]
fn wait_status(a: &Path, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = task_status(a, id);
        if now.as_deref() == Some(status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} is {now:?}, not {status}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn import(a: &Path, dir: &Path, extra: &[&str]) {
    import_archive(a, &build_busybox_image(dir, IMAGE).archive, extra);
}

/// A host directory holding busybox and a few applets, for `--rootfs`.
fn host_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("hostroot");
    fs::create_dir_all(root.join("bin")).expect("mkdir bin");
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    fs::copy(BUSYBOX, root.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "echo", "ls", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    root
}

#[test]
fn run_rm_prints_output_and_passes_exit_codes() {
    if !require_root() || !require_binary("runc") {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();
    import(a, daemon.dir(), &[]);
    let [t1, t2, t3, t4, t5, t6, r1] = [
        "rr-t1", "rr-t2", "rr-t3", "rr-t4", "rr-t5", "rr-t6", "rr-r1",
    ]
    .map(uid);
    let _cleanup = RemoveContainers {
        address: a,
        ids: vec![t1.clone(), t2.clone(), t3.clone(), t4.clone(), r1.clone()],
    };

    let out = berth(a, &["run", "--rm", IMAGE, &t1, "echo", "hi"]).ok();
    assert_eq!(out, "hi\n");

    let r = berth(a, &["run", "--rm", IMAGE, &t2, "sh", "-c", "exit 7"]);
    assert_eq!(r.code, 7, "{r:?}");
    assert_eq!(r.stderr, "", "exit status is not an error message");

    let out = berth(
        a,
        &[
            "run",
            "--rm",
            "--env",
            "FOO=bar",
            IMAGE,
            &t3,
            "sh",
            "-c",
            "echo $FOO",
        ],
    )
    .ok();
    assert_eq!(out, "bar\n");

    // stderr goes to stderr; the image's env and cwd are there.
    let r = berth(
        a,
        &[
            "run",
            "--rm",
            "--cwd",
            "/etc",
            IMAGE,
            &t4,
            "sh",
            "-c",
            "cat hello >/dev/null; pwd; echo oops >&2; echo $PATH",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        "/etc\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    );
    assert_eq!(r.stderr, "oops\n");

    // --rm cleaned up container, snapshot and task.
    assert_eq!(
        berth(a, &["containers", "ls", "-q"]).ok(),
        "",
        "containers left behind"
    );
    assert_eq!(berth(a, &["tasks", "ls", "-q"]).ok(), "");
    let snaps = berth(a, &["snapshots", "ls"]).ok();
    assert!(!snaps.contains(&t1), "{snaps}");

    let root = host_rootfs(daemon.dir());
    let out = berth(
        a,
        &[
            "run",
            "--rm",
            "--rootfs",
            root.to_str().unwrap(),
            &r1,
            "/bin/echo",
            "x",
        ],
    )
    .ok();
    assert_eq!(out, "x\n");

    let missing = berth(a, &["run", "--rm", "no/such:image", &t5, "true"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
    let conflict = berth(a, &["run", "--rm", "-d", IMAGE, &t6, "true"]);
    assert_eq!(conflict.code, 1);
    assert!(
        conflict.stderr.contains("--detach and --rm"),
        "{}",
        conflict.stderr
    );
}

#[test]
fn detached_task_lifecycle() {
    if !require_root() || !require_binary("runc") {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();
    import(a, daemon.dir(), &[]);
    let [t3, t4] = ["dl-t3", "dl-t4"].map(uid);
    let _cleanup = RemoveContainers {
        address: a,
        ids: vec![t3.clone(), t4.clone()],
    };

    assert_eq!(
        berth(a, &["run", "-d", IMAGE, &t3, "sleep", "300"]).ok(),
        ""
    );
    wait_status(a, &t3, "RUNNING");
    let table = berth(a, &["tasks", "ls"]).ok();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["TASK", "PID", "STATUS"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&format!("{t3} ")) && l.ends_with("RUNNING")),
        "{table}"
    );
    let json = berth(a, &["tasks", "ls", "--format", "json"]).json();
    let pid = json[0]["pid"].as_u64().expect("a pid");
    assert!(pid > 0);
    assert_eq!(berth(a, &["tasks", "ls", "-q"]).ok(), format!("{t3}\n"));

    let ps = berth(a, &["tasks", "ps", &t3]).ok();
    assert!(ps.starts_with("PID"), "{ps}");
    assert!(ps.contains(&pid.to_string()), "{ps}");
    // The listings of a running container, parsed as JSON (issue 7: every listing).
    let ps = berth(a, &["tasks", "ps", "--format", "json", &t3]).json();
    assert!(
        ps.as_array()
            .expect("a JSON array")
            .iter()
            .any(|p| p["pid"].as_u64() == Some(pid)),
        "init pid {pid} not in {ps}"
    );
    let containers = berth(a, &["containers", "ls", "--format", "json"]).json();
    let c3 = containers
        .as_array()
        .expect("a JSON array")
        .iter()
        .find(|c| c["id"] == t3.as_str())
        .unwrap_or_else(|| panic!("{t3} not in {containers}"));
    assert_eq!(c3["image"], IMAGE, "{c3}");
    assert_eq!(c3["runtime"], "io.containerd.runc.v2", "{c3}");
    assert_eq!(c3["snapshot_key"], t3.as_str(), "{c3}");

    let out = berth(a, &["tasks", "exec", "--exec-id", "e1", &t3, "ls", "/"]).ok();
    assert!(out.lines().any(|l| l == "bin"), "{out}");
    let r = berth(
        a,
        &[
            "tasks",
            "exec",
            "--exec-id",
            "e2",
            &t3,
            "sh",
            "-c",
            "exit 3",
        ],
    );
    assert_eq!(r.code, 3, "{r:?}");

    berth(a, &["tasks", "pause", &t3]).ok();
    wait_status(a, &t3, "PAUSED");
    berth(a, &["tasks", "resume", &t3]).ok();
    wait_status(a, &t3, "RUNNING");

    let metrics = berth(a, &["tasks", "metrics", "--format", "json", &t3]).json();
    assert!(metrics.is_object(), "{metrics}");
    let table = berth(a, &["tasks", "metrics", &t3]).ok();
    assert!(table.contains("METRIC"), "{table}");

    let refused = berth(a, &["tasks", "delete", &t3]);
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .contains("task must be stopped before deletion: running: failed precondition"),
        "{}",
        refused.stderr
    );

    berth(a, &["tasks", "kill", "-s", "KILL", &t3]).ok();
    wait_status(a, &t3, "STOPPED");
    berth(a, &["tasks", "delete", &t3]).ok();
    assert_eq!(task_status(a, &t3), None);
    berth(a, &["containers", "rm", &t3]).ok();
    assert_eq!(berth(a, &["containers", "ls", "-q"]).ok(), "");

    let checkpoint = berth(a, &["tasks", "checkpoint", "nosuch"]);
    assert_eq!(checkpoint.code, 1);

    // Default kill signal and --force delete.
    berth(a, &["run", "-d", IMAGE, &t4, "sleep", "300"]).ok();
    wait_status(a, &t4, "RUNNING");
    berth(a, &["tasks", "delete", "-f", &t4]).ok();
    assert_eq!(task_status(a, &t4), None);
    berth(a, &["containers", "rm", &t4]).ok();
}

#[test]
fn containers_create_then_tasks_start() {
    if !require_root() || !require_binary("runc") {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();
    import(a, daemon.dir(), &[]);
    let [c1, c2] = ["cc-c1", "cc-c2"].map(uid);
    let _cleanup = RemoveContainers {
        address: a,
        ids: vec![c1.clone(), c2.clone()],
    };

    assert_eq!(
        berth(a, &["containers", "create", IMAGE, &c1, "true"]).ok(),
        ""
    );
    let info = berth(a, &["containers", "info", &c1]).json();
    assert_eq!(info["runtime"], "io.containerd.runc.v2");
    assert_eq!(info["snapshot_key"], c1.as_str());
    assert_eq!(info["image"], IMAGE);
    assert_eq!(
        info["labels"]["io.containerd.image.config.stop-signal"],
        "SIGTERM"
    );
    let spec = &info["spec"];
    assert_eq!(spec["ociVersion"], "1.0.2-dev");
    assert_eq!(spec["process"]["args"], serde_json::json!(["true"]));
    assert_eq!(spec["linux"]["cgroupsPath"], format!("/default/{c1}"));
    assert_eq!(
        spec["process"]["user"]["additionalGids"],
        serde_json::json!([0])
    );

    let r = berth(a, &["tasks", "start", &c1]);
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));
    assert_eq!(task_status(a, &c1), None, "start deletes the task");

    berth(
        a,
        &["containers", "create", IMAGE, &c2, "sh", "-c", "exit 4"],
    )
    .ok();
    assert_eq!(berth(a, &["tasks", "start", &c2]).code, 4);
    berth(a, &["containers", "rm", &c1, &c2]).ok();
}

#[test]
fn run_against_real_containerd() {
    if !require_root()
        || !require_binary("containerd")
        || !require_binary("containerd-shim-runc-v2")
        || !require_binary("runc")
    {
        return;
    }
    let ctd = Containerd::start();
    let a = ctd.address();
    import(a, ctd.dir(), &["--snapshotter", "native"]);
    let [x1, x2, x3] = ["ctd-x1", "ctd-x2", "ctd-x3"].map(uid);
    let _cleanup = RemoveContainers {
        address: a,
        ids: vec![x1.clone(), x2.clone(), x3.clone()],
    };

    let out = berth(
        a,
        &[
            "run",
            "--rm",
            "--snapshotter",
            "native",
            IMAGE,
            &x1,
            "echo",
            "hi",
        ],
    )
    .ok();
    assert_eq!(out, "hi\n");
    let r = berth(
        a,
        &[
            "run",
            "--rm",
            "--snapshotter",
            "native",
            IMAGE,
            &x2,
            "sh",
            "-c",
            "exit 7",
        ],
    );
    assert_eq!(r.code, 7, "{r:?}");

    berth(
        a,
        &[
            "run",
            "-d",
            "--snapshotter",
            "native",
            IMAGE,
            &x3,
            "sleep",
            "300",
        ],
    )
    .ok();
    wait_status(a, &x3, "RUNNING");
    let out = berth(a, &["tasks", "exec", "--exec-id", "e1", &x3, "echo", "in"]).ok();
    assert_eq!(out, "in\n");
    let metrics = berth(a, &["tasks", "metrics", "--format", "json", &x3]).json();
    assert!(metrics.is_object(), "{metrics}");
    berth(a, &["tasks", "kill", "-s", "KILL", &x3]).ok();
    wait_status(a, &x3, "STOPPED");
    berth(a, &["tasks", "delete", &x3]).ok();
    berth(a, &["containers", "rm", &x3]).ok();
    // The real ctr agrees nothing is left.
    let ctr = Command::new("/usr/bin/ctr")
        .arg("--address")
        .arg(a)
        .args(["containers", "ls", "-q"])
        .output()
        .expect("run ctr");
    assert_eq!(String::from_utf8_lossy(&ctr.stdout), "");
}
