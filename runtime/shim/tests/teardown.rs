//! The served shim outlives the reader of its `log` FIFO: berthd stops reading a bundle's FIFO
//! when it deletes that bundle, while the shim still answers (a pod's shim serves its other
//! containers) and still logs, at the least when it exits. Its log writes then fail with EPIPE;
//! they must be dropped, not turn into a panic (exit 101, and a request left unanswered).
//!
//! The shim runs as berthd's `start` action would run it: in the bundle directory, the listening
//! socket on fd 3, stderr pointed at the bundle's `log` FIFO.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::io::Read as _;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use berth_proto::containerd::task::v2 as api;
use berth_ttrpc::{code, CallOptions, Client};

const TASK_SERVICE: &str = "containerd.task.v2.Task";
/// Bound on every wait; nothing here is timed.
const WAIT: Duration = Duration::from_secs(20);

/// Starts the daemon mode of the shim in `bundle` with `listener` on fd 3.
fn serve(bundle: &std::path::Path, listener: &UnixListener) -> Child {
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_containerd-shim-berth-v2"));
    cmd.args(["-namespace", "teardown", "-id", "t1", "-address", ""])
        .env_remove("TTRPC_ADDRESS")
        .current_dir(bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec the closure only calls dup2 and fcntl, which are
    // async-signal-safe, on descriptors the child inherited.
    unsafe {
        cmd.pre_exec(move || {
            let placed = if fd == 3 {
                nix::libc::fcntl(3, nix::libc::F_SETFD, 0)
            } else {
                nix::libc::dup2(fd, 3)
            };
            if placed < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn the shim")
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the shim") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the shim did not exit within {WAIT:?} of Shutdown");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn opts() -> CallOptions {
    CallOptions {
        timeout: Some(WAIT),
        metadata: Vec::new(),
    }
}

#[tokio::test]
async fn shim_whose_log_reader_left_answers_and_exits_zero() {
    let bundle = tempfile::tempdir().expect("bundle dir");
    let log = bundle.path().join("log");
    nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    // berthd's log pump: a reader on the FIFO before the shim starts.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&log)
        .expect("open the log FIFO");
    let socket = bundle.path().join("s.sock");
    let listener = UnixListener::bind(&socket).expect("bind the shim socket");
    let mut child = serve(bundle.path(), &listener);
    drop(listener);

    let client = Client::connect_address(&format!("unix://{}", socket.display()))
        .await
        .expect("dial the shim");
    let connected: api::ConnectResponse = client
        .call(
            TASK_SERVICE,
            "Connect",
            &api::ConnectRequest { id: "t1".into() },
            opts(),
        )
        .await
        .expect("Connect");
    assert_eq!(connected.shim_pid, child.id());
    // The shim logs into the FIFO while somebody reads it.
    let mut text = String::new();
    let _ = reader.read_to_string(&mut text);
    assert!(
        text.contains("shim serving"),
        "the shim's log reached the FIFO: {text:?}"
    );

    // berthd deleted the bundle: nobody reads the FIFO any more.
    drop(reader);

    // A request that fails is logged (a warning), and still answered.
    let gone = client
        .call::<_, api::StateResponse>(
            TASK_SERVICE,
            "State",
            &api::StateRequest {
                id: "gone".into(),
                exec_id: String::new(),
            },
            opts(),
        )
        .await
        .expect_err("State of an unknown task fails");
    assert_eq!(gone.code(), Some(code::NOT_FOUND), "{gone}");

    client
        .call::<_, ()>(
            TASK_SERVICE,
            "Shutdown",
            &api::ShutdownRequest {
                id: "t1".into(),
                now: false,
            },
            opts(),
        )
        .await
        .expect("Shutdown");
    let status = wait_exit(&mut child);
    assert!(
        status.success(),
        "the shim exits 0 after Shutdown, not {:?} (signal {:?})",
        status.code(),
        status.signal()
    );
    assert!(!socket.exists(), "the shim removed its socket");
}
