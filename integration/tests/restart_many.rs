//! A crashed berthd restarted with many running containers (issue 20, part 5: the task manager
//! reconnects to the surviving shims many at once): every live task is listed running with its
//! pid and still answers exec, kill and delete; the tasks whose shim died while the daemon was
//! down are cleaned up (not listed, no process, no shim) while the others load beside them.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::image::build_busybox_image;
use berth_integration::procs::{arg_after, pid_alive, shim_processes};
use berth_integration::{ctr, ctr_at, parse_table, require_binary, require_root, Daemon};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Name of the test image.
const IMAGE: &str = "docker.io/library/bb:latest";
/// Running containers before the crash.
const CONTAINERS: usize = 20;
/// Of those, how many lose their shim while the daemon is down.
const SHIMS_KILLED: usize = 2;
/// How long an asynchronous effect (a status change, a process exit) may take.
const WAIT: Duration = Duration::from_secs(20);

/// Removes the containers on drop whatever state they are in; each step may fail.
struct Cleanup {
    address: PathBuf,
    ids: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = ctr_at(&self.address, &["tasks", "rm", "-f", id]);
            let _ = ctr_at(&self.address, &["containers", "rm", id]);
        }
    }
}

/// `ctr tasks ls` as task id → (pid, status).
fn tasks(daemon: &Daemon) -> BTreeMap<String, (String, String)> {
    let out = ctr(daemon, &["tasks", "ls"]);
    parse_table(out.ok())
        .1
        .into_iter()
        .map(|r| (r["TASK"].clone(), (r["PID"].clone(), r["STATUS"].clone())))
        .collect()
}

/// Waits until `check` holds, panicking with `what` after [`WAIT`].
#[track_caller]
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "{what} after {WAIT:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn twenty_running_tasks_survive_a_crash_and_stay_usable() {
    if !(require_root() && require_binary("runc")) {
        return;
    }
    let mut daemon = Daemon::start();
    let image = build_busybox_image(daemon.dir(), IMAGE);
    ctr(
        &daemon,
        &["images", "import", image.archive.to_str().expect("utf-8")],
    )
    .ok();
    // runc's state dir is host-global: ids carry the test's pid.
    let ids: Vec<String> = (0..CONTAINERS)
        .map(|i| format!("many-{}-{i:02}", std::process::id()))
        .collect();
    let _cleanup = Cleanup {
        address: daemon.address().to_owned(),
        ids: ids.clone(),
    };
    thread::scope(|s| {
        for lane in ids.chunks(5) {
            let address = daemon.address();
            s.spawn(move || {
                for id in lane {
                    ctr_at(address, &["run", "-d", IMAGE, id, "sleep", "600"]).ok();
                }
            });
        }
    });
    let before = tasks(&daemon);
    for id in &ids {
        assert_eq!(before[id].1, "RUNNING", "{id}: {before:?}");
    }
    let shims: BTreeMap<String, u32> = shim_processes(daemon.address())
        .into_iter()
        .filter_map(|(pid, argv)| Some((arg_after(&argv, "-id")?.to_owned(), pid)))
        .collect();
    assert_eq!(shims.len(), CONTAINERS, "one shim per container: {shims:?}");

    // The daemon crashes; two shims die while it is down (their sleeps live on, orphaned).
    daemon.kill9();
    let (dead, live) = ids.split_at(SHIMS_KILLED);
    for id in dead {
        let pid = i32::try_from(shims[id]).expect("pid fits in i32");
        kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill the shim");
    }
    for id in dead {
        wait_until(&format!("shim of {id} still there"), || {
            !pid_alive(shims[id])
        });
    }
    daemon.restart();

    // Loaded before the daemon serves: the first listing is complete.
    let after = tasks(&daemon);
    for id in live {
        assert_eq!(
            after.get(id),
            before.get(id),
            "{id} after the restart: {after:?}"
        );
    }
    for id in dead {
        assert!(
            !after.contains_key(id),
            "{id} listed with its shim dead: {after:?}"
        );
        let pid: u32 = before[id].0.parse().expect("pid");
        wait_until(&format!("process {pid} of {id} still alive"), || {
            !pid_alive(pid)
        });
        ctr(&daemon, &["containers", "rm", id]).ok();
    }

    // Each live task still takes an exec, a kill and a delete.
    for id in live {
        let word = format!("hello-{id}");
        let out = ctr(
            &daemon,
            &["tasks", "exec", "--exec-id", "e1", id, "echo", &word],
        );
        assert_eq!(out.ok(), format!("{word}\n"), "{out}");
        ctr(&daemon, &["tasks", "kill", "-s", "KILL", id]).ok();
    }
    for id in live {
        wait_until(&format!("{id} not stopped"), || {
            tasks(&daemon).get(id).is_some_and(|(_, s)| s == "STOPPED")
        });
        ctr(&daemon, &["tasks", "rm", id]).ok();
        ctr(&daemon, &["containers", "rm", id]).ok();
    }
    assert!(tasks(&daemon).is_empty(), "{:?}", tasks(&daemon));
    wait_until("shims left", || shim_processes(daemon.address()).is_empty());
}
