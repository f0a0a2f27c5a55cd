//! End-to-end tests for the snapshotters (overlayfs, native, btrfs, a proxy snapshotter), the
//! Diff service and client-side unpack, driven by the real `ctr` 1.6.20 against `berthd` and,
//! for the unpacked trees, against a real containerd too.
//!
//! Every test mounts something (snapshots, loop devices, image mounts), so they run one at a
//! time under [`serial`], each with its own daemon.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::containerd::Containerd;
use berth_integration::image::{build_busybox_image, HELLO};
use berth_integration::layers::{
    build_layered_image, digest_of, gzip, malicious_layers, walk_tree, Expect, LayeredImage, Node,
    FIFO, HARDLINK, HARDLINK_TARGET, SUID_FILE, SYMLINK, SYMLINK_TARGET, XATTR_FILE, XATTR_VALUE,
};
use berth_integration::{
    berthd_bin, channel, ctr, ctr_at, namespaced, parse_table, require_binary, require_root,
    run_with_timeout, CmdOutput, Daemon, Row, CTR_BIN, CTR_TIMEOUT,
};
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::content::v1::{WriteAction, WriteContentRequest};
use berth_proto::containerd::services::diff::v1::diff_client::DiffClient;
use berth_proto::containerd::services::diff::v1::ApplyRequest;
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::services::snapshots::v1::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use berth_proto::containerd::types::Descriptor;
use berth_wellknown::{label, media_type};
use nix::mount::{umount, umount2, MntFlags};
use tempfile::TempDir;
use tonic::transport::Channel;
use tonic::Code;

/// The namespace ctr uses when none is chosen.
const NS: &str = "default";

/// The busybox image of `berth_integration::image`.
const BUSYBOX_IMAGE: &str = "docker.io/library/bb:latest";

/// The two-layer image of `berth_integration::layers`.
const LAYERED_IMAGE: &str = "docker.io/library/layered:latest";

/// How long to wait for a socket of a helper process.
const WAIT: Duration = Duration::from_secs(20);

/// One MiB, the size of the file written into a snapshot before `ctr snapshots usage`.
const MIB: u64 = 1 << 20;

/// Serializes the tests of this file: they mount and use loop devices.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the file-wide lock; a test that panicked holding it does not stop the others.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Root and `ctr`: what every test here needs.
fn prerequisites() -> bool {
    require_root() && require_binary(CTR_BIN)
}

/// Runs a host command (`mount`, `losetup`, ...) and returns its output.
fn host(program: &str, args: &[&str]) -> CmdOutput {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_with_timeout(cmd, CTR_TIMEOUT)
}

/// Writes `data` into the content store with Content.Write (STAT, WRITE, COMMIT in one
/// stream), labelled as a GC root so that the collector keeps it until the test is done.
async fn write_blob(chan: Channel, reference: &str, data: &[u8]) {
    let total = i64::try_from(data.len()).expect("size fits i64");
    let expected = digest_of(data);
    let messages = vec![
        WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: reference.to_owned(),
            total,
            expected: expected.clone(),
            ..Default::default()
        },
        WriteContentRequest {
            action: WriteAction::Write as i32,
            data: data.to_vec(),
            ..Default::default()
        },
        WriteContentRequest {
            action: WriteAction::Commit as i32,
            total,
            offset: total,
            expected,
            labels: HashMap::from([(label::GC_ROOT.to_owned(), "2024-01-01T00:00:00Z".to_owned())]),
            ..Default::default()
        },
    ];
    let mut stream = ContentClient::new(chan)
        .write(namespaced(NS, tokio_stream::iter(messages)))
        .await
        .unwrap_or_else(|e| panic!("Content.Write {reference}: {e}"))
        .into_inner();
    while stream
        .message()
        .await
        .unwrap_or_else(|e| panic!("Content.Write {reference}: {e}"))
        .is_some()
    {}
}

/// Unmounts everything stacked on `target` when dropped (lazily if busy), so that a failing
/// test never leaves a mount behind a directory that is about to be removed.
struct MountGuard {
    target: PathBuf,
}

