//! End-to-end tests of the shim's semantics where `containerd-shim-runc-v2` sets the rule
//! (issue 12, item 3): killing the rest of a container without a PID namespace of its own when
//! its init exits, an exec whose request asks for a terminal, resizing a process without one,
//! and rootfs of up to 128 layers.
//!
//! Each test starts its own `berthd` (Berth's shim as the default runtime) and, where the rule
//! comes from containerd, runs the same case against a real containerd with its runc shim
//! (`reference_containerd_*`, STYLE.md §5): a case failing there is a wrong test.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::containerd::Containerd;
use berth_integration::image::build_busybox_image;
use berth_integration::layers::{base_layer_entries, build_image_of_layers, RawEntry};
use berth_integration::{
    channel_at, client_at, namespaced, require_binary, require_root, run_with_timeout, CmdOutput,
    Daemon, CTR_BIN, CTR_TIMEOUT,
};
use berth_proto::containerd::services::tasks::v1::tasks_client::TasksClient;
use berth_proto::containerd::services::tasks::v1::{
    DeleteProcessRequest, ExecProcessRequest, ResizePtyRequest, StartRequest, WaitRequest,
};

/// The namespace ctr uses when none is chosen.
const NS: &str = "default";

/// The busybox test image.
const IMAGE: &str = "docker.io/library/bb:latest";

/// How long to wait for an asynchronous effect (a process gone, an exit).
const WAIT: Duration = Duration::from_secs(20);

/// The type URL containerd's clients give an OCI process spec.
const PROCESS_SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// The daemon a case runs against.
enum Server {
    Berthd(Daemon),
    /// The reference: the cases must hold on containerd too (STYLE.md §5).
    Containerd(Containerd),
}

impl Server {
    /// `berthd` with its default config (`io.containerd.runc.v2` → Berth's shim); `None` when a
    /// prerequisite is missing.
    fn berthd() -> Option<Self> {
        prerequisites().then(|| Self::Berthd(Daemon::start()))
    }

    /// A real containerd with its runc shim; `None` when a prerequisite is missing.
    fn containerd() -> Option<Self> {
        (prerequisites()
            && require_binary("containerd")
            && require_binary("containerd-shim-runc-v2"))
        .then(|| Self::Containerd(Containerd::start()))
    }

    fn address(&self) -> &Path {
        match self {
            Self::Berthd(d) => d.address(),
            Self::Containerd(c) => c.address(),
        }
    }

    fn dir(&self) -> &Path {
        match self {
            Self::Berthd(d) => d.dir(),
            Self::Containerd(c) => c.dir(),
        }
    }

    /// Runs `ctr` against the daemon.
    fn ctr(&self, args: &[&str]) -> CmdOutput {
        client_at(Path::new(CTR_BIN), self.address(), args)
    }

    /// Builds and imports the busybox test image.
    fn import_busybox(&self) {
        let img = build_busybox_image(self.dir(), IMAGE);
        let archive = img.archive.to_str().expect("utf-8 archive path");
        self.ctr(&["images", "import", archive]).ok();
    }
}

/// Root, `ctr` and `runc`.
fn prerequisites() -> bool {
    require_root() && require_binary(CTR_BIN) && require_binary("runc")
}

impl Server {
    /// A container id unique to this test process and daemon, as runc's state directory is
    /// host-global and a case runs against berthd and containerd at the same time.
    fn unique(&self, base: &str) -> String {
        let daemon = match self {
            Self::Berthd(_) => "b",
            Self::Containerd(_) => "c",
        };
        format!("{base}-{daemon}{}", std::process::id())
    }
}

/// Kills and removes a container on drop, whatever state it is in.
struct Cleanup<'a> {
    server: &'a Server,
    id: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.server.ctr(&["tasks", "kill", "-s", "KILL", &self.id]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.server.ctr(&["tasks", "delete", &self.id]).success()
            && self.server.ctr(&["tasks", "ls"]).stdout.contains(&self.id)
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(200));
        }
        let _ = self.server.ctr(&["containers", "rm", &self.id]);
    }
}

