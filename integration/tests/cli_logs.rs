//! Container logs end to end against a real berthd, shim and runc with the busybox test image:
//! `--log-uri file://` and `binary://` as ctr passes them (the shim writes there), `berth run
//! --log-driver json-file` (Docker's format, rotated at `max-size`) read back by `berth logs`,
//! and logs that go on while berthd restarts.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::berth_cli::{berth, berth_cmd, import_archive, RemoveContainers};
use berth_integration::image::build_busybox_image;
use berth_integration::{require_binary, require_root, Daemon};
use serde_json::Value;

const IMAGE: &str = "docker.io/library/bb:latest";
/// How long the tests wait for things.
const PATIENCE: Duration = Duration::from_secs(20);

/// Container ids unique to this test process (runc's state is host-global).
fn uid(base: &str) -> String {
    format!("lg-{base}-{}", std::process::id())
}

fn start() -> Option<Daemon> {
    if !require_root() || !require_binary("runc") {
        return None;
    }
    let daemon = Daemon::start();
    let img = build_busybox_image(daemon.dir(), IMAGE);
    import_archive(daemon.address(), &img.archive, &[]);
    Some(daemon)
}

/// Waits until task `id` is listed as STOPPED.
#[track_caller]
fn wait_stopped(a: &Path, id: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ls = berth(a, &["tasks", "ls", "--format", "json"]).json();
        let stopped = ls
            .as_array()
            .is_some_and(|l| l.iter().any(|t| t["id"] == id && t["status"] == "STOPPED"));
        if stopped {
            return;
        }
        assert!(Instant::now() < deadline, "{id} did not stop");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `check` until it holds; panics naming `what`.
#[track_caller]
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

fn label(a: &Path, id: &str, key: &str) -> Option<String> {
    let info = berth(a, &["containers", "info", id]).json();
    info["labels"][key].as_str().map(str::to_owned)
}

/// `berth logs ARGS...` stdout.
fn logs(a: &Path, args: &[&str]) -> String {
    let mut all = vec!["logs"];
    all.extend_from_slice(args);
    berth(a, &all).ok()
}

#[test]
fn json_file_tail_rotation_and_streams() {
    let Some(daemon) = start() else {
        return;
    };
    let a = daemon.address();
    let id = uid("json");
    let _remove = RemoveContainers {
        address: a,
        ids: vec![id.clone()],
    };
    let script =
        "i=0; while [ $i -lt 200 ]; do echo line $i; i=$((i+1)); done; sleep 1; echo oops >&2";
    berth(
        a,
        &[
            "run",
            "-d",
            "--log-driver",
            "json-file",
            "--log-opt",
            "max-size=2k",
            "--log-opt",
            "max-file=3",
            IMAGE,
            &id,
            "sh",
            "-c",
            script,
        ],
    )
    .ok();
    wait_stopped(a, &id);
    let path = PathBuf::from(label(a, &id, "berth/log-path").expect("the log path label"));
    assert!(
        path.starts_with(daemon.root()),
        "{} is under the daemon's root",
        path.display()
    );
    assert!(
        label(a, &id, "containerd.io/restart.loguri").is_some_and(|u| u.starts_with("binary://"))
    );

    // The logging binary may still be writing the last line when the task is stopped. (The two
    // streams are copied apart: the pause before `oops` keeps it after the stdout lines.)
    eventually("the stderr line in the log", || {
        fs::read_to_string(&path).is_ok_and(|t| t.contains("oops"))
    });

    // Docker's format, one object per line.
    let text = fs::read_to_string(&path).expect("read the log");
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("a JSON line");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["log", "stream", "time"], "{line}");
        assert!(
            v["log"].as_str().is_some_and(|l| l.ends_with('\n')),
            "{line}"
        );
        assert!(
            v["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
    }

    // Rotated at 2 KiB, three files kept: x, x.1, x.2 and no more.
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    assert!(rotated(1).exists() && rotated(2).exists(), "rotated files");
    assert!(!rotated(3).exists(), "max-file=3 keeps three files");
    for p in [path.clone(), rotated(1), rotated(2)] {
        let size = fs::metadata(&p).expect("stat").len();
        // Rotation happens before the write that finds the file full: one line over at most.
        assert!(size <= 2048 + 100, "{} is {size} bytes", p.display());
    }

    // --tail 5: the last five lines, the stderr one on stderr.
    let out = berth(a, &["logs", "--tail", "5", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "line 196\nline 197\nline 198\nline 199\n");
    assert_eq!(out.stderr, "oops\n");

    // Everything still kept: a run of lines ending at 199, older ones rotated away.
    let all = logs(a, &[&id]);
    let numbers: Vec<u32> = all
        .lines()
        .map(|l| l.strip_prefix("line ").expect("a line").parse().expect("n"))
        .collect();
    assert!(
        numbers.len() > 30 && numbers.len() < 200,
        "{} lines",
        numbers.len()
    );
    let first = numbers[0];
    assert_eq!(numbers, (first..200).collect::<Vec<_>>());

    // -t prefixes the time; --since in the future shows nothing; --until in the past neither.
    let stamped = logs(a, &["--tail", "2", "-t", &id]);
    let (time, line) = stamped.trim_end().split_once(' ').expect("time and line");
    assert!(time.ends_with('Z') && time.contains('T'), "{stamped}");
    assert_eq!(line, "line 199");
    assert_eq!(logs(a, &["--since", "2999-01-01T00:00:00Z", &id]), "");
    assert_eq!(logs(a, &["--until", "2000-01-01T00:00:00Z", &id]), "");
    assert_eq!(
        logs(a, &["--since", "1h", "--tail", "2", &id]),
        "line 199\n"
    );
}

/// Lines a `berth logs -f` prints, as they come.
struct Follow {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Follow {
    fn spawn(a: &Path, id: &str) -> Follow {
        let mut child = berth_cmd(a, &["logs", "-f", id])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn berth logs -f");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follow { child, lines }
    }

    /// Waits for a line for which `want` holds.
    #[track_caller]
    fn wait(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("berth logs -f printed no {what}");
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tick(line: &str) -> Option<u32> {
    line.strip_prefix("tick ")?.parse().ok()
}

#[test]
fn follow_and_logs_across_a_daemon_restart() {
    let Some(mut daemon) = start() else {
        return;
    };
    let a = daemon.address().to_owned();
    let id = uid("follow");
    let _remove = RemoveContainers {
        address: &a,
        ids: vec![id.clone()],
    };
    let script = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done";
    berth(
        &a,
        &[
            "run",
            "-d",
            "--log-driver",
            "json-file",
            IMAGE,
            &id,
            "sh",
            "-c",
            script,
        ],
    )
    .ok();
    eventually("a first tick", || !logs(&a, &[&id]).is_empty());
    let before = tick(logs(&a, &["--tail", "1", &id]).trim()).expect("a tick");

    // -f prints what is written after it started.
    let follow = Follow::spawn(&a, &id);
    follow.wait("tick written later", |l| {
        tick(l).is_some_and(|n| n > before + 3)
    });

    // The logger is the shim's child: logging goes on while berthd is away and after.
    let path = PathBuf::from(label(&a, &id, "berth/log-path").expect("the log path label"));
    daemon.stop();
    let len = fs::metadata(&path).expect("stat the log").len();
    eventually("lines written while berthd is down", || {
        fs::metadata(&path).is_ok_and(|m| m.len() > len)
    });
    daemon.restart();
    let after = tick(logs(&a, &["--tail", "1", &id]).trim()).expect("a tick");
    eventually("lines after the restart", || {
        tick(logs(&a, &["--tail", "1", &id]).trim()).is_some_and(|n| n > after)
    });

    // A follower ends once the task is gone for good.
    let mut follow = Follow::spawn(&a, &id);
    follow.wait("a tick", |l| tick(l).is_some());
    berth(&a, &["tasks", "kill", "-s", "KILL", &id]).ok();
    eventually("berth logs -f to end", || {
        follow.child.try_wait().expect("poll").is_some()
    });
}

#[test]
fn file_and_binary_log_uris_get_the_output() {
    let Some(daemon) = start() else {
        return;
    };
    let a = daemon.address();
    let [f, b] = ["file", "binary"].map(uid);
    let _remove = RemoveContainers {
        address: a,
        ids: vec![f.clone(), b.clone()],
    };

    let out = daemon.dir().join("logs/out.log");
    let uri = format!("file://{}", out.display());
    berth(
        a,
        &[
            "run",
            "-d",
            "--log-uri",
            &uri,
            IMAGE,
            &f,
            "sh",
            "-c",
            "echo hello; echo oops >&2",
        ],
    )
    .ok();
    wait_stopped(a, &f);
    eventually("the file to hold both streams", || {
        fs::read_to_string(&out).is_ok_and(|t| t.contains("hello\n") && t.contains("oops\n"))
    });
    assert_eq!(label(a, &f, "containerd.io/restart.loguri"), Some(uri));
    // `berth logs` prints a plain log file as it is.
    let printed = logs(a, &["--tail", "1", &f]);
    assert!(printed == "oops\n" || printed == "hello\n", "{printed}");

    // A logging binary as ctr users pass one: env, arguments, fds 3 and 4, ready on fd 5.
    let script = daemon.dir().join("logger.sh");
    let got = daemon.dir().join("binary.out");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec 5>&-\n{{ echo \"$CONTAINER_NAMESPACE $CONTAINER_ID $1=$2\"; \
             /bin/cat <&3; /bin/cat <&4; }} > {out}.tmp\n/bin/mv {out}.tmp {out}\n",
            out = got.display()
        ),
    )
    .expect("write the logger");
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let uri = format!("binary://{}?mode=test", script.display());
    berth(
        a,
        &[
            "run",
            "-d",
            "--log-uri",
            &uri,
            IMAGE,
            &b,
            "sh",
            "-c",
            "echo out; echo err >&2",
        ],
    )
    .ok();
    wait_stopped(a, &b);
    berth(a, &["tasks", "delete", &b]).ok();
    eventually("the logging binary's file", || got.exists());
    assert_eq!(
        fs::read_to_string(&got).expect("read"),
        format!("default {b} mode=test\nout\nerr\n")
    );
}

#[test]
fn bad_log_input_makes_nothing() {
    let Some(daemon) = start() else {
        return;
    };
    let a = daemon.address();
    let id = uid("bad");
    let cases: [(&[&str], &str); 6] = [
        (&["--log-uri", "gopher:///x"], "unknown scheme \"gopher\""),
        (&["--log-uri", "file://relative.log"], "must be absolute"),
        (&["--log-driver", "syslog"], "unknown log driver \"syslog\""),
        (
            &["--log-driver", "json-file", "--log-opt", "max-size=lots"],
            "invalid max-size",
        ),
        (
            &["--log-driver", "json-file", "--log-opt", "colour=blue"],
            "unknown log opt",
        ),
        (
            &["--log-driver", "json-file", "--log-uri", "file:///x"],
            "cannot be used together",
        ),
    ];
    for (flags, want) in cases {
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[IMAGE, &id, "true"]);
        let err = berth(a, &args).fails();
        assert!(err.contains(want), "{flags:?}: {err}");
        let listed = berth(a, &["containers", "ls", "-q"]).ok();
        assert!(listed.is_empty(), "{flags:?} left a container: {listed}");
        let snaps = berth(a, &["snapshots", "ls"]).ok();
        assert!(!snaps.contains(&id), "{flags:?} left a snapshot: {snaps}");
    }
    assert!(!daemon.root().join("berth/containers").exists());
    // No log to read is a clear error too.
    berth(a, &["run", "-d", IMAGE, &id, "true"]).ok();
    let _remove = RemoveContainers {
        address: a,
        ids: vec![id.clone()],
    };
    let err = berth(a, &["logs", &id]).fails();
    assert!(err.contains("--log-driver json-file"), "{err}");
}
