//! berthd under systemd: the shipped `berthd.service` passes `systemd-analyze verify` with no
//! warning, and berthd speaks the `Type=notify` protocol: `READY=1` on `NOTIFY_SOCKET` once its
//! socket serves, `STOPPING=1` when SIGTERM starts the shutdown.

#![allow(clippy::tests_outside_test_module)]

use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use berth_integration::image::build_busybox_image;
use berth_integration::{
    berthd_bin, ctr, ctr_at, parse_table, require_binary, require_root, Daemon, CTR_BIN,
};

/// How long the test waits for one notification before failing.
const NOTIFY_WAIT: Duration = Duration::from_secs(30);
/// The image the container check runs.
const IMAGE: &str = "docker.io/library/bb-notify:latest";

/// The unit as shipped.
fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/berthd/systemd/berthd.service")
}

/// Runs `systemd-analyze verify` on `unit`, returning (success, stderr+stdout).
fn verify(unit: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The shipped unit with `ExecStart` pointing at the built berthd (verify checks the binary is
/// executable), written as `berthd.service` into `dir`.
fn unit_for_built_binary(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(unit_path()).expect("read berthd.service");
    let exec = text
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect::<Vec<_>>();
    assert_eq!(
        exec,
        ["ExecStart=/usr/local/bin/berthd"],
        "the unit starts the installed berthd"
    );
    let text = text.replace(
        "ExecStart=/usr/local/bin/berthd",
        &format!("ExecStart={}", berthd_bin().display()),
    );
    let path = dir.join("berthd.service");
    std::fs::write(&path, text).expect("write the unit copy");
    path
}

#[test]
fn unit_verifies_without_warnings_and_has_containerds_settings() {
    if !require_binary("systemd-analyze") {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let unit = unit_for_built_binary(dir.path());
    let (ok, text) = verify(&unit);
    assert!(ok, "systemd-analyze verify failed:\n{text}");
    assert!(
        text.trim().is_empty(),
        "systemd-analyze verify warned:\n{text}"
    );

    let shipped = std::fs::read_to_string(unit_path()).expect("read berthd.service");
    let settings: Vec<&str> = shipped
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for want in [
        "[Service]",
        "Type=notify",
        "ExecStartPre=-/sbin/modprobe overlay",
        "Delegate=yes",
        "KillMode=process",
        "LimitNOFILE=infinity",
        "OOMScoreAdjust=-999",
        "Restart=always",
        "RestartSec=5",
        "TasksMax=infinity",
        "[Install]",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            settings.contains(&want),
            "berthd.service lacks `{want}`:\n{shipped}"
        );
    }

    // The check can fail: a misspelt key is reported.
    let bad = dir.path().join("bad.service");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&unit)
            .unwrap()
            .replace("KillMode=process", "KillMod=process"),
    )
    .unwrap();
    let (_, text) = verify(&bad);
    assert!(
        text.contains("KillMod"),
        "verify did not report the misspelt key:\n{text}"
    );
}

/// Removes the test's container (task and all) if the test ends early, while the daemon runs.
struct Cleanup(PathBuf, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        ctr_at(&self.0, &["tasks", "delete", "-f", &self.1]);
        ctr_at(&self.0, &["containers", "delete", &self.1]);
    }
}

/// Receives one notification datagram, failing after [`NOTIFY_WAIT`].
fn receive(socket: &UnixDatagram, daemon: &Daemon, what: &str) -> String {
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!(
            "no {what} notification within {NOTIFY_WAIT:?}: {e}\n{}",
            daemon.log()
        ),
    }
}

