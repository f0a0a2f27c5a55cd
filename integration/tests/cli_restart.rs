//! Restart policies end to end: `berth run -d --restart POLICY` against a real berthd, whose
//! restart monitor (`io.containerd.internal.v1.restart`) runs the task again through the real
//! shim and runc, from the busybox test image.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::berth_cli::{berth, import_archive, RemoveContainers};
use berth_integration::image::build_busybox_image;
use berth_integration::{require_binary, require_root, Daemon};
use serde_json::Value;

const IMAGE: &str = "docker.io/library/bb:latest";
/// The bound for a killed `always` container to run again.
const RESTART_BOUND: Duration = Duration::from_secs(2);
/// How long the tests wait for things without a stated bound.
const PATIENCE: Duration = Duration::from_secs(20);
/// A short reconcile interval, so that "not restarted" is seen over many reconciles.
const FAST_INTERVAL: &str =
    "[plugins.\"io.containerd.internal.v1.restart\"]\ninterval = \"200ms\"\n";

/// Container ids unique to this test process (runc's state is host-global).
fn uid(base: &str) -> String {
    format!("rs-{base}-{}", std::process::id())
}

/// `(status, pid)` of task `id`, if listed.
fn task(a: &Path, id: &str) -> Option<(String, u64)> {
    let ls = berth(a, &["tasks", "ls", "--format", "json"]).json();
    ls.as_array()?.iter().find(|t| t["id"] == id).map(|t| {
        (
            t["status"].as_str().unwrap_or_default().to_owned(),
            t["pid"].as_u64().unwrap_or_default(),
        )
    })
}

/// The container's label `key`.
fn label(a: &Path, id: &str, key: &str) -> Option<String> {
    let info = berth(a, &["containers", "info", id]).json();
    info["labels"][key].as_str().map(str::to_owned)
}

