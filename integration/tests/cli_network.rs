//! End-to-end tests of `berth run --net`/`-p` and `berth network`, against a real `berthd` with
//! runc, the CNI plugins of /usr/lib/cni (bridge, host-local, portmap, loopback) and the busybox
//! test image. Each test uses its own network (name, bridge and 10.4.2xx.0/24 subnet: clear of
//! the CRI tests' and berth's default 10.4.0.0/24) in a temporary CNI config directory.

// A file under tests/ is a test crate of its own (see cli_run.rs).
#![allow(clippy::tests_outside_test_module)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::berth_cli::{berth_env, Run};
use berth_integration::image::build_busybox_image;
use berth_integration::{require_binary, require_root, Daemon};
use serde_json::{json, Value};

const IMAGE: &str = "docker.io/library/bb:latest";
const CNI_BIN: &str = "/usr/lib/cni";
const LEASES: &str = "/var/lib/cni/networks";

/// A container id or network name unique to this test process.
fn uid(base: &str) -> String {
    format!("{base}-{}", std::process::id())
}

/// A test's network: its conf dir and name; its containers are removed and its bridge deleted
/// when dropped.
struct Net<'a> {
    address: &'a Path,
    conf: tempfile::TempDir,
    name: String,
    bridge: Option<String>,
    ids: Vec<String>,
}