impl MountGuard {
    fn new(target: &Path) -> Self {
        Self {
            target: target.to_owned(),
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        for _ in 0..8 {
            if umount(&self.target).is_err() && umount2(&self.target, MntFlags::MNT_DETACH).is_err()
            {
                break;
            }
        }
    }
}

/// A btrfs filesystem on a sparse 512 MiB file behind a loop device, mounted in a temporary
/// directory (containerd `plugins/snapshots/btrfs/btrfs_test.go`); unmounted and detached on
/// drop.
struct Btrfs {
    dir: TempDir,
    device: String,
}

impl Btrfs {
    /// Sets it up; `None` (after a skip message) when `mkfs.btrfs` is missing.
    fn create() -> Option<Self> {
        if !require_binary("mkfs.btrfs") || !require_binary("losetup") {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-btrfs-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory under /tmp");
        let image = dir.path().join("fs.img");
        File::create(&image)
            .and_then(|f| f.set_len(512 * MIB))
            .expect("create the sparse btrfs image");
        let image_str = image.to_str().expect("a UTF-8 path");
        let device = host("losetup", &["--find", "--show", image_str])
            .ok()
            .trim()
            .to_owned();
        let this = Self { dir, device };
        host("mkfs.btrfs", &["-q", &this.device]).ok();
        fs::create_dir(this.mount_point()).expect("create the btrfs mount point");
        let mnt = this.mount_point();
        host(
            "mount",
            &[
                "-t",
                "btrfs",
                &this.device,
                mnt.to_str().expect("a UTF-8 path"),
            ],
        )
        .ok();
        Some(this)
    }

    fn mount_point(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        drop(MountGuard::new(&self.mount_point()));
        let _ = host("losetup", &["-d", &self.device]);
    }
}

/// `berth-native-snapshotter` serving a private root on a socket; killed on drop.
struct ProxySnapshotter {
    dir: TempDir,
    child: Option<Child>,
}

impl ProxySnapshotter {
    fn start() -> Self {
        let bin = berthd_bin().with_file_name("berth-native-snapshotter");
        assert!(
            bin.is_file(),
            "{} not found: run `cargo build --workspace` first",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("berth-proxy-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory under /tmp");
        let log = File::create(dir.path().join("log")).expect("create the proxy log");
        let child = Command::new(&bin)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--address")
            .arg(dir.path().join("p.sock"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
        let mut this = Self {
            dir,
            child: Some(child),
        };
        wait_for_socket(&this.socket(), &mut this.child, "berth-native-snapshotter");
        this
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("p.sock")
    }
}

impl Drop for ProxySnapshotter {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            let log = fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
            eprintln!("--- berth-native-snapshotter log ---\n{log}--- end ---");
        }
    }
}

/// Waits until `socket` accepts connections; panics if `child` exits first or after [`WAIT`].
fn wait_for_socket(socket: &Path, child: &mut Option<Child>, what: &str) {
    let deadline = Instant::now() + WAIT;
    while UnixStream::connect(socket).is_err() {
        let exited = child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "{what} not ready on {} ({exited:?})",
            socket.display()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The snapshotters under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    Overlayfs,
    Native,
    Btrfs,
    /// `berth-native-snapshotter` as `[proxy_plugins.ext]`.
    Proxy,
}

/// A daemon set up for one [`Driver`]. Fields drop in order: the daemon first, then what it
/// used.
struct Env {
    daemon: Daemon,
    snapshotter: &'static str,
    _proxy: Option<ProxySnapshotter>,
    _btrfs: Option<Btrfs>,
}

impl Env {
    /// Starts a daemon able to use `driver`; `None` when a prerequisite is missing (skipped).
    fn start(driver: Driver) -> Option<Self> {
        Some(match driver {
            Driver::Overlayfs => Self::plain(Daemon::start(), "overlayfs"),
            Driver::Native => Self::plain(Daemon::start(), "native"),
            Driver::Btrfs => {
                let btrfs = Btrfs::create()?;
                // The mount point itself: berthd does not create a missing root_path (see the
                // report), containerd's btrfs.NewSnapshotter does.
                let config = format!(
                    "[plugins.\"io.containerd.snapshotter.v1.btrfs\"]\n  root_path = {:?}\n",
                    btrfs.mount_point()
                );
                Self {
                    daemon: Daemon::start_with(Some(&config), &[]),
                    snapshotter: "btrfs",
                    _proxy: None,
                    _btrfs: Some(btrfs),
                }
            }
            Driver::Proxy => {
                let proxy = ProxySnapshotter::start();
                let config = format!(
                    "[proxy_plugins.ext]\n  type = \"snapshot\"\n  address = {:?}\n",
                    proxy.socket()
                );
                Self {
                    daemon: Daemon::start_with(Some(&config), &[]),
                    snapshotter: "ext",
                    _proxy: Some(proxy),
                    _btrfs: None,
                }
            }
        })
    }

    fn plain(daemon: Daemon, snapshotter: &'static str) -> Self {
        Self {
            daemon,
            snapshotter,
            _proxy: None,
            _btrfs: None,
        }
    }

    /// `ctr snapshots --snapshotter <sn> <args>`.
    fn snapshots(&self, args: &[&str]) -> CmdOutput {
        let mut all = vec!["snapshots", "--snapshotter", self.snapshotter];
        all.extend_from_slice(args);
        ctr(&self.daemon, &all)
    }
}

/// KEY → row of `ctr snapshots ls`, checking the header.
fn snapshot_rows(env: &Env) -> BTreeMap<String, Row> {
    let out = env.snapshots(&["ls"]);
    let (header, rows) = parse_table(out.ok());
    assert_eq!(header, ["KEY", "PARENT", "KIND"], "{out}");
    rows.into_iter().map(|r| (r["KEY"].clone(), r)).collect()
}

/// The mount command `ctr snapshots mounts <target> <key>` prints, split into words.
fn mount_command(env: &Env, target: &Path, key: &str) -> Vec<String> {
    let out = env.snapshots(&["mounts", target.to_str().expect("a UTF-8 path"), key]);
    let words: Vec<String> = out.ok().split_whitespace().map(str::to_owned).collect();
    assert!(
        words.len() >= 5 && words[0] == "mount" && words[1] == "-t",
        "unexpected mount command: {out}"
    );
    assert_eq!(words[4], target.to_str().expect("a UTF-8 path"), "{out}");
    words
}

/// Runs a mount command printed by ctr.
fn run_mount(words: &[String]) {
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    host("mount", &args).ok();
}

/// Bytes of a `ctr snapshots usage` size (`1.0 MiB`, `4.0 KiB`, `0.0 B`).
fn parse_size(text: &str) -> f64 {
    let (number, unit) = text
        .split_once(' ')
        .unwrap_or_else(|| panic!("not a size: {text:?}"));
    let n: f64 = number
        .parse()
        .unwrap_or_else(|e| panic!("not a size: {text:?}: {e}"));
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unknown unit {other:?} in {text:?}"),
    };
    n * scale
}

/// The type of mount ctr prints for an active snapshot without a parent, and with one.
fn expected_mount_types(driver: Driver) -> (&'static str, &'static str) {
    match driver {
        Driver::Overlayfs => ("bind", "overlay"),
        Driver::Native | Driver::Proxy => ("bind", "bind"),
        Driver::Btrfs => ("btrfs", "btrfs"),
    }
}

/// The `ctr snapshots` life cycle on one snapshotter: prepare, mounts, write, commit, view,
/// ls, info, tree, usage, label, rm (refused while a child exists).
fn snapshot_lifecycle(driver: Driver) {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let Some(env) = Env::start(driver) else {
        return;
    };
    // The snapshots below are made without a lease, as ctr makes them: collectable.
    env.daemon.wait_for_startup_collection();
    let (bare, layered) = expected_mount_types(driver);
    let scratch = tempfile::Builder::new()
        .prefix("berth-mnt-")
        .tempdir_in("/tmp")
        .expect("create a mount point");
    let target = scratch.path().join("k1");
    fs::create_dir(&target).expect("create the mount point");

    env.snapshots(&["prepare", "k1"]).ok();
    let words = mount_command(&env, &target, "k1");
    assert_eq!(words[2], bare, "mount type of k1 on {driver:?}: {words:?}");
    {
        let guard = MountGuard::new(&target);
        run_mount(&words);
        fs::write(target.join("big"), vec![0x5a_u8; 1 << 20]).expect("write into k1");
        fs::write(target.join("small"), b"hello snapshot\n").expect("write into k1");
        drop(guard);
    }
    assert!(!target.join("big").exists(), "k1 is still mounted");
    env.snapshots(&["commit", "c1", "k1"]).ok();
    env.snapshots(&["view", "v1", "c1"]).ok();
    env.snapshots(&["prepare", "k2", "c1"]).ok();
    let k2_words = mount_command(&env, &target, "k2");
    assert_eq!(
        k2_words[2], layered,
        "mount type of k2 on {driver:?}: {k2_words:?}"
    );

    // The committed data is visible through the view.
    {
        let guard = MountGuard::new(&target);
        run_mount(&mount_command(&env, &target, "v1"));
        assert_eq!(
            fs::read(target.join("small")).expect("read through the view"),
            b"hello snapshot\n"
        );
        assert_eq!(
            fs::metadata(target.join("big"))
                .expect("stat through the view")
                .len(),
            MIB
        );
        drop(guard);
    }

    let rows = snapshot_rows(&env);
    let kinds: BTreeMap<&str, (&str, &str)> = rows
        .iter()
        .map(|(k, r)| (k.as_str(), (r["PARENT"].as_str(), r["KIND"].as_str())))
        .collect();
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("c1", ("", "Committed")),
            ("k2", ("c1", "Active")),
            ("v1", ("c1", "View")),
        ])
    );

