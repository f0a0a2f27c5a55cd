//! The pull pipeline (issue 20, part 3): layers fetched in parallel and each applied once it and
//! its parents are in, against a real registry (Debian's `docker-registry`) and a real `berthd`.
//!
//! * A three-layer pull through the transfer library (the `berth images pull` code, over the
//!   gRPC proxies) ends with the same snapshots (chain IDs and parents), layer labels and
//!   unpacked files as the real `ctr images pull` (containerd's own Go unpacker) against
//!   berthd; its progress trace shows several layers in flight at once and the bottom layer
//!   unpacked while a later one still downloads. The registry is reached through a proxy that
//!   paces each connection, so the downloads last long enough to overlap visibly.
//! * A pull whose registry is killed mid-way (and the connections to it cut) fails naming the
//!   registry, leaves only whole, verified blobs and committed snapshots (the partial layer
//!   stays an ingest, no extraction snapshot is left behind, no image is recorded), and once
//!   the registry is back the same pull resumes the partial layer with a ranged request and
//!   completes.
//!
//! Needs root (berthd unpacks with overlayfs), `docker-registry`, `htpasswd`, `openssl` and ctr;
//! a missing one skips the test, or fails it under CI=true. Nothing here asserts a duration.

// A file under tests/ is a test crate of its own.
#![allow(clippy::tests_outside_test_module)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::berth_cli::{berth, berth_bin, berth_cmd};
use berth_integration::image::noise;
use berth_integration::layers::{
    base_layer_entries, build_image_of_layers, digest_of, upper_layer_entries, walk_tree,
    LayeredImage, Node, RawEntry,
};
use berth_integration::registry::{require_registry, Registry, REGISTRY_BIN};
use berth_integration::{channel, ctr, ctr_at, parse_table, require_binary, require_root, Daemon};
use berth_transfer::grpc::GrpcStores;
use berth_transfer::{pull, Descriptor, Progress, PullOptions, RegistryOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const IMAGE: &str = "docker.io/library/pull-parallel:latest";
const REPO: &str = "test/par";
/// Bytes of incompressible data in each layer, bottom first: the top layer is the largest, so
/// it is still downloading when the bottom one is unpacked.
const NOISE: [usize; 3] = [2 << 20, 3 << 20, 6 << 20];

fn prerequisites() -> bool {
    require_root()
        && require_registry()
        && require_binary(berth_integration::CTR_BIN)
        && berth_bin().is_file()
}

/// Three gzip layers: the busybox base, then whiteouts, an opaque directory and special
/// files, then a large file and a whiteout of a base file; each with its own noise file.
fn build_image(dir: &Path) -> LayeredImage {
    let mut layers = vec![base_layer_entries(), upper_layer_entries(), Vec::new()];
    layers[2].push(RawEntry::dir("etc"));
    layers[2].push(RawEntry::whiteout("etc/.wh.passwd"));
    for (i, entries) in layers.iter_mut().enumerate() {
        entries.push(RawEntry::dir("noise"));
        let data = noise(NOISE[i], 0x9e37_79b9_7f4a_7c15 + i as u64);
        entries.push(RawEntry::file(&format!("noise/l{i}"), &data, 0o644));
    }
    build_image_of_layers(dir, IMAGE, &layers)
}

/// A registry holding [`build_image`] as `<registry>/test/par:1`, pushed by `berth` from a
/// source daemon; returns the registry, the image and the source daemon (kept alive).
fn registry_with_image() -> (Registry, LayeredImage, Daemon) {
    let registry = Registry::start_plain();
    let source = Daemon::start();
    let img = build_image(source.dir());
    let s = source.address();
    let archive = img.archive.to_str().expect("utf-8 path");
    berth(s, &["images", "import", "--no-unpack", archive]).ok();
    let remote = format!("{}/{REPO}:1", registry.host());
    berth(s, &["images", "push", "--plain-http", &remote, IMAGE]).ok();
    (registry, img, source)
}

/// A TCP proxy to `127.0.0.1:<upstream>` that passes each connection's answers on at about
/// `bytes_per_sec` (requests go through unpaced).
struct PacedProxy {
    port: u16,
    /// Bumped by [`PacedProxy::cut`]; connections of an older generation are closed.
    generation: Arc<AtomicU64>,
}

impl PacedProxy {
    fn start(upstream: u16, bytes_per_sec: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let generation = Arc::new(AtomicU64::new(0));
        let current = generation.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (mut from_client, mut to_server) = (
                    client.try_clone().expect("clone socket"),
                    server.try_clone().expect("clone socket"),
                );
                thread::spawn(move || {
                    let _ = std::io::copy(&mut from_client, &mut to_server);
                    let _ = to_server.shutdown(Shutdown::Write);
                });
                let (mut from_server, mut to_client) = (server, client);
                let (born, current) = (current.load(Ordering::SeqCst), current.clone());
                thread::spawn(move || {
                    let mut buf = vec![0u8; 32 << 10];
                    while current.load(Ordering::SeqCst) == born {
                        let n = match from_server.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if to_client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        thread::sleep(Duration::from_secs_f64(n as f64 / bytes_per_sec as f64));
                    }
                    let _ = to_client.shutdown(Shutdown::Both);
                    let _ = from_server.shutdown(Shutdown::Both);
                });
            }
        });
        Self { port, generation }
    }

    /// Closes every open connection, as when the host behind it goes away: what the kernel
    /// still holds of a killed registry's answers is not passed on. New connections work.
    fn cut(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// One progress callback, in the order the pull made them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Start(String),
    Bytes(String),
    Done(String),
    Unpacked(String),
}