/// Polls until `check` holds or `limit` has passed since `from`; panics naming `what`.
#[track_caller]
fn until<T>(what: &str, from: Instant, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(from.elapsed() < limit, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// The pid of the running task of `id`, once it runs with a pid other than `old`.
#[track_caller]
fn running_again(a: &Path, id: &str, old: u64, from: Instant, limit: Duration) -> u64 {
    until(&format!("{id} running again"), from, limit, || {
        match task(a, id) {
            Some((s, pid)) if s == "RUNNING" && pid != old && pid != 0 => Some(pid),
            _ => None,
        }
    })
}

/// `berth run -d --restart POLICY IMAGE ID CMD...`, which must succeed.
fn run_detached(a: &Path, id: &str, policy: &str, cmd: &[&str]) {
    let mut args = vec!["run", "-d", "--restart", policy, IMAGE, id];
    args.extend_from_slice(cmd);
    berth(a, &args).ok();
}

fn kill9(pid: u64) {
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -9 {pid}");
}

fn start(config: Option<&str>) -> Option<Daemon> {
    if !require_root() || !require_binary("runc") {
        return None;
    }
    let daemon = Daemon::start_with(config, &[]);
    let img = build_busybox_image(daemon.dir(), IMAGE);
    import_archive(daemon.address(), &img.archive, &[]);
    Some(daemon)
}

#[test]
fn always_runs_again_after_sigkill_and_across_a_daemon_restart() {
    let Some(mut daemon) = start(None) else {
        return;
    };
    let a = daemon.address().to_owned();
    let id = uid("always");
    let _remove = RemoveContainers {
        address: &a,
        ids: vec![id.clone()],
    };
    run_detached(&a, &id, "always", &["sleep", "1000"]);
    assert_eq!(
        label(&a, &id, "containerd.io/restart.policy").as_deref(),
        Some("always")
    );
    assert_eq!(
        label(&a, &id, "containerd.io/restart.status").as_deref(),
        Some("running")
    );
    let (status, first) = task(&a, &id).expect("the task is listed");
    assert_eq!(status, "RUNNING");

    // A crash: the monitor sees the exit and starts the task again.
    kill9(first);
    let second = running_again(&a, &id, first, Instant::now(), RESTART_BOUND);
    assert_eq!(
        label(&a, &id, "containerd.io/restart.count").as_deref(),
        Some("1")
    );

    // berthd restarts; the task lives on in its shim, and the monitor still watches it.
    daemon.restart();
    assert_eq!(task(&a, &id), Some(("RUNNING".to_owned(), second)));
    kill9(second);
    let third = running_again(&a, &id, second, Instant::now(), RESTART_BOUND);
    assert_eq!(
        label(&a, &id, "containerd.io/restart.count").as_deref(),
        Some("2")
    );

    // Killed while berthd is down: the monitor's reconcile at start runs it again.
    daemon.stop();
    kill9(third);
    daemon.restart();
    running_again(&a, &id, third, Instant::now(), PATIENCE);
    assert_eq!(
        label(&a, &id, "containerd.io/restart.count").as_deref(),
        Some("3")
    );
}

#[test]
fn on_failure_2_stops_after_two_restarts() {
    let Some(daemon) = start(Some(FAST_INTERVAL)) else {
        return;
    };
    let a = daemon.address();
    let id = uid("onfail");
    let _remove = RemoveContainers {
        address: a,
        ids: vec![id.clone()],
    };
    run_detached(a, &id, "on-failure:2", &["sh", "-c", "sleep 0.3; exit 3"]);
    assert_eq!(
        label(a, &id, "containerd.io/restart.policy").as_deref(),
        Some("on-failure:2")
    );
    let from = Instant::now();
    loop {
        let count = label(a, &id, "containerd.io/restart.count");
        let status = task(a, &id).map(|(s, _)| s);
        if count.as_deref() == Some("2") && status.as_deref() == Some("STOPPED") {
            break;
        }
        assert!(
            from.elapsed() < PATIENCE,
            "not two restarts then stopped within {PATIENCE:?}: count {count:?}, task {status:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    // Many reconciles later (200 ms interval) it is still stopped, restarted twice.
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        label(a, &id, "containerd.io/restart.count").as_deref(),
        Some("2")
    );
    let ls = berth(a, &["tasks", "ls", "--format", "json"]).json();
    let t = ls
        .as_array()
        .and_then(|l| l.iter().find(|t| t["id"] == id.as_str()).cloned())
        .expect("the stopped task is listed");
    assert_eq!(
        (t["status"].as_str(), t["exit_status"].as_u64()),
        (Some("STOPPED"), Some(3))
    );

    // A clean exit is not a failure: never restarted.
    let ok = uid("onfail-ok");
    let _remove_ok = RemoveContainers {
        address: a,
        ids: vec![ok.clone()],
    };
    run_detached(a, &ok, "on-failure", &["true"]);
    until("the clean exit", Instant::now(), PATIENCE, || {
        (task(a, &ok)?.0 == "STOPPED").then_some(())
    });
    thread::sleep(Duration::from_secs(1));
    assert_eq!(task(a, &ok).map(|t| t.0).as_deref(), Some("STOPPED"));
    assert_eq!(label(a, &ok, "containerd.io/restart.count"), None);
}

#[test]
fn unless_stopped_stays_stopped_after_a_user_kill() {
    let Some(daemon) = start(Some(FAST_INTERVAL)) else {
        return;
    };
    let a = daemon.address();
    let id = uid("unless");
    let _remove = RemoveContainers {
        address: a,
        ids: vec![id.clone()],
    };
    run_detached(a, &id, "unless-stopped", &["sleep", "1000"]);
    assert_eq!(
        label(a, &id, "containerd.io/restart.explicitly-stopped").as_deref(),
        Some("false")
    );
    let (_, first) = task(a, &id).expect("listed");
    // A crash is restarted...
    kill9(first);
    let second = running_again(a, &id, first, Instant::now(), PATIENCE);

    // ...a user's kill is not.
    berth(a, &["tasks", "kill", "-s", "SIGKILL", &id]).ok();
    assert_eq!(
        label(a, &id, "containerd.io/restart.explicitly-stopped").as_deref(),
        Some("true")
    );
    until("the killed task stopped", Instant::now(), PATIENCE, || {
        (task(a, &id)?.0 == "STOPPED").then_some(())
    });
    thread::sleep(Duration::from_secs(2));
    let (status, pid) = task(a, &id).expect("still listed");
    assert_eq!(status, "STOPPED");
    assert_eq!(pid, second);
    assert_eq!(
        label(a, &id, "containerd.io/restart.count").as_deref(),
        Some("1")
    );
}

#[test]
fn bad_restart_input_makes_nothing() {
    let Some(daemon) = start(None) else {
        return;
    };
    let a = daemon.address();
    let id = uid("bad");
    let cases: [(&[&str], &str); 4] = [
        (
            &["--restart", "sometimes"],
            "restart policy \"sometimes\" not supported",
        ),
        (&["--restart", "on-failure:x"], "invalid max retry count: x"),
        (&["--restart", "always:3"], "not support max retry count"),
        (&["--restart", "always", "--rm"], "--rm"),
    ];
    for (flags, want) in cases {
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[IMAGE, &id, "true"]);
        if flags.contains(&"--rm") {
            args.retain(|a| *a != "-d");
        }
        let err = berth(a, &args).fails();
        assert!(err.contains(want), "{flags:?}: {err}");
        let listed = berth(a, &["containers", "ls", "-q"]).ok();
        assert!(
            !listed.lines().any(|l| l == id),
            "{flags:?} left {id}: {listed}"
        );
        let snaps = berth(a, &["snapshots", "ls"]).ok();
        assert!(!snaps.contains(&id), "{flags:?} left a snapshot: {snaps}");
    }
    let err = berth(a, &["run", "--restart", "always", IMAGE, &id, "true"]).fails();
    assert!(err.contains("--detach"), "{err}");
    assert!(berth(a, &["containers", "ls", "-q"]).ok().is_empty());
}

/// The monitor's entry in `plugins ls --format json`.
fn restart_plugin(a: &Path) -> Value {
    let all = berth(a, &["plugins", "ls", "--format", "json"]).json();
    all.as_array()
        .and_then(|l| {
            l.iter()
                .find(|p| p["type"] == "io.containerd.internal.v1" && p["id"] == "restart")
                .cloned()
        })
        .expect("the restart plugin is listed")
}

#[test]
fn the_monitor_is_containerds_plugin_with_its_config() {
    let Some(daemon) = start(Some(FAST_INTERVAL)) else {
        return;
    };
    let p = restart_plugin(daemon.address());
    assert_eq!(p["status"], "ok", "{p}");
    assert_eq!(p["exports"]["Interval"], "200ms", "{p}");
    assert_eq!(
        p["capabilities"],
        serde_json::json!(["no", "always", "on-failure", "unless-stopped"])
    );
    drop(daemon);
    let bad = Daemon::start_with(
        Some("[plugins.\"io.containerd.internal.v1.restart\"]\ninterval = \"soon\"\n"),
        &[],
    );
    let p = restart_plugin(bad.address());
    assert_eq!(p["status"], "error", "{p}");
    assert!(
        p["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("interval")),
        "{p}"
    );
}