    let info: serde_json::Value =
        serde_json::from_str(env.snapshots(&["info", "c1"]).ok()).expect("info prints JSON");
    assert_eq!(info["Kind"], "Committed", "{info}");
    assert_eq!(info["Name"], "c1", "{info}");
    assert!(
        info["Labels"]["containerd.io/gc.root"].is_string(),
        "ctr commit sets gc.root: {info}"
    );

    let tree = env.snapshots(&["tree"]);
    let lines: Vec<&str> = tree.ok().lines().map(str::trim_end).collect();
    assert!(lines.contains(&" c1"), "{tree}");
    assert!(lines.contains(&"  \\_ k2"), "{tree}");
    assert!(lines.contains(&"  \\_ v1"), "{tree}");

    let usage = env.snapshots(&["usage"]);
    let (header, rows) = parse_table(usage.ok());
    assert_eq!(header, ["KEY", "SIZE", "INODES"], "{usage}");
    let c1 = rows
        .iter()
        .find(|r| r["KEY"] == "c1")
        .unwrap_or_else(|| panic!("no c1 in {usage}"));
    assert!(
        parse_size(&c1["SIZE"]) >= MIB as f64,
        "usage of c1 after writing 1 MiB on {driver:?}: {usage}"
    );
    let inodes: u64 = c1["INODES"].parse().expect("INODES is a number");
    assert!(inodes >= 2, "c1 holds two files: {usage}");