/// Records every callback.
#[derive(Debug, Default)]
struct Trace(Mutex<Vec<Event>>);

impl Trace {
    fn push(&self, event: Event) {
        self.0.lock().expect("trace lock").push(event);
    }

    fn events(&self) -> Vec<Event> {
        self.0.lock().expect("trace lock").clone()
    }
}

impl Progress for Trace {
    fn on_start(&self, desc: &Descriptor) {
        self.push(Event::Start(desc.digest.clone()));
    }
    fn on_bytes(&self, desc: &Descriptor, _n: u64) {
        self.push(Event::Bytes(desc.digest.clone()));
    }
    fn on_done(&self, desc: &Descriptor) {
        self.push(Event::Done(desc.digest.clone()));
    }
    fn on_unpacked(&self, desc: &Descriptor) {
        self.push(Event::Unpacked(desc.digest.clone()));
    }
}

/// The largest number of `layers` that had received bytes and were not yet done at one time.
fn most_in_flight(events: &[Event], layers: &BTreeSet<String>) -> usize {
    let mut flowing = BTreeSet::new();
    let mut most = 0;
    for e in events {
        match e {
            Event::Bytes(d) if layers.contains(d) => {
                flowing.insert(d.clone());
            }
            Event::Done(d) => {
                flowing.remove(d);
            }
            _ => {}
        }
        most = most.max(flowing.len());
    }
    most
}

/// `ctr snapshots ls` as (KEY, PARENT, KIND) rows, sorted.
fn snapshots(address: &Path) -> Vec<(String, String, String)> {
    let out = ctr_at(address, &["snapshots", "ls"]).ok().to_owned();
    let mut rows: Vec<_> = parse_table(&out)
        .1
        .into_iter()
        .map(|r| (r["KEY"].clone(), r["PARENT"].clone(), r["KIND"].clone()))
        .collect();
    rows.sort();
    rows
}

/// The snapshots a complete unpack of `img` leaves: each chain ID on its parent, committed.
fn expected_snapshots(img: &LayeredImage) -> Vec<(String, String, String)> {
    let chain = img.chain_ids();
    let mut rows: Vec<_> = chain
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let parent = if i == 0 { "" } else { chain[i - 1].as_str() };
            (id.clone(), parent.to_owned(), "Committed".to_owned())
        })
        .collect();
    rows.sort();
    rows
}

/// Unmounts `target` on drop, so a failed assertion does not leave a mount behind.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Mounts the image `name` of the daemon at `address` under `scratch`, records its tree and
/// unmounts it again (`ctr images mount` / `unmount --rm`).
fn unpacked_tree(address: &Path, name: &str, scratch: &Path) -> BTreeMap<PathBuf, Node> {
    let target = scratch.join("mnt");
    fs::create_dir_all(&target).expect("create mount point");
    let target_str = target.to_str().expect("utf-8 path");
    let guard = Unmount(target.clone());
    ctr_at(address, &["images", "mount", name, target_str]).ok();
    let tree = walk_tree(&target);
    ctr_at(address, &["images", "unmount", "--rm", target_str]).ok();
    drop(guard);
    tree
}