impl<'a> Net<'a> {
    /// Creates network `base-<pid>` on `subnet` in a fresh conf dir.
    fn create(address: &'a Path, base: &str, subnet: &str) -> Net<'a> {
        let mut net = Net {
            address,
            conf: tempfile::tempdir().expect("tempdir"),
            name: uid(base),
            bridge: None,
            ids: Vec::new(),
        };
        net.berth(&["network", "create", "--subnet", subnet, &net.name])
            .ok();
        net.bridge = net.read_bridge();
        assert!(
            net.bridge.is_some(),
            "no bridge in {}",
            net.conflist().display()
        );
        net
    }

    /// Runs berth with this network's conf dir.
    fn berth(&self, args: &[&str]) -> Run {
        let conf = self.conf.path().to_str().expect("utf-8 path");
        berth_env(
            self.address,
            args,
            b"",
            &[
                ("BERTH_CNI_NETCONFPATH", Some(conf)),
                ("BERTH_CNI_PATH", Some(CNI_BIN)),
            ],
        )
    }

    /// The host-local lease files (one per address) of this network.
    fn leases(&self) -> Vec<String> {
        let dir = Path::new(LEASES).join(&self.name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        out.sort();
        out
    }

    fn conflist(&self) -> PathBuf {
        self.conf
            .path()
            .join(format!("berth-{}.conflist", self.name))
    }

    fn read_bridge(&self) -> Option<String> {
        let text = std::fs::read(self.conflist()).ok()?;
        let doc: Value = serde_json::from_slice(&text).ok()?;
        doc["plugins"][0]["bridge"].as_str().map(str::to_owned)
    }
}

impl Drop for Net<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            self.berth(&["tasks", "kill", "-s", "KILL", "--all", id]);
            for _ in 0..50 {
                if self.berth(&["tasks", "delete", id]).code == 0
                    || self
                        .berth(&["tasks", "ls", "-q"])
                        .stdout
                        .lines()
                        .all(|l| l != id)
                {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
            self.berth(&["containers", "rm", id]);
        }
        if let Some(bridge) = &self.bridge {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", bridge])
                .output();
        }
        let _ = std::fs::remove_dir_all(Path::new(LEASES).join(&self.name));
    }
}

fn prerequisites() -> bool {
    require_root()
        && require_binary("runc")
        && require_binary("iptables")
        && require_binary("ip")
        && ["bridge", "host-local", "portmap", "loopback"]
            .iter()
            .all(|p| require_binary(&format!("{CNI_BIN}/{p}")))
}

fn import(net: &Net<'_>, dir: &Path) {
    let img = build_busybox_image(dir, IMAGE);
    net.berth(&[
        "images",
        "import",
        img.archive.to_str().expect("utf-8 path"),
    ])
    .ok();
}

/// The shell command serving `/www` with busybox httpd on port 80.
const HTTPD: &str = "mkdir -p /www && echo hello-from-berth > /www/index.html && exec busybox httpd -f -p 80 -h /www";

/// GET / from `addr`, retried until the server answers (the task starts asynchronously).
fn http_get(addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        match attempt {
            Ok(body) if body.contains("200") => return body,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no HTTP answer from {addr}: {other:?}"
                );
                thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// The NAT rules CNI made for container `id` of namespace `default` (masquerade, port maps).
fn nat_rules(id: &str) -> usize {
    let out = std::process::Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .expect("run iptables");
    let needle = format!("default-{id}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn published_port_serves_httpd_and_the_address_is_released() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();
    let mut net = Net::create(a, "bt-http", "10.4.201.0/24");
    import(&net, daemon.dir());
    let id = uid("web");
    net.ids.push(id.clone());
    let port = "127.0.0.1:18080:80";
    net.berth(&[
        "run", "-d", "--net", &net.name, "-p", port, IMAGE, &id, "sh", "-c", HTTPD,
    ])
    .ok();
    let body = http_get("127.0.0.1:18080");
    assert!(body.contains("hello-from-berth"), "{body}");

    // One lease, the address inspect shows; ps shows the port.
    let leases = net.leases();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert!(leases[0].starts_with("10.4.201."), "{leases:?}");
    let v = net.berth(&["inspect", &id]).json();
    assert_eq!(
        v[0]["NetworkSettings"]["IPAddress"],
        leases[0].as_str(),
        "{v}"
    );
    assert_eq!(v[0]["NetworkSettings"]["Networks"][0], net.name.as_str());
    assert_eq!(
        v[0]["NetworkSettings"]["Ports"][0], "127.0.0.1:18080->80/tcp",
        "{v}"
    );
    assert!(nat_rules(&id) > 0, "no NAT rules for {id}");
    let ps = net.berth(&["ps"]).ok();
    assert!(ps.contains("127.0.0.1:18080->80/tcp"), "{ps}");

    // The network is in use: rm refused.
    let err = net.berth(&["network", "rm", &net.name]).fails();
    assert!(err.contains("in use") && err.contains(&id), "{err}");

    // A second container cannot publish the same host port.
    let other = uid("web2");
    let err = net
        .berth(&[
            "run", "-d", "--net", &net.name, "-p", port, IMAGE, &other, "sleep", "60",
        ])
        .fails();
    assert!(err.contains("18080"), "{err}");
    let ids = net.berth(&["containers", "ls", "-q"]).ok();
    assert!(!ids.lines().any(|l| l == other), "{ids}");

    // The container goes: the lease and the port go with it.
    net.berth(&["tasks", "kill", "-s", "KILL", &id]).ok();
    wait_until("the task stops", || {
        net.berth(&["tasks", "delete", &id]).code == 0
    });
    assert_eq!(net.leases(), Vec::<String>::new());
    assert_eq!(nat_rules(&id), 0, "NAT rules left for {id}");
    assert!(TcpStream::connect("127.0.0.1:18080").is_err());
    let v = net.berth(&["inspect", &id]).json();
    assert_eq!(v[0]["NetworkSettings"]["Addresses"], serde_json::json!([]));
    net.berth(&["containers", "rm", &id]).ok();
    net.ids.clear();
    net.berth(&["network", "rm", &net.name]).ok();
    assert!(!net.conflist().exists());
}

#[test]
fn address_is_released_after_a_daemon_crash() {
    if !prerequisites() {
        return;
    }
    let mut daemon = Daemon::start();
    let a = daemon.address().to_owned();
    let mut net = Net::create(&a, "bt-crash", "10.4.202.0/24");
    import(&net, daemon.dir());
    let id = uid("crash");
    net.ids.push(id.clone());
    net.berth(&["run", "-d", "--net", &net.name, IMAGE, &id, "sleep", "600"])
        .ok();
    assert_eq!(net.leases().len(), 1);
    let pid: i32 = net
        .berth(&["tasks", "ls"])
        .ok()
        .lines()
        .find(|l| l.starts_with(&id))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .expect("task pid");

    // berthd dies; the container is killed while no daemon runs; a new berthd comes up.
    daemon.kill9();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the container");
    daemon.restart();
    assert_eq!(
        net.leases().len(),
        1,
        "nothing releases it before the delete"
    );
    wait_until("the task is deleted", || {
        net.berth(&["tasks", "delete", &id]).code == 0
    });
    assert_eq!(net.leases(), Vec::<String>::new());
    assert_eq!(nat_rules(&id), 0, "NAT rules left for {id}");
}

#[test]
fn net_none_and_host() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();
    let net = Net::create(a, "bt-none", "10.4.203.0/24");
    import(&net, daemon.dir());
    let out = net
        .berth(&[
            "run",
            "--rm",
            "--net",
            "none",
            IMAGE,
            &uid("none"),
            "ls",
            "/sys/class/net",
        ])
        .ok();
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["lo"]);

    let mut host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .expect("host interfaces")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    host.sort();
    for flag in [&["--net", "host"][..], &["--net-host"][..]] {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flag);
        let id = uid("host");
        args.extend_from_slice(&[IMAGE, &id, "ls", "/sys/class/net"]);
        let out = net.berth(&args).ok();
        let mut seen: Vec<&str> = out.split_whitespace().collect();
        seen.sort();
        assert!(seen.contains(&"lo") && seen.len() > 1, "{flag:?}: {seen:?}");
        for s in &seen {
            assert!(host.iter().any(|h| h == s), "{flag:?}: {s} not on the host");
        }
    }
    let err = net
        .berth(&[
            "run",
            "--rm",
            "--net",
            "none",
            "-p",
            "18090:80",
            IMAGE,
            &uid("x"),
            "true",
        ])
        .fails();
    assert!(err.contains("--net none"), "{err}");
}