    let labels = env.snapshots(&["label", "c1", "a=b"]);
    assert!(labels.ok().contains("a=b"), "{labels}");
    let info: serde_json::Value =
        serde_json::from_str(env.snapshots(&["info", "c1"]).ok()).expect("info prints JSON");
    assert_eq!(info["Labels"]["a"], "b", "{info}");

    env.snapshots(&["rm", "v1"]).ok();
    let refused = env.snapshots(&["rm", "c1"]);
    assert!(
        refused.fails().contains("failed precondition"),
        "rm of a parent must fail with FailedPrecondition: {refused}"
    );
    assert!(snapshot_rows(&env).contains_key("c1"));
    env.snapshots(&["rm", "k2"]).ok();
    env.snapshots(&["rm", "c1"]).ok();
    assert!(snapshot_rows(&env).is_empty());
}

#[test]
fn snapshot_lifecycle_overlayfs() {
    snapshot_lifecycle(Driver::Overlayfs);
}

#[test]
fn snapshot_lifecycle_native() {
    snapshot_lifecycle(Driver::Native);
}

#[test]
fn snapshot_lifecycle_btrfs() {
    snapshot_lifecycle(Driver::Btrfs);
}

#[test]
fn snapshot_lifecycle_proxy() {
    snapshot_lifecycle(Driver::Proxy);
}

/// A fresh empty directory under `parent` to mount an image on.
fn mount_dir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    fs::create_dir(&dir).expect("create a mount point");
    dir
}