#[test]
fn notifies_ready_once_serving_and_stopping_on_sigterm() {
    if !require_root() || !require_binary(CTR_BIN) {
        return;
    }
    let mut daemon = Daemon::prepare(None, &[]);
    let notify_path = daemon.dir().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notification socket");
    notify
        .set_read_timeout(Some(NOTIFY_WAIT))
        .expect("set a read timeout");
    daemon.set_env("NOTIFY_SOCKET", Some(notify_path.to_str().unwrap()));
    let address = daemon.address().to_path_buf();

    // The moment READY=1 arrives the socket must serve: checked from a thread blocked on the
    // notification socket while the harness starts the daemon and polls for its own readiness.
    let watcher = {
        let notify = notify.try_clone().expect("clone the notification socket");
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let n = notify.recv(&mut buf).expect("a READY=1 notification");
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let connect = UnixStream::connect(&address).map(drop);
            let version = ctr_at(&address, &["version"]);
            (message, connect, version)
        })
    };
    daemon.restart();
    let (message, connect, version) = watcher.join().expect("the watcher thread");
    assert_eq!(
        message.lines().collect::<Vec<_>>(),
        ["READY=1"],
        "the first notification is READY=1\n{}",
        daemon.log()
    );
    if let Err(e) = connect {
        panic!(
            "berthd socket refused a connection right after READY=1: {e}\n{}",
            daemon.log()
        );
    }
    let stdout = version.ok();
    assert!(
        stdout.contains("Server:") && stdout.contains("Version:"),
        "ctr version right after READY=1 shows no server version:\n{stdout}"
    );

    // Containers start as without systemd: the shim (and so runc, whose `start` would wait for
    // the container's own READY=1) does not inherit NOTIFY_SOCKET.
    let img = build_busybox_image(daemon.dir(), IMAGE);
    ctr(
        &daemon,
        &["images", "import", img.archive.to_str().unwrap()],
    )
    .ok();
    let id = format!("sd-notify-{}", std::process::id());
    let _cleanup = Cleanup(daemon.address().to_path_buf(), id.clone());
    ctr(&daemon, &["run", "-d", IMAGE, &id, "sleep", "600"]).ok();
    let (_, tasks) = parse_table(ctr(&daemon, &["tasks", "ls"]).ok());
    let task = tasks
        .iter()
        .find(|r| r.get("TASK") == Some(&id))
        .unwrap_or_else(|| panic!("task {id} not listed: {tasks:?}"));
    assert_eq!(
        task.get("STATUS").map(String::as_str),
        Some("RUNNING"),
        "{tasks:?}"
    );
    let pid: u32 = task.get("PID").unwrap().parse().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let shim: u32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let environ = std::fs::read(format!("/proc/{shim}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains("TTRPC_ADDRESS=") && !environ.contains("NOTIFY_SOCKET"),
        "the shim (pid {shim}) environment: {environ}"
    );
    ctr(&daemon, &["tasks", "delete", "-f", &id]).ok();
    ctr(&daemon, &["containers", "delete", &id]).ok();

    let status = daemon.stop();
    assert!(status.success(), "berthd exited with {status} on SIGTERM");
    let message = receive(&notify, &daemon, "STOPPING=1");
    assert_eq!(
        message.lines().collect::<Vec<_>>(),
        ["STOPPING=1"],
        "after SIGTERM berthd says STOPPING=1\n{}",
        daemon.log()
    );
}

#[test]
fn serves_as_before_when_nobody_listens_on_notify_socket() {
    if !require_root() {
        return;
    }
    // A NOTIFY_SOCKET nobody listens on: berthd logs the failure and serves all the same.
    let mut daemon = Daemon::prepare(None, &[]);
    let gone = daemon.dir().join("nobody.sock");
    daemon.set_env("NOTIFY_SOCKET", Some(gone.to_str().unwrap()));
    daemon.restart();
    ctr_at(daemon.address(), &["version"]).ok();
    let status = daemon.stop();
    assert!(status.success(), "berthd exited with {status} on SIGTERM");
    let log = daemon.log();
    assert!(
        log.contains("sd_notify") && log.contains("nobody.sock"),
        "berthd did not log the failed notification:\n{log}"
    );
}