#[test]
fn a_port_in_use_is_refused_and_nothing_is_left() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();
    let net = Net::create(a, "bt-busy", "10.4.204.0/24");
    import(&net, daemon.dir());
    let holder = TcpListener::bind("127.0.0.1:18081").expect("bind 18081");
    let id = uid("busy");
    let err = net
        .berth(&[
            "run",
            "-d",
            "--net",
            &net.name,
            "-p",
            "127.0.0.1:18081:80",
            IMAGE,
            &id,
            "sleep",
            "60",
        ])
        .fails();
    assert!(
        err.contains("127.0.0.1:18081/tcp") && err.contains("already in use"),
        "{err}"
    );
    drop(holder);
    let ids = net.berth(&["containers", "ls", "-q"]).ok();
    assert!(!ids.lines().any(|l| l == id), "{ids}");
    let snaps = net.berth(&["snapshots", "ls"]).ok();
    assert!(!snaps.lines().any(|l| l.starts_with(&id)), "{snaps}");
    assert_eq!(net.leases(), Vec::<String>::new());
    let records = daemon.root().join("berth/networks");
    let left: Vec<_> = std::fs::read_dir(&records)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    // Bad -p forms are refused the same way.
    for bad in ["127.0.0.1:18082:0", "18082:80/sctp", "nope:80"] {
        let err = net
            .berth(&[
                "run", "-d", "--net", &net.name, "-p", bad, IMAGE, &id, "true",
            ])
            .fails();
        assert!(err.contains("invalid port"), "{bad}: {err}");
    }
}

