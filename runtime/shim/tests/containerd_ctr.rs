//! End-to-end: the real containerd 1.6 drives `containerd-shim-berth-v2` (as runtime
//! `io.containerd.berth.v2`) and the real `ctr` talks to that containerd. This checks the shim
//! against the reference daemon, not against our own assumptions (STYLE §5).
//!
//! Needs root, `runc`, `ctr`, `containerd` and `/bin/busybox`; without them each test prints
//! `skipped: <reason>`, and under `CI=true` panics naming what is missing. Each test starts its
//! own containerd on a private root, state and socket, and uses its own namespace, so tests can
//! run in parallel. No image is needed: `ctr run --rootfs DIR` runs a busybox directory.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const RUNTIME: &str = "io.containerd.berth.v2";
const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-berth-v2");
const CTR_TIMEOUT: Duration = Duration::from_secs(60);

fn skip(reason: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("required for the shim end-to-end tests: {reason}");
    }
    println!("skipped: {reason}");
    false
}

fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
}

/// The gate (containerd `testutil.RequiresRoot` plus the binaries).
fn ready() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return skip("not running as root");
    }
    for bin in ["runc", "ctr", "containerd"] {
        if !on_path(bin) {
            return skip(&format!("{bin} not found on PATH"));
        }
    }
    if !Path::new("/bin/busybox").is_file() {
        return skip("/bin/busybox not found");
    }
    true
}

/// What a command did.
#[derive(Debug)]
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn command");
    let mut out_pipe = child.stdout.take().expect("stdout piped");
    let mut err_pipe = child.stderr.take().expect("stderr piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("timed out after {limit:?}: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status.code().unwrap_or(-1),
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// A private containerd with our shim on its PATH; killed on drop.
struct Containerd {
    dir: TempDir,
    child: Child,
    namespace: String,
}

impl Containerd {
    fn start(name: &str) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("bshim")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let root = dir.path();
        let rootfs = root.join("rootfs");
        for sub in ["bin", "proc", "dev", "sys", "tmp", "etc", "run"] {
            std::fs::create_dir_all(rootfs.join(sub)).expect("mkdir rootfs");
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
        for applet in ["sh", "echo", "sleep", "true", "ls", "cat"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                .expect("symlink");
        }
        let config = format!(
            "version = 2\nroot = \"{r}/root\"\nstate = \"{r}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{r}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{r}/containerd.sock.ttrpc\"\n",
            r = root.display()
        );
        std::fs::write(root.join("config.toml"), config).expect("write config");
        let shim_dir = Path::new(SHIM).parent().expect("shim dir");
        let path = format!(
            "{}:{}",
            shim_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(root.join("containerd.log")).expect("log file");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(root.join("config.toml"))
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let daemon = Containerd {
            dir,
            child,
            namespace: format!("berth-shim-{name}-{}", std::process::id()),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while daemon.ctr(&["version"]).code != 0 {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up: {}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        daemon
    }

    fn address(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn rootfs(&self) -> String {
        self.dir.path().join("rootfs").display().to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.address())
            .args(["--namespace", &self.namespace])
            .args(args);
        run_with_timeout(&mut cmd, CTR_TIMEOUT)
    }

    /// `ctr run` of our runtime with a busybox rootfs; `extra` goes before the id.
    fn run(&self, extra: &[&str], id: &str, command: &[&str]) -> Output {
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
            out.code,
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

impl Containerd {
    /// Removes what runc leaves per namespace once its containers are gone: the (empty) state
    /// root and the namespace's parent cgroups.
    fn remove_namespace_leftovers(&self) {
        let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(&self.namespace));
        if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
            for controller in controllers.flatten() {
                let _ = std::fs::remove_dir(controller.path().join(&self.namespace));
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_namespace_leftovers();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn run_prints_and_exits_zero() {
    if !ready() {
        return;
    }
    let d = Containerd::start("hello");
    let out = d.run(&["--rm"], "t1", &["echo", "hello"]);
    assert_eq!(out.code, 0, "stderr: {}\n{}", out.stderr, d.log());
    assert_eq!(out.stdout, "hello\n");
    // stderr of the container reaches ctr's stderr too.
    let out = d.run(&["--rm"], "t2", &["sh", "-c", "echo oops >&2"]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(out.stderr.contains("oops"), "stderr: {}", out.stderr);
    // The containers are gone, and so are the shims' sockets.
    assert_eq!(d.ok(&["containers", "ls", "-q"]).trim(), "");
    let sockets = d.dir.path().join("s");
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
    let d = Containerd::start("exit");
    let out = d.run(&["--rm"], "t1", &["sh", "-c", "exit 7"]);
    assert_eq!(out.code, 7, "stderr: {}", out.stderr);
    // A missing binary is runc's error, passed through.
    let out = d.run(&["--rm"], "t2", &["/nonexistent"]);
    assert_ne!(out.code, 0);
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
    let d = Containerd::start("life");
    let out = d.run(&["-d"], "t3", &["sleep", "1000"]);
    assert_eq!(out.code, 0, "stderr: {}\n{}", out.stderr, d.log());
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
    assert_eq!(out.code, 3, "stderr: {}", out.stderr);

    d.ok(&["tasks", "pause", "t3"]);
    d.wait_status("t3", "PAUSED");
    let out = d.ctr(&["tasks", "pause", "t3"]);
    assert_ne!(out.code, 0);
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
    assert_ne!(out.code, 0);
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
    if !on_path("script") {
        println!("skipped: script(1) not found, needed to give ctr a console");
        return;
    }
    let d = Containerd::start("tty");
    let rootfs = d.rootfs();
    let line = format!(
        "ctr --address {} --namespace {} run -t --rm --runtime {RUNTIME} --env PATH=/bin --rootfs {rootfs} t1 sh -c 'tty; exit 5'",
        d.address().display(),
        d.namespace
    );
    let out = run_with_timeout(
        Command::new("script").args(["-qec", &line, "/dev/null"]),
        CTR_TIMEOUT,
    );
    assert_eq!(out.code, 5, "stdout: {} stderr: {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("/dev/pts/"), "stdout: {}", out.stdout);
}

/// `ctr events` in the background; `stop` returns what it printed.
struct EventWatch {
    child: Child,
    reader: std::thread::JoinHandle<String>,
}

impl EventWatch {
    fn start(d: &Containerd) -> EventWatch {
        let mut child = Command::new("ctr")
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
    let d = Containerd::start("events");
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
    assert_eq!(out.code, 137, "stderr: {}", out.stderr);
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