/// `run -d IMAGE <id> sleep 300`, removed on drop of the returned guard.
#[track_caller]
fn run_sleeper<'a>(server: &'a Server, base: &str) -> Cleanup<'a> {
    let id = server.unique(base);
    let guard = Cleanup {
        server,
        id: id.clone(),
    };
    server.ctr(&["run", "-d", IMAGE, &id, "sleep", "300"]).ok();
    guard
}

/// Pids of the live (not zombie) processes whose command line is exactly `cmdline`.
fn live_processes(cmdline: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // A process may exit while we look: then it is not live.
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Field 3, after the parenthesised command name, is the state.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            if matches!(state, Some("Z" | "X") | None) {
                return false;
            }
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                let args: Vec<&[u8]> = raw.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
                args.join(&b' ') == cmdline.as_bytes()
            })
        })
        .collect()
}

/// Waits until `tasks ls` shows task `id` STOPPED.
#[track_caller]
fn wait_stopped(server: &Server, id: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = server.ctr(&["tasks", "ls"]);
        let stopped = out
            .ok()
            .lines()
            .any(|l| l.split_whitespace().next() == Some(id) && l.ends_with("STOPPED"));
        if stopped {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not STOPPED after {WAIT:?}: {out}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Case: a container in the host's PID namespace starts a background `sleep`, and its init
/// exits; by the time the task shows as stopped the `sleep` is gone too, before any delete
/// (runc's delete would kill it anyway, hiding the difference).
fn init_exit_kills_the_rest_case(server: &Server) {
    server.import_busybox();
    let id = server.unique("hostpid");
    let _cleanup = Cleanup {
        server,
        id: id.clone(),
    };
    // A duration unique to this test and daemon names the orphan.
    let daemon = match server {
        Server::Berthd(_) => 1,
        Server::Containerd(_) => 2,
    };
    let sleeper = format!("sleep 9{daemon}{}", std::process::id());
    let script = format!("{sleeper} </dev/null >/dev/null 2>&1 & exit 0");
    // The PID namespace of this test (the host's); `/proc/1` may not be readable in a sandbox.
    let host_pid_ns = format!("pid:/proc/{}/ns/pid", std::process::id());
    server
        .ctr(&[
            "run",
            "-d",
            "--with-ns",
            &host_pid_ns,
            IMAGE,
            &id,
            "sh",
            "-c",
            &script,
        ])
        .ok();
    wait_stopped(server, &id);
    // The sleep was forked before init exited; give a survivor time to show up.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let left = live_processes(&sleeper);
        if !left.is_empty() {
            for pid in &left {
                // Do not leave it behind for the next test.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(*pid).expect("pid fits i32")),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            panic!("`{sleeper}` (pids {left:?}) outlived the init of its container");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn init_exit_kills_the_rest_of_a_container_in_the_host_pid_namespace() {
    if let Some(server) = Server::berthd() {
        init_exit_kills_the_rest_case(&server);
    }
}

#[test]
fn reference_containerd_init_exit_kills_the_rest() {
    if let Some(server) = Server::containerd() {
        init_exit_kills_the_rest_case(&server);
    }
}

/// Case: `ResizePty` of a process that has no terminal succeeds and changes nothing.
fn resize_without_terminal_case(server: &Server) {
    server.import_busybox();
    let guard = run_sleeper(server, "resize");
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async {
        let mut tasks = TasksClient::new(channel_at(server.address()).await);
        tasks
            .resize_pty(namespaced(
                NS,
                ResizePtyRequest {
                    container_id: guard.id.clone(),
                    exec_id: String::new(),
                    width: 100,
                    height: 40,
                },
            ))
            .await
            .unwrap_or_else(|e| panic!("ResizePty of a process without a terminal: {e:?}"));
    });
}

#[test]
fn resize_pty_of_a_process_without_a_terminal_is_a_no_op() {
    if let Some(server) = Server::berthd() {
        resize_without_terminal_case(&server);
    }
}

#[test]
fn reference_containerd_resize_pty_without_a_terminal() {
    if let Some(server) = Server::containerd() {
        resize_without_terminal_case(&server);
    }
}

/// Case: an exec whose request asks for a terminal gets one even though its process spec says
/// `"terminal": false` (containerd sets the spec's from the request), and 1 MiB written to it
/// arrives complete, followed by the last line.
fn exec_request_terminal_case(server: &Server) {
    server.import_busybox();
    let guard = run_sleeper(server, "exectty");
    let fifo_dir = tempfile::tempdir_in(server.dir()).expect("fifo dir");
    let stdout = fifo_dir.path().join("stdout");
    nix::unistd::mkfifo(&stdout, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    // Opening a FIFO for reading blocks until the shim opens it for writing.
    let reader = {
        let stdout = stdout.clone();
        thread::spawn(move || fs::read(stdout).expect("read the exec's output"))
    };
    let spec = serde_json::json!({
        "args": ["sh", "-c", format!(
            "tty; [ -t 1 ] && echo stdout-is-a-tty; \
             busybox head -c {TTY_OUTPUT} /dev/zero | busybox tr '\\000' x; echo; echo END"
        )],
        "cwd": "/",
        "env": ["PATH=/bin"],
        "user": {"uid": 0, "gid": 0},
        "terminal": false,
    });
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let status = rt.block_on(async {
        let mut tasks = TasksClient::new(channel_at(server.address()).await);
        let exec_id = "tty1".to_owned();
        tasks
            .exec(namespaced(
                NS,
                ExecProcessRequest {
                    container_id: guard.id.clone(),
                    stdin: String::new(),
                    stdout: stdout.to_string_lossy().into_owned(),
                    stderr: String::new(),
                    terminal: true,
                    spec: Some(prost_types::Any {
                        type_url: PROCESS_SPEC_TYPE.into(),
                        value: serde_json::to_vec(&spec).expect("spec json"),
                    }),
                    exec_id: exec_id.clone(),
                },
            ))
            .await
            .unwrap_or_else(|e| panic!("Exec: {e:?}"));
        let wait = {
            let mut tasks = tasks.clone();
            let req = WaitRequest {
                container_id: guard.id.clone(),
                exec_id: exec_id.clone(),
            };
            tokio::spawn(async move { tasks.wait(namespaced(NS, req)).await })
        };
        tasks
            .start(namespaced(
                NS,
                StartRequest {
                    container_id: guard.id.clone(),
                    exec_id: exec_id.clone(),
                },
            ))
            .await
            .unwrap_or_else(|e| panic!("Start of an exec asking for a terminal: {e:?}"));
        let status = tokio::time::timeout(WAIT, wait)
            .await
            .expect("the exec exits")
            .expect("wait task")
            .expect("Wait")
            .into_inner()
            .exit_status;
        tasks
            .delete_process(namespaced(
                NS,
                DeleteProcessRequest {
                    container_id: guard.id.clone(),
                    exec_id,
                },
            ))
            .await
            .expect("DeleteProcess");
        status
    });
    let output = String::from_utf8_lossy(&reader.join().expect("reader thread")).into_owned();
    assert_eq!(status, 0, "{output}");
    let head = &output[..output.len().min(300)];
    assert!(
        output.contains("/dev/pts/") && output.contains("stdout-is-a-tty"),
        "the exec got no terminal: {head:?}"
    );
    let xs = output.bytes().filter(|b| *b == b'x').count();
    assert_eq!(xs, TTY_OUTPUT, "TTY output incomplete: {head:?}");
    assert!(output.contains("END"), "the last line is missing");
}

#[test]
fn exec_request_terminal_overrides_the_process_spec() {
    if let Some(server) = Server::berthd() {
        exec_request_terminal_case(&server);
    }
}

#[test]
fn reference_containerd_exec_request_terminal() {
    if let Some(server) = Server::containerd() {
        exec_request_terminal_case(&server);
    }
}

/// Bytes of output the TTY exec writes: 1 MiB.
const TTY_OUTPUT: usize = 1 << 20;

/// Case: `tasks exec -t` (under `script`, which gives ctr a terminal) gets a pty, and 1 MiB
/// written to it arrives complete, followed by the last line.
fn exec_tty_large_output_case(server: &Server) {
    if !require_binary("script") {
        return;
    }
    server.import_busybox();
    let guard = run_sleeper(server, "exectty-big");
    // No newline in the bulk: the pty turns each `\n` into `\r\n`.
    let inner = format!(
        "{CTR_BIN} --address {} tasks exec -t --exec-id big {} sh -c \
         'tty; busybox head -c {TTY_OUTPUT} /dev/zero | busybox tr \"\\000\" x; echo; echo END'",
        server.address().display(),
        guard.id,
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &inner, "/dev/null"])
        .env_remove("CONTAINERD_ADDRESS")
        .env_remove("CONTAINERD_NAMESPACE");
    let out = run_with_timeout(cmd, CTR_TIMEOUT);
    let text = out.ok();
    let xs = text.bytes().filter(|b| *b == b'x').count();
    assert!(
        text.contains("/dev/pts/"),
        "no tty: {}",
        &text[..text.len().min(300)]
    );
    assert_eq!(xs, TTY_OUTPUT, "TTY output incomplete");
    assert!(text.contains("END"), "the last line is missing");
}

#[test]
fn exec_with_a_tty_delivers_large_output_complete() {
    if let Some(server) = Server::berthd() {
        exec_tty_large_output_case(&server);
    }
}

#[test]
fn reference_containerd_exec_with_a_tty_large_output() {
    if let Some(server) = Server::containerd() {
        exec_tty_large_output_case(&server);
    }
}

/// Builds an image of `layers` layers: busybox at the bottom, then one layer per file
/// `layers/l<n>` (1-based), imports it and returns its name and the files.
fn import_layered(server: &Server, layers: usize) -> (String, Vec<String>) {
    let name = format!("docker.io/library/layers{layers}:latest");
    let mut entries = vec![base_layer_entries()];
    let mut files = Vec::new();
    for n in 1..layers {
        let file = format!("layers/l{n:03}");
        entries.push(vec![
            RawEntry::dir("layers"),
            RawEntry::file(&file, format!("{n}\n").as_bytes(), 0o644),
        ]);
        files.push(format!("/{file}"));
    }
    let img = build_image_of_layers(server.dir(), &name, &entries);
    let archive = img.archive.to_str().expect("utf-8 archive path");
    server.ctr(&["images", "import", archive]).ok();
    (name, files)
}

/// Case: containers of 60-, 80- and 128-layer images see every layer's file.
fn many_layers_case(server: &Server) {
    for layers in [60, 80, 128] {
        let (image, files) = import_layered(server, layers);
        let id = server.unique(&format!("layers{layers}"));
        let _cleanup = Cleanup {
            server,
            id: id.clone(),
        };
        let mut args = vec!["run", "--rm", image.as_str(), id.as_str(), "ls"];
        args.extend(files.iter().map(String::as_str));
        let out = server.ctr(&args);
        let listed: Vec<&str> = out.stdout.lines().collect();
        assert!(
            out.success() && listed == files,
            "{layers} layers: not every layer's file is in the rootfs: {out}"
        );
    }
}

#[test]
fn rootfs_of_60_80_and_128_layers_mounts_whole() {
    if let Some(server) = Server::berthd() {
        many_layers_case(&server);
    }
}

#[test]
fn reference_containerd_rootfs_of_many_layers() {
    if let Some(server) = Server::containerd() {
        many_layers_case(&server);
    }
}
