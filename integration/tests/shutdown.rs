//! Daemon shutdown as containerd does it: on SIGTERM the daemon ends its open streams and calls
//! at once (clients see Unavailable "transport is closing"), exits within a second whatever is
//! open, leaves running containers and their shims alone, and the next daemon reconnects to them
//! and to their stdio, so `ctr tasks attach` keeps receiving the container's output. Checked
//! with the real `ctr` against berthd and, as the reference, against containerd.

#![allow(clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::containerd::Containerd;
use berth_integration::image::build_busybox_image;
use berth_integration::{
    ctr_at, parse_table, require_binary, require_root, BackgroundCtr, Daemon, CTR_BIN,
};

const IMAGE: &str = "docker.io/library/bb:latest";
/// How long the daemon may take to exit after SIGTERM (the bound).
const EXIT_BOUND: Duration = Duration::from_secs(1);
/// A container that prints a numbered line five times a second, forever.
const TICKER: &str = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done";

/// The tick number of a `tick N` line.
fn tick(line: &str) -> Option<u64> {
    line.strip_prefix("tick ")?.trim().parse().ok()
}

/// A server under test: berthd or the reference containerd.
enum Server {
    Berthd(Daemon),
    Containerd(Containerd),
}

impl Server {
    fn address(&self) -> &Path {
        match self {
            Server::Berthd(d) => d.address(),
            Server::Containerd(c) => c.address(),
        }
    }

    fn dir(&self) -> &Path {
        match self {
            Server::Berthd(d) => d.dir(),
            Server::Containerd(c) => c.dir(),
        }
    }

    /// SIGTERM; returns how long the daemon took to exit.
    fn terminate(&mut self) -> Duration {
        match self {
            Server::Berthd(d) => {
                let start = Instant::now();
                let status = d.stop();
                let took = start.elapsed();
                assert!(status.success(), "berthd exited with {status}\n{}", d.log());
                took
            }
            Server::Containerd(c) => c.terminate(),
        }
    }

    fn start_again(&mut self) {
        match self {
            Server::Berthd(d) => d.restart(),
            Server::Containerd(c) => c.spawn(),
        }
    }

    fn ctr(&self, args: &[&str]) -> String {
        ctr_at(self.address(), args).ok().to_owned()
    }

    fn task_pid(&self, id: &str) -> String {
        let (_, rows) = parse_table(&self.ctr(&["tasks", "ls"]));
        let row = rows
            .iter()
            .find(|r| r["TASK"] == id)
            .unwrap_or_else(|| panic!("task {id} not listed: {rows:?}"));
        assert_eq!(row["STATUS"], "RUNNING", "{row:?}");
        row["PID"].clone()
    }
}

/// Removes the test's containers (at the socket, whichever daemon then serves it) even when the
/// test fails.
struct Cleanup(PathBuf, Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in &self.1 {
            let _ = ctr_at(&self.0, &["tasks", "kill", "-s", "KILL", id]);
        }
        thread::sleep(Duration::from_millis(300));
        for id in &self.1 {
            let _ = ctr_at(&self.0, &["tasks", "rm", "-f", id]);
            let _ = ctr_at(&self.0, &["containers", "rm", id]);
        }
    }
}

fn shutdown_case(mut server: Server) {
    let img = build_busybox_image(server.dir(), IMAGE);
    let archive = img.archive.to_str().expect("utf-8 path");
    server.ctr(&["images", "import", archive]);
    // runc's state directory is shared by every daemon on the host (both shims use
    // /run/containerd/runc/<namespace>), so the ids name the target as well as the process.
    let tag = match server {
        Server::Berthd(_) => "b",
        Server::Containerd(_) => "c",
    };
    let (ticker, waiter) = (
        format!("sd-ticker-{tag}-{}", std::process::id()),
        format!("sd-waiter-{tag}-{}", std::process::id()),
    );
    let address = server.address().to_owned();
    let _cleanup = Cleanup(address.clone(), vec![ticker.clone(), waiter.clone()]);

    server.ctr(&["run", "-d", IMAGE, &ticker, "sh", "-c", TICKER]);
    // Open calls: an event stream, and an attached `ctr run` waiting (Tasks.Wait) for a
    // container that never exits, printing its output.
    let events = BackgroundCtr::spawn(&address, &["events"]);
    let attached = BackgroundCtr::spawn(&address, &["run", IMAGE, &waiter, "sh", "-c", TICKER]);
    attached.wait_line("output of the attached run", |l| tick(l).is_some());
    let pids = (server.task_pid(&ticker), server.task_pid(&waiter));

    let took = server.terminate();
    assert!(
        took < EXIT_BOUND,
        "the daemon took {took:?} to exit with streams and a Wait open"
    );
    for (what, mut client) in [("ctr events", events), ("attached ctr run", attached)] {
        let (code, output) = client.wait_exit();
        assert_eq!(code, Some(1), "{what}: {output}");
        assert!(
            output.contains("code = Unavailable desc = transport is closing"),
            "{what} did not see the transport close: {output}"
        );
    }

    server.start_again();
    // The containers kept running through the restart, with the same processes.
    assert_eq!(server.task_pid(&ticker), pids.0);
    assert_eq!(server.task_pid(&waiter), pids.1);
    // And their stdio is still connected: attach sees the ticker go on.
    let attach = BackgroundCtr::spawn(&address, &["tasks", "attach", &ticker]);
    let first = tick(&attach.wait_line("a tick after the restart", |l| tick(l).is_some()))
        .expect("a tick line");
    attach.wait_line("the next ticks, live", |l| {
        tick(l).is_some_and(|n| n > first + 2)
    });
}

#[test]
fn sigterm_ends_open_calls_at_once_and_containers_keep_running_and_printing() {
    if !require_root() || !require_binary(CTR_BIN) || !require_binary("runc") {
        return;
    }
    shutdown_case(Server::Berthd(Daemon::start()));
}

#[test]
fn reference_containerd_shutdown() {
    if !require_root() || !require_binary(CTR_BIN) || !require_binary("containerd") {
        return;
    }
    shutdown_case(Server::Containerd(Containerd::start()));
}