#[test]
fn network_create_ls_rm() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();
    let net = Net::create(a, "bt-ls", "10.4.205.0/24");
    let ls = net.berth(&["network", "ls"]).ok();
    let line = ls
        .lines()
        .find(|l| l.starts_with(&net.name))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(line.contains("10.4.205.0/24"), "{ls}");
    // The default network is there too (written on first use, not on the host's bridge yet).
    let names = net.berth(&["network", "ls", "-q"]).ok();
    assert!(names.lines().any(|l| l == "bridge"), "{names}");
    let err = net.berth(&["network", "create", &net.name]).fails();
    assert!(err.contains("already exists"), "{err}");
    let other = uid("bt-ls2");
    let err = net
        .berth(&["network", "create", "--subnet", "10.4.205.0/24", &other])
        .fails();
    assert!(err.contains("used by another network"), "{err}");
    let err = net.berth(&["network", "create", "../x"]).fails();
    assert!(err.contains("invalid network name"), "{err}");
    let err = net.berth(&["network", "rm", "bridge"]).fails();
    assert!(err.contains("default network"), "{err}");
    net.berth(&["network", "rm", &net.name]).ok();
    let names = net.berth(&["network", "ls", "-q"]).ok();
    assert!(!names.lines().any(|l| l == net.name), "{names}");
    let err = net.berth(&["network", "rm", &net.name]).fails();
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn address_is_released_when_the_shim_died_with_the_daemon() {
    if !prerequisites() {
        return;
    }
    let mut daemon = Daemon::start();
    let a = daemon.address().to_owned();
    let mut net = Net::create(&a, "bt-shim", "10.4.206.0/24");
    import(&net, daemon.dir());
    let id = uid("shimdead");
    net.ids.push(id.clone());
    net.berth(&["run", "-d", "--net", &net.name, IMAGE, &id, "sleep", "600"])
        .ok();
    assert_eq!(net.leases().len(), 1);
    assert!(nat_rules(&id) > 0, "no NAT rules for {id}");
    let shims = berth_integration::procs::shim_processes(&a);
    assert!(!shims.is_empty(), "no shim for {}", a.display());

    // berthd, the shim and the container all die; the next berthd cleans up the dead task
    // (runc delete runs the poststop hook) with no berth command involved.
    daemon.kill9();
    for (pid, _) in &shims {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let pid = std::fs::read_to_string(format!("/run/containerd/runc/default/{id}/state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["init_process_pid"].as_i64());
    if let Some(pid) = pid {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    daemon.restart();
    wait_until("berthd releases the address of the dead task", || {
        net.leases().is_empty()
    });
    assert_eq!(nat_rules(&id), 0, "NAT rules left for {id}");
}

#[test]
fn publish_all_maps_exposed_ports_to_free_host_ports() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();
    let mut net = Net::create(a, "bt-pall", "10.4.207.0/24");
    let image = "docker.io/library/bbexposed:latest";
    let archive = build_busybox_image(daemon.dir(), IMAGE).with_config(daemon.dir(), image, |c| {
        c["config"]["ExposedPorts"] = json!({"80/tcp": {}});
    });
    net.berth(&["images", "import", archive.to_str().expect("utf-8 path")])
        .ok();
    let id = uid("pall");
    net.ids.push(id.clone());
    net.berth(&[
        "run", "-d", "--net", &net.name, "-P", image, &id, "sh", "-c", HTTPD,
    ])
    .ok();
    let v = net.berth(&["inspect", &id]).json();
    let port = v[0]["NetworkSettings"]["Ports"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no published port: {v}"))
        .to_owned();
    let host_port = port
        .strip_prefix("0.0.0.0:")
        .and_then(|p| p.strip_suffix("->80/tcp"))
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("want 0.0.0.0:N->80/tcp, got {port}"));
    assert!(host_port > 0);
    let body = http_get(&format!("127.0.0.1:{host_port}"));
    assert!(body.contains("hello-from-berth"), "{body}");
}