/// The `containerd.io/uncompressed` label of each layer blob of `img` in the daemon.
fn uncompressed_labels(address: &Path, img: &LayeredImage) -> Vec<String> {
    let listing = berth(address, &["content", "ls", "--format", "json"]).json();
    let rows = listing.as_array().expect("a JSON array");
    img.layers
        .iter()
        .map(|l| {
            let row = rows
                .iter()
                .find(|r| r["digest"] == l.digest.as_str())
                .unwrap_or_else(|| panic!("layer {} missing: {listing}", l.digest));
            row["labels"]["containerd.io/uncompressed"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_pull_unpacks_as_layers_arrive_and_matches_ctr() {
    if !prerequisites() {
        return;
    }
    let (registry, img, _source) = registry_with_image();
    let layer_digests: BTreeSet<String> = img.layers.iter().map(|l| l.digest.clone()).collect();
    let diff_ids: Vec<String> = img.layers.iter().map(|l| l.diff_id.clone()).collect();

    // The reference: containerd's own client (fetch, then its unpacker) against berthd.
    let reference = Daemon::start();
    let direct = format!("{}/{REPO}:1", registry.host());
    ctr(&reference, &["images", "pull", "--plain-http", &direct]).ok();

    // Berth's pull, through a proxy that paces each connection at 4 MiB/s.
    let proxy = PacedProxy::start(registry.port(), 4 << 20);
    let paced = format!("127.0.0.1:{}/{REPO}:1", proxy.port);
    let daemon = Daemon::start();
    let trace = Arc::new(Trace::default());
    let options = PullOptions {
        registry: RegistryOptions {
            plain_http: true,
            concurrency: 3,
            ..RegistryOptions::default()
        },
        progress: trace.clone(),
        ..PullOptions::default()
    };
    let stores = GrpcStores::new(channel(&daemon).await, "overlayfs");
    let image = pull(&paced, &options, &stores.stores("default"))
        .await
        .expect("pull through the paced proxy");
    assert_eq!(image.name, paced);

    // Same snapshots, layer labels and files as containerd's client made.
    let ours = snapshots(daemon.address());
    assert_eq!(ours, expected_snapshots(&img));
    assert_eq!(ours, snapshots(reference.address()));
    assert_eq!(uncompressed_labels(daemon.address(), &img), diff_ids);
    assert_eq!(uncompressed_labels(reference.address(), &img), diff_ids);
    let tree = unpacked_tree(daemon.address(), &paced, daemon.dir());
    let reference_tree = unpacked_tree(reference.address(), &direct, reference.dir());
    assert!(tree == reference_tree, "unpacked trees differ");
    let node = |p: &str| tree.get(&Path::new(".").join(p)).cloned();
    assert!(node("etc/passwd").is_none(), "the top layer's whiteout");
    assert!(node("data/gone").is_none(), "the middle layer's whiteout");
    for (i, len) in NOISE.iter().enumerate() {
        let data = noise(*len, 0x9e37_79b9_7f4a_7c15 + i as u64);
        let file = node(&format!("noise/l{i}")).expect("noise file");
        assert_eq!(file.sha256, Some(digest_of(&data)), "noise/l{i}");
    }

    // The trace: the three layers downloaded at once, and the bottom one unpacked while the
    // top one still downloaded.
    let events = trace.events();
    let in_flight = most_in_flight(&events, &layer_digests);
    assert!(in_flight >= 2, "layers never overlapped: {events:?}");
    let at = |e: &Event| events.iter().position(|x| x == e).expect("event recorded");
    let (bottom, top) = (&img.layers[0].digest, &img.layers[2].digest);
    assert!(
        at(&Event::Unpacked(bottom.clone())) < at(&Event::Done(top.clone())),
        "the bottom layer was unpacked only after every download: {events:?}"
    );
    for l in &img.layers {
        assert!(at(&Event::Done(l.digest.clone())) < at(&Event::Unpacked(l.digest.clone())));
    }
    // Unpacked bottom first: a layer's apply waits for its parents.
    let order: Vec<usize> = img
        .layers
        .iter()
        .map(|l| at(&Event::Unpacked(l.digest.clone())))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
}

/// The pid of the `docker-registry` serving `registry`'s config.
fn registry_pid(registry: &Registry) -> i32 {
    let config = registry.dir().join("config.yml");
    let config = config.to_string_lossy();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("docker-registry"))
            && args.iter().any(|a| *a == config)
        {
            return pid;
        }
    }
    panic!("no docker-registry process serves {config}");
}

/// A registry restarted on the config (port, storage, log) of one that was killed; killed on
/// drop.
struct Restarted(Child);

impl Restarted {
    fn start(registry: &Registry) -> Self {
        let log = File::options()
            .append(true)
            .open(registry.dir().join("registry.log"))
            .expect("open the registry log");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(registry.dir().join("config.yml"))
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("restart docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", registry.port())).is_err() {
            assert!(Instant::now() < deadline, "the registry did not come back");
            thread::sleep(Duration::from_millis(50));
        }
        Self(child)
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The offset of the active ingest whose ref names `digest`, if any.
fn ingest_offset(address: &Path, digest: &str) -> Option<u64> {
    let run = berth(address, &["content", "active", "--format", "json"]);
    if run.code != 0 {
        return None;
    }
    let v: Value = serde_json::from_str(&run.stdout).ok()?;
    v.as_array()?
        .iter()
        .find(|s| s["ref"].as_str().is_some_and(|r| r.contains(digest)))
        .and_then(|s| s["offset"].as_u64())
}

/// The committed blobs of the daemon.
fn committed(address: &Path) -> Vec<String> {
    berth(address, &["content", "ls", "-q"])
        .ok()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn registry_killed_mid_pull_leaves_whole_blobs_and_the_pull_resumes() {
    if !prerequisites() {
        return;
    }
    let (registry, img, _source) = registry_with_image();
    // 2 MiB/s a connection: the top layer takes about 3 s.
    let proxy = PacedProxy::start(registry.port(), 2 << 20);
    let remote = format!("127.0.0.1:{}/{REPO}:1", proxy.port);
    let daemon = Daemon::start();
    let d = daemon.address();
    let args = ["images", "pull", "--plain-http", remote.as_str()];
    let mut child = berth_cmd(d, &args).spawn().expect("spawn berth pull");

    // Mid-way: the bottom layer is in, the top one is partly written.
    let (bottom, top) = (&img.layers[0], &img.layers[2]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the pull never got mid-way");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the pull ended ({status}) before the registry was killed");
        }
        let top_started = ingest_offset(d, &top.digest).is_some_and(|o| o > 0);
        if top_started && committed(d).contains(&bottom.digest) {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    kill(Pid::from_raw(registry_pid(&registry)), Signal::SIGKILL).expect("kill the registry");
    proxy.cut();
    let out = child.wait_with_output().expect("wait for berth pull");
    assert!(
        !out.status.success(),
        "the pull succeeded without a registry"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("127.0.0.1") && stderr.contains("blob"),
        "{stderr}"
    );

    // Only whole, verified blobs; the top layer is still an ingest; no image; only committed
    // snapshots, each a chain ID on its parent.
    let blobs = committed(d);
    assert!(blobs.contains(&bottom.digest), "{blobs:?}");
    assert!(!blobs.contains(&top.digest), "{blobs:?}");
    for digest in &blobs {
        let get = berth_cmd(d, &["content", "get", digest])
            .output()
            .expect("run berth content get");
        assert!(get.status.success(), "content get {digest}: {get:?}");
        assert_eq!(
            &digest_of(&get.stdout),
            digest,
            "blob {digest} is not whole"
        );
    }
    let partial = ingest_offset(d, &top.digest).expect("the top layer's ingest stays");
    assert!(partial > 0 && partial < top.size, "{partial}");
    let images = berth(d, &["images", "ls", "--format", "json"]).json();
    assert_eq!(images, serde_json::json!([]), "no image without every blob");
    let complete = expected_snapshots(&img);
    for row in snapshots(d) {
        assert!(complete.contains(&row), "left behind: {row:?}");
    }

    // The registry comes back on the same port and storage: the pull completes, resuming the
    // top layer with a ranged request, and fetches no whole blob twice.
    let gets_before: Vec<Vec<u16>> = img
        .layers
        .iter()
        .map(|l| registry.blob_gets(REPO, &l.digest))
        .collect();
    let _back = Restarted::start(&registry);
    berth(d, &args).ok();
    assert_eq!(snapshots(d), complete);
    let check = berth(d, &["images", "check", "--format", "json"]).json();
    assert_eq!(check[0]["complete"], true, "{check}");
    assert_eq!(check[0]["unpacked"], true, "{check}");
    let tree = unpacked_tree(d, &remote, daemon.dir());
    for (i, len) in NOISE.iter().enumerate() {
        let data = noise(*len, 0x9e37_79b9_7f4a_7c15 + i as u64);
        let file = tree.get(&Path::new("./noise").join(format!("l{i}")));
        assert_eq!(file.and_then(|f| f.sha256.clone()), Some(digest_of(&data)));
    }
    assert_eq!(registry.blob_gets(REPO, &bottom.digest), gets_before[0]);
    let top_gets = registry.blob_gets(REPO, &top.digest);
    assert_eq!(top_gets.last(), Some(&206), "{top_gets:?}");
    assert_eq!(berth(d, &["content", "active", "-q"]).ok().trim(), "");
}