#[test]
fn image_mount_shows_the_unpacked_busybox_image() {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let daemon = Daemon::start();
    let img = build_busybox_image(daemon.dir(), BUSYBOX_IMAGE);
    let archive = img.archive.to_str().expect("a UTF-8 path");
    ctr(&daemon, &["images", "import", archive]).ok();

    let target = mount_dir(daemon.dir(), "mnt");
    let target_str = target.to_str().expect("a UTF-8 path");
    let guard = MountGuard::new(&target);
    ctr(&daemon, &["images", "mount", BUSYBOX_IMAGE, target_str]).ok();
    let busybox = fs::metadata(target.join("bin/busybox")).expect("bin/busybox in the mount");
    assert!(busybox.is_file() && busybox.mode() & 0o111 != 0);
    assert_eq!(
        fs::read_link(target.join("bin/sh")).expect("bin/sh is a symlink"),
        Path::new("busybox")
    );
    assert_eq!(
        fs::read(target.join("etc/hello")).expect("etc/hello"),
        HELLO
    );
    ctr(&daemon, &["images", "unmount", "--rm", target_str]).ok();
    drop(guard);
    assert!(
        fs::read_dir(&target)
            .expect("list the mount point")
            .next()
            .is_none(),
        "the mount point is not empty after unmount"
    );
    let out = ctr(&daemon, &["snapshots", "ls"]);
    let (_, rows) = parse_table(out.ok());
    assert!(
        rows.iter().all(|r| r["KEY"] != target_str),
        "unmount --rm left the view snapshot: {out}"
    );
}

/// Imports `img` (with `--snapshotter` when given), mounts it on a fresh directory under
/// `scratch`, records the tree, unmounts with `--rm` and returns the tree.
fn unpacked_tree(
    address: &Path,
    img: &LayeredImage,
    snapshotter: Option<&str>,
    scratch: &Path,
    name: &str,
) -> BTreeMap<PathBuf, Node> {
    let sn: Vec<&str> = snapshotter.map_or(vec![], |s| vec!["--snapshotter", s]);
    let archive = img.archive.to_str().expect("a UTF-8 path");
    let mut import = vec!["images", "import"];
    import.extend_from_slice(&sn);
    import.push(archive);
    ctr_at(address, &import).ok();

    let target = mount_dir(scratch, name);
    let target_str = target.to_str().expect("a UTF-8 path");
    let guard = MountGuard::new(&target);
    let mut mount = vec!["images", "mount"];
    mount.extend_from_slice(&sn);
    mount.extend([img.name.as_str(), target_str]);
    ctr_at(address, &mount).ok();
    let tree = walk_tree(&target);
    let mut unmount = vec!["images", "unmount"];
    unmount.extend_from_slice(&sn);
    unmount.extend(["--rm", target_str]);
    ctr_at(address, &unmount).ok();
    drop(guard);
    tree
}

