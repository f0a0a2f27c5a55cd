//! End-to-end: the real containerd 1.6 drives `containerd-shim-berth-v2` (as runtime
//! `io.containerd.berth.v2`) and the real `ctr` talks to that containerd. This checks the shim
//! against the reference daemon, not against our own assumptions (STYLE §5).
//!
//! Needs root, `runc`, `ctr`, `containerd`, `/bin/busybox` and the shim built next to `berthd`
//! (`cargo build -p berthd -p berth-shim`), where the harness's containerd finds it on its
//! `PATH`; without them each test prints `skipped: <reason>`, and under `CI=true` panics naming
//! what is missing. Each test starts its own containerd on a private root, state and socket, and
//! uses its own namespace, so tests can run in parallel. No image is needed: `ctr run --rootfs
//! DIR` runs a busybox directory.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_integration::containerd::Containerd;
use berth_integration::{
    berthd_bin, require_binary, require_root, run_with_timeout, CmdOutput, CTR_BIN, CTR_TIMEOUT,
};
use tempfile::TempDir;

const RUNTIME: &str = "io.containerd.berth.v2";
const SHIM: &str = "containerd-shim-berth-v2";

/// The gate (containerd `testutil.RequiresRoot` plus the binaries).
fn ready() -> bool {
    require_root()
        && ["runc", CTR_BIN, "containerd", "/bin/busybox"]
            .into_iter()
            .all(require_binary)
        && require_binary(
            berthd_bin()
                .with_file_name(SHIM)
                .to_str()
                .expect("utf-8 shim path"),
        )
}

/// The exit code of a command (-1 when it was killed by a signal).
fn code(out: &CmdOutput) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// A private containerd (the harness's, with the built binaries first on its `PATH`), a busybox
/// rootfs and a namespace of this test's own.
struct Fixture {
    ctd: Containerd,
    rootfs: TempDir,
    namespace: String,
}

impl Fixture {
    fn start(name: &str) -> Fixture {
        let rootfs = tempfile::Builder::new()
            .prefix("bshim")
            .tempdir_in("/tmp")
            .expect("tempdir");
        for sub in ["bin", "proc", "dev", "sys", "tmp", "etc", "run"] {
            std::fs::create_dir_all(rootfs.path().join(sub)).expect("mkdir rootfs");
        }
        let bin = rootfs.path().join("bin");
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
        for applet in ["sh", "echo", "sleep", "true", "ls", "cat"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("symlink");
        }
        Fixture {
            ctd: Containerd::start(),
            rootfs,
            namespace: format!("berth-shim-{name}-{}", std::process::id()),
        }
    }

    fn address(&self) -> PathBuf {
        self.ctd.address().to_path_buf()
    }

    fn rootfs(&self) -> String {
        self.rootfs.path().display().to_string()
    }

    fn log(&self) -> String {
        self.ctd.log()
    }

    fn ctr(&self, args: &[&str]) -> CmdOutput {
        let mut cmd = Command::new(CTR_BIN);
        cmd.arg("--address")
            .arg(self.address())
            .args(["--namespace", &self.namespace])
            .args(args);
        run_with_timeout(cmd, CTR_TIMEOUT)
    }

    /// `ctr run` of our runtime with a busybox rootfs; `extra` goes before the id.
    fn run(&self, extra: &[&str], id: &str, command: &[&str]) -> CmdOutput {
        let rootfs = self.rootfs();
        let mut args = vec!["run", "--runtime", RUNTIME, "--env", "PATH=/bin"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--rootfs", &rootfs, id]);
        args.extend_from_slice(command);
        self.ctr(&args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert_eq!(
            code(&out),
            0,
            "ctr {args:?} failed: {}\n--- containerd log ---\n{}",
            out.stderr,
            self.log()
        );
        out.stdout
    }

    fn task_status(&self, id: &str) -> Option<String> {
        let list = self.ok(&["tasks", "ls"]);
        list.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| cols.get(2).map(|s| (*s).to_owned()))?
        })
    }

    fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.task_status(id);
            if status.as_deref() == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} is {status:?}, want {want}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Fixture {
    /// Removes what runc leaves per namespace once its containers are gone: the (empty) state
    /// root and the namespace's parent cgroups. containerd itself stops when `ctd` drops.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(&self.namespace));
        if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
            for controller in controllers.flatten() {
                let _ = std::fs::remove_dir(controller.path().join(&self.namespace));
            }
        }
    }
}