/// The names directly under `dir` in a [`walk_tree`] result.
fn children(tree: &BTreeMap<PathBuf, Node>, dir: &str) -> BTreeSet<String> {
    let dir = Path::new(".").join(dir);
    tree.keys()
        .filter(|p| p.parent() == Some(dir.as_path()))
        .map(|p| {
            p.file_name()
                .expect("a child has a name")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Checks what the two-layer image must unpack to: whiteout and opaque directory applied.
fn assert_whiteouts_applied(tree: &BTreeMap<PathBuf, Node>, what: &str) {
    let data = children(tree, "data");
    assert!(data.contains("keep"), "{what}: data/keep missing: {data:?}");
    assert!(
        !data.contains("gone"),
        "{what}: data/gone not whited out: {data:?}"
    );
    assert!(
        !data.iter().any(|n| n.starts_with(".wh.")),
        "{what}: a whiteout file is visible: {data:?}"
    );
    assert_eq!(
        children(tree, "opq"),
        BTreeSet::from(["new".to_owned()]),
        "{what}: opq/ must hold only `new`"
    );
}

/// Checks the special files of the second layer.
fn assert_special_files(tree: &BTreeMap<PathBuf, Node>, what: &str) {
    let node = |p: &str| {
        tree.get(&Path::new(".").join(p))
            .unwrap_or_else(|| panic!("{what}: {p} missing"))
    };
    let suid = node(SUID_FILE);
    assert_eq!(
        (suid.kind, suid.mode, suid.uid, suid.gid),
        ('f', 0o4755, 1000, 1000),
        "{what}: {SUID_FILE}: {suid:?}"
    );
    let (hard, orig) = (node(HARDLINK), node(HARDLINK_TARGET));
    assert_eq!(hard.nlink, Some(2), "{what}: {HARDLINK}: {hard:?}");
    assert_eq!(hard.sha256, orig.sha256, "{what}: hardlink contents");
    assert_eq!(
        node(SYMLINK).link.as_deref(),
        Some(Path::new(SYMLINK_TARGET)),
        "{what}: {SYMLINK}"
    );
    assert_eq!(node(FIFO).kind, 'p', "{what}: {FIFO}");
    assert_eq!(
        node(XATTR_FILE).xattr.as_deref(),
        Some(XATTR_VALUE),
        "{what}: xattr of {XATTR_FILE}"
    );
}

/// Unpacks the two-layer image with berthd and with containerd (on `snapshotter`, or the
/// default) and compares the trees entry by entry.
fn trees_match_containerd(snapshotter: Option<&str>) {
    if !prerequisites() || !require_binary("containerd") {
        return;
    }
    let _serial = serial();
    let daemon = Daemon::start();
    let containerd = Containerd::start();
    let img = build_layered_image(daemon.dir(), LAYERED_IMAGE);
    let ours = unpacked_tree(daemon.address(), &img, snapshotter, daemon.dir(), "mnt");
    let reference = unpacked_tree(
        containerd.address(),
        &img,
        snapshotter,
        containerd.dir(),
        "mnt",
    );
    assert_whiteouts_applied(&reference, "containerd");
    assert_special_files(&reference, "containerd");
    assert_whiteouts_applied(&ours, "berthd");
    assert_special_files(&ours, "berthd");

    let paths: BTreeSet<&PathBuf> = ours.keys().chain(reference.keys()).collect();
    let mut differences = Vec::new();
    for path in paths {
        match (ours.get(path), reference.get(path)) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => differences.push(format!(
                "{}:\n  berthd:     {a:?}\n  containerd: {b:?}",
                path.display()
            )),
        }
    }
    assert!(
        differences.is_empty(),
        "unpacked trees differ ({snapshotter:?}):\n{}",
        differences.join("\n")
    );
}

#[test]
fn unpacked_tree_matches_containerd_overlayfs() {
    trees_match_containerd(None);
}

#[test]
fn unpacked_tree_matches_containerd_native() {
    trees_match_containerd(Some("native"));
}

/// Imports and mounts the two-layer image on `driver` and checks the whiteouts.
fn whiteouts_on(driver: Driver) {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let Some(env) = Env::start(driver) else {
        return;
    };
    let img = build_layered_image(env.daemon.dir(), LAYERED_IMAGE);
    let tree = unpacked_tree(
        env.daemon.address(),
        &img,
        Some(env.snapshotter),
        env.daemon.dir(),
        "mnt",
    );
    let what = format!("berthd {}", env.snapshotter);
    assert_whiteouts_applied(&tree, &what);
    assert_special_files(&tree, &what);
    // The unpack committed one snapshot per layer, named by chain ID.
    let rows = snapshot_rows(&env);
    for chain in img.chain_ids() {
        assert_eq!(
            rows.get(&chain).map(|r| r["KIND"].as_str()),
            Some("Committed"),
            "{what}: no committed {chain}: {rows:?}"
        );
    }
}

#[test]
fn whiteouts_overlayfs() {
    whiteouts_on(Driver::Overlayfs);
}

#[test]
fn whiteouts_native() {
    whiteouts_on(Driver::Native);
}

#[test]
fn whiteouts_btrfs() {
    whiteouts_on(Driver::Btrfs);
}

/// Every path under `dir` (symlinks not followed) whose base name is `name`.
fn find_named(dir: &Path, name: &str, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == name {
            found.push(path.clone());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            find_named(&path, name, found);
        }
    }
}

/// Applies every malicious layer, uncompressed and gzip, onto a fresh snapshot of `driver`
/// with Diff.Apply and checks that nothing is written, linked or removed outside it.
fn malicious_layers_on(driver: Driver) {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let Some(env) = Env::start(driver) else {
        return;
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
        .block_on(apply_malicious_layers(&env));
}

/// The body of [`malicious_layers_on`], on a started [`Env`].
async fn apply_malicious_layers(env: &Env) {
    let daemon = &env.daemon;
    let outside = tempfile::Builder::new()
        .prefix("berth-outside-")
        .tempdir_in("/tmp")
        .expect("create the outside directory");
    let chan = channel(daemon).await;
    let mut snapshots = SnapshotsClient::new(chan.clone());
    let mut diff = DiffClient::new(chan.clone());

    for layer in malicious_layers(outside.path()) {
        for gz in [false, true] {
            let (blob, media_type, suffix) = if gz {
                (gzip(&layer.tar), media_type::OCI_LAYER_GZIP, "gz")
            } else {
                (layer.tar.clone(), media_type::OCI_LAYER, "tar")
            };
            let what = format!("{} ({suffix}) on {}", layer.case, env.snapshotter);
            let digest = digest_of(&blob);
            let key = format!("mal-{}-{suffix}", layer.case);
            write_blob(chan.clone(), &key, &blob).await;
            env.snapshots(&["prepare", &key]).ok();
            let mounts = snapshots
                .mounts(namespaced(
                    NS,
                    MountsRequest {
                        snapshotter: env.snapshotter.to_owned(),
                        key: key.clone(),
                    },
                ))
                .await
                .unwrap_or_else(|e| panic!("{what}: Snapshots.Mounts: {e}"))
                .into_inner()
                .mounts;
            assert_eq!(mounts.len(), 1, "{what}: {mounts:?}");
            assert_eq!(mounts[0].r#type, "bind", "{what}: {mounts:?}");
            let root = PathBuf::from(&mounts[0].source);
            // Bait next to and above the root: an unsafe apply would remove or link them.
            let victim = root.join("../victim");
            fs::write(&victim, b"victim\n").expect("write the victim");
            let outside_file = root.join("../../outside-file");
            fs::write(&outside_file, b"outside\n").expect("write the outside file");

            let result = diff
                .apply(namespaced(
                    NS,
                    ApplyRequest {
                        diff: Some(Descriptor {
                            media_type: media_type.to_owned(),
                            digest: digest.clone(),
                            size: i64::try_from(blob.len()).expect("a small blob"),
                            ..Default::default()
                        }),
                        mounts,
                        ..Default::default()
                    },
                ))
                .await;
            let mut allowed = None;
            match &layer.expect {
                Expect::Rejected { entry } => {
                    let status = match result {
                        Ok(r) => panic!("{what}: Diff.Apply succeeded: {:?}", r.into_inner()),
                        Err(s) => s,
                    };
                    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
                    assert!(
                        status.message().contains(entry.as_str()),
                        "{what}: the error does not name {entry:?}: {status:?}"
                    );
                }
                Expect::Inside { path } => {
                    let applied = result
                        .unwrap_or_else(|e| panic!("{what}: Diff.Apply failed: {e:?}"))
                        .into_inner()
                        .applied
                        .unwrap_or_else(|| panic!("{what}: no applied descriptor"));
                    assert_eq!(
                        applied.digest,
                        digest_of(&layer.tar),
                        "{what}: the applied digest is the diffID"
                    );
                    let inside = root.join(path);
                    assert!(
                        fs::symlink_metadata(&inside).is_ok_and(|m| m.is_file()),
                        "{what}: {} was not created inside the snapshot",
                        inside.display()
                    );
                    allowed = Some(inside);
                }
            }

            let left: Vec<_> = fs::read_dir(outside.path())
                .expect("list the outside directory")
                .flatten()
                .map(|e| e.path())
                .collect();
            assert!(left.is_empty(), "{what}: written outside: {left:?}");
            assert_eq!(
                fs::read(&victim).ok().as_deref(),
                Some(&b"victim\n"[..]),
                "{what}: the victim next to the root was removed"
            );
            let meta = fs::metadata(&outside_file).expect("the outside file");
            assert_eq!(meta.nlink(), 1, "{what}: the outside file was hardlinked");
            assert_eq!(fs::read(&outside_file).expect("read it"), b"outside\n");
            for name in &layer.sentinels {
                let mut found = Vec::new();
                find_named(daemon.dir(), name, &mut found);
                found.retain(|p| Some(p) != allowed.as_ref());
                assert!(found.is_empty(), "{what}: {name} written at {found:?}");
            }

            fs::remove_file(&victim).expect("remove the victim");
            fs::remove_file(&outside_file).expect("remove the outside file");
            env.snapshots(&["rm", &key]).ok();
        }
    }
}

#[test]
fn malicious_layers_overlayfs() {
    malicious_layers_on(Driver::Overlayfs);
}

#[test]
fn malicious_layers_native() {
    malicious_layers_on(Driver::Native);
}

#[test]
fn prepared_snapshot_survives_kill9() {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let mut daemon = Daemon::start();
    ctr(&daemon, &["snapshots", "prepare", "k1"]).ok();
    daemon.kill9();
    daemon.restart();
    let out = ctr(&daemon, &["snapshots", "ls"]);
    let (_, rows) = parse_table(out.ok());
    let keys: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["KEY"].as_str(), r["KIND"].as_str()))
        .collect();
    assert_eq!(keys, [("k1", "Active")], "{out}");
    // Still usable: a child can be committed and removed.
    ctr(&daemon, &["snapshots", "commit", "c1", "k1"]).ok();
    ctr(&daemon, &["snapshots", "rm", "c1"]).ok();
}

#[test]
fn image_rm_sync_collects_unpacked_snapshots() {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let daemon = Daemon::start();
    let img = build_busybox_image(daemon.dir(), BUSYBOX_IMAGE);
    ctr(
        &daemon,
        &[
            "images",
            "import",
            img.archive.to_str().expect("a UTF-8 path"),
        ],
    )
    .ok();
    let out = ctr(&daemon, &["snapshots", "ls"]);
    let (_, rows) = parse_table(out.ok());
    let keys: BTreeSet<&str> = rows.iter().map(|r| r["KEY"].as_str()).collect();
    let top = digest_of(format!("{} {}", img.layers[0].diff_id, img.layers[1].diff_id).as_bytes());
    assert_eq!(
        keys,
        BTreeSet::from([img.layers[0].diff_id.as_str(), top.as_str()]),
        "one snapshot per layer, named by chain ID: {out}"
    );
    assert!(rows.iter().all(|r| r["KIND"] == "Committed"), "{out}");

    ctr(&daemon, &["images", "rm", "--sync", BUSYBOX_IMAGE]).ok();
    let out = ctr(&daemon, &["snapshots", "ls"]);
    let (_, rows) = parse_table(out.ok());
    assert!(
        rows.is_empty(),
        "snapshots left after images rm --sync: {out}"
    );
}

/// Snapshots.Prepare racing the garbage collector: each Remove schedules a collection whose
/// sweep of driver snapshots without a record must not take a snapshot whose Prepare has
/// created it in the driver but not yet recorded it (containerd serializes the two with the
/// metadata snapshotter's lock, `metadata/snapshot.go` `garbageCollect`).
#[test]
fn prepare_racing_gc_keeps_the_snapshot() {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let daemon = Daemon::start();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
        .block_on(async {
            let mut client = SnapshotsClient::new(channel(&daemon).await);
            let labels =
                HashMap::from([(label::GC_ROOT.to_owned(), "2024-01-01T00:00:00Z".to_owned())]);
            let deadline = Instant::now() + Duration::from_secs(8);
            let mut lost = Vec::new();
            let mut rounds = 0;
            while Instant::now() < deadline {
                rounds += 1;
                for key in [format!("a{rounds}"), format!("b{rounds}")] {
                    client
                        .prepare(namespaced(
                            NS,
                            PrepareSnapshotRequest {
                                snapshotter: "overlayfs".to_owned(),
                                key: key.clone(),
                                labels: labels.clone(),
                                ..Default::default()
                            },
                        ))
                        .await
                        .unwrap_or_else(|e| panic!("Prepare {key}: {e}"));
                    if let Err(e) = client
                        .mounts(namespaced(
                            NS,
                            MountsRequest {
                                snapshotter: "overlayfs".to_owned(),
                                key: key.clone(),
                            },
                        ))
                        .await
                    {
                        lost.push(format!("{key}: {}", e.message()));
                    }
                    // Removing schedules a collection that overlaps the next Prepare.
                    let _ = client
                        .remove(namespaced(
                            NS,
                            RemoveSnapshotRequest {
                                snapshotter: "overlayfs".to_owned(),
                                key,
                            },
                        ))
                        .await;
                    tokio::time::sleep(Duration::from_millis(7)).await;
                }
            }
            assert!(
                lost.is_empty(),
                "{} of {} prepared snapshots vanished before Mounts: {lost:?}",
                lost.len(),
                rounds * 2
            );
        });
}