#[test]
fn run_prints_and_exits_zero() {
    if !ready() {
        return;
    }
    let d = Fixture::start("hello");
    let out = d.run(&["--rm"], "t1", &["echo", "hello"]);
    assert_eq!(code(&out), 0, "stderr: {}\n{}", out.stderr, d.log());
    assert_eq!(out.stdout, "hello\n");
    // stderr of the container reaches ctr's stderr too.
    let out = d.run(&["--rm"], "t2", &["sh", "-c", "echo oops >&2"]);
    assert_eq!(code(&out), 0, "stderr: {}", out.stderr);
    assert!(out.stderr.contains("oops"), "stderr: {}", out.stderr);
    // The containers are gone, and so are the shims' sockets.
    assert_eq!(d.ok(&["containers", "ls", "-q"]).trim(), "");
    let sockets = d.ctd.dir().join("s");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&sockets).map(|r| r.count()).unwrap_or(0) > 0 {
        assert!(
            Instant::now() < deadline,
            "shim sockets left in {}: {:?}\n{}",
            sockets.display(),
            std::fs::read_dir(&sockets).map(|r| r.flatten().map(|e| e.path()).collect::<Vec<_>>()),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn exit_status_propagates() {
    if !ready() {
        return;
    }
    let d = Fixture::start("exit");
    let out = d.run(&["--rm"], "t1", &["sh", "-c", "exit 7"]);
    assert_eq!(code(&out), 7, "stderr: {}", out.stderr);
    // A missing binary is runc's error, passed through.
    let out = d.run(&["--rm"], "t2", &["/nonexistent"]);
    assert_ne!(code(&out), 0);
    assert!(
        out.stderr.contains("OCI runtime create failed"),
        "stderr: {}",
        out.stderr
    );
    let _ = d.ctr(&["containers", "rm", "t2"]);
}

#[test]
fn detached_task_lifecycle() {
    if !ready() {
        return;
    }
    let d = Fixture::start("life");
    let out = d.run(&["-d"], "t3", &["sleep", "1000"]);
    assert_eq!(code(&out), 0, "stderr: {}\n{}", out.stderr, d.log());
    d.wait_status("t3", "RUNNING");

    let ls = d.ok(&["tasks", "exec", "--exec-id", "e1", "t3", "ls", "/"]);
    assert!(ls.lines().any(|l| l == "bin"), "ls /: {ls}");
    let out = d.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e2",
        "t3",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(code(&out), 3, "stderr: {}", out.stderr);

    d.ok(&["tasks", "pause", "t3"]);
    d.wait_status("t3", "PAUSED");
    let out = d.ctr(&["tasks", "pause", "t3"]);
    assert_ne!(code(&out), 0);
    assert!(
        out.stderr.contains("cannot pause a paused container"),
        "{}",
        out.stderr
    );
    d.ok(&["tasks", "resume", "t3"]);
    d.wait_status("t3", "RUNNING");

    let metrics = d.ok(&["tasks", "metrics", "t3"]);
    assert!(
        metrics.contains("memory.usage_in_bytes") || metrics.contains("memory.usage"),
        "metrics: {metrics}"
    );
    assert!(metrics.contains("pids.current"), "metrics: {metrics}");

    let ps = d.ok(&["tasks", "ps", "t3"]);
    assert!(ps.lines().count() >= 2, "ps: {ps}");

    d.ok(&["tasks", "kill", "-s", "SIGKILL", "t3"]);
    d.wait_status("t3", "STOPPED");
    let out = d.ctr(&["tasks", "kill", "t3"]);
    assert_ne!(code(&out), 0);
    assert!(
        out.stderr.contains("process already finished"),
        "{}",
        out.stderr
    );
    d.ok(&["tasks", "delete", "t3"]);
    assert_eq!(d.task_status("t3"), None);
    d.ok(&["containers", "rm", "t3"]);
}

#[test]
fn terminal_run() {
    if !ready() {
        return;
    }
    // script(1) gives ctr a console.
    if !require_binary("script") {
        return;
    }
    let d = Fixture::start("tty");
    let rootfs = d.rootfs();
    let line = format!(
        "{CTR_BIN} --address {} --namespace {} run -t --rm --runtime {RUNTIME} --env PATH=/bin --rootfs {rootfs} t1 sh -c 'tty; exit 5'",
        d.address().display(),
        d.namespace
    );
    let mut script = Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    let out = run_with_timeout(script, CTR_TIMEOUT);
    assert_eq!(
        code(&out),
        5,
        "stdout: {} stderr: {}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("/dev/pts/"), "stdout: {}", out.stdout);
}

/// `ctr events` in the background; `stop` returns what it printed.
struct EventWatch {
    child: Child,
    reader: std::thread::JoinHandle<String>,
}

impl EventWatch {
    fn start(d: &Fixture) -> EventWatch {
        let mut child = Command::new(CTR_BIN)
            .arg("--address")
            .arg(d.address())
            .arg("events")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ctr events");
        let mut out = child.stdout.take().expect("stdout piped");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        // Let the subscription reach the daemon before anything happens.
        std::thread::sleep(Duration::from_millis(500));
        EventWatch { child, reader }
    }

    fn stop(mut self) -> String {
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reader.join().expect("events reader")
    }
}

#[test]
fn task_events_and_oom() {
    if !ready() {
        return;
    }
    let d = Fixture::start("events");
    let watch = EventWatch::start(&d);
    // Doubling a shell variable under a 16 MiB limit ends in the OOM killer.
    let out = d.run(
        &["--rm", "--memory-limit", "16777216"],
        "oom1",
        &[
            "sh",
            "-c",
            "a=xxxxxxxxxxxxxxxx; while true; do a=$a$a; done",
        ],
    );
    assert_eq!(code(&out), 137, "stderr: {}", out.stderr);
    let events = watch.stop();
    let topics: Vec<&str> = events
        .lines()
        .filter(|l| l.contains(&d.namespace) && l.contains("/tasks/"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("/tasks/")))
        .collect();
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/oom",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        assert!(topics.contains(&topic), "no {topic} in {events}");
    }
    let pos = |t: &str| topics.iter().position(|x| *x == t);
    assert!(
        pos("/tasks/start") < pos("/tasks/exit"),
        "order: {topics:?}"
    );
    assert!(
        pos("/tasks/exit") < pos("/tasks/delete"),
        "order: {topics:?}"
    );
    assert!(
        events.contains("\"exit_status\":137"),
        "exit status missing: {events}"
    );
}
