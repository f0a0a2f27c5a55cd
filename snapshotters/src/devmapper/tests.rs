//! The devmapper snapshotter's tests. Everything that touches device-mapper is `#[ignore]`d:
//! this machine's kernel has none, so they run inside the QEMU guest
//! (`integration/tests/devmapper_guest.rs` runs `--ignored devmapper::`). Each builds its own
//! pool, named after its root, on two sparse loop files under that root.

use std::any::Any;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sled::transaction::TransactionalTree;

use super::*;
use crate::snapshotter::Snapshotter;
use crate::testsuite::serial;

const NEEDS_DM: &str = "needs device-mapper: run in the QEMU guest";

/// A pool name unique to `root` (the suite's roots are `<tmp>/snapshot-suite-XXXXXX/root`).
fn pool_name(root: &Path) -> String {
    let dir = root
        .parent()
        .and_then(|p| p.file_name())
        .unwrap_or(root.as_os_str())
        .to_string_lossy()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    format!("berth-test-{dir}")
}

fn options(root: &Path) -> Options {
    Options {
        root: root.to_path_buf(),
        pool_name: pool_name(root),
        base_image_size: 256 << 20,
        async_remove: false,
        discard_blocks: false,
        fs_type: FsType::Ext4,
        fs_options: String::new(),
        pool: Some(PoolSetup {
            data_device: root.join("pool-data"),
            metadata_device: root.join("pool-meta"),
            data_size: 2 << 30,
            metadata_size: 64 << 20,
            block_sectors: 128,
        }),
    }
}

/// Opens the snapshotter on `root`, retrying while a dropped one's sled flusher still holds
/// the database lock (a restart is a new process; here it is the same one).
fn open(opts: Options) -> DevmapperSnapshotter {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match DevmapperSnapshotter::new(opts.clone()) {
            Ok(sn) => return sn,
            Err(SnapshotError::Db { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("open devmapper snapshotter on {}: {e}", opts.root.display()),
        }
    }
}

fn make(root: &Path) -> Arc<dyn Snapshotter> {
    Arc::new(open(options(root)))
}

/// Removes every device of the root's pool, the pool and its loop devices when dropped.
#[derive(Debug)]
struct PoolGuard {
    root: std::path::PathBuf,
    pool: String,
}

impl Drop for PoolGuard {
    fn drop(&mut self) {
        if let Ok(control) = dm::Control::open() {
            let prefix = format!("{}-", self.pool);
            for (name, _) in control.list().unwrap_or_default() {
                if name.starts_with(&prefix) {
                    if let Err(e) = control.remove(&name) {
                        eprintln!("remove {name}: {e}");
                    }
                    let _ = dm::remove_node(&name);
                }
            }
            if control.info(&self.pool).ok().flatten().is_some() {
                if let Err(e) = control.remove(&self.pool) {
                    eprintln!("remove pool {}: {e}", self.pool);
                }
                let _ = dm::remove_node(&self.pool);
            }
        }
        for file in ["pool-data", "pool-meta"] {
            if let Ok(Some(dev)) = loopdev::find(&self.root.join(file)) {
                if let Err(e) = loopdev::detach(&dev.path) {
                    eprintln!("detach {}: {e}", dev.path.display());
                }
            }
        }
    }
}

/// The reason device-mapper tests cannot run here, if any.
fn unavailable() -> Option<String> {
    if let Err(reason) = dm::availability() {
        return Some(reason);
    }
    ["mkfs.ext4"]
        .into_iter()
        .find(|tool| !berth_testutil::on_path(tool))
        .map(|tool| format!("{tool} is not installed"))
}

fn setup(root: &Path) -> Result<Option<Box<dyn Any>>, String> {
    if let Some(reason) = unavailable() {
        return Err(reason);
    }
    Ok(Some(Box::new(PoolGuard {
        root: root.to_path_buf(),
        pool: pool_name(root),
    })))
}

crate::snapshotter_suite!(
    make,
    setup,
    #[ignore = "needs device-mapper: run in the QEMU guest (integration/tests/devmapper_guest.rs)"]
);

/// A root with a pool guard for the devmapper-specific tests; `None` (skipped) without
/// device-mapper or root.
fn dm_root() -> Option<(tempfile::TempDir, std::path::PathBuf, PoolGuard)> {
    if !berth_testutil::require_root_for("devmapper test") {
        return None;
    }
    if let Some(reason) = unavailable() {
        berth_testutil::skip(&format!("{NEEDS_DM}: {reason}"));
        return None;
    }
    let tmp = tempfile::Builder::new()
        .prefix("devmapper-test-")
        .tempdir()
        .expect("temp dir");
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).expect("create root");
    let guard = PoolGuard {
        root: root.clone(),
        pool: pool_name(&root),
    };
    Some((tmp, root, guard))
}

fn write_through(mounts: &[Mount], files: &[(&str, Vec<u8>)]) {
    let m = TempMount::new(mounts).expect("mount snapshot");
    for (name, data) in files {
        std::fs::write(m.path().join(name), data).expect("write file");
    }
    nix::unistd::sync();
    m.close().expect("unmount snapshot");
}

fn read_through(mounts: &[Mount], name: &str) -> Vec<u8> {
    let m = TempMount::new(mounts).expect("mount snapshot");
    let data = std::fs::read(m.path().join(name)).expect("read file");
    m.close().expect("unmount snapshot");
    data
}

fn used_data_blocks(sn: &DevmapperSnapshotter) -> u64 {
    sn.pool()
        .pool_status()
        .expect("pool status")
        .used_data_blocks
}

/// Removing a snapshot gives its blocks back to the pool (what `dmsetup status` shows).
#[test]
#[ignore = "needs device-mapper: run in the QEMU guest (integration/tests/devmapper_guest.rs)"]
fn remove_frees_the_pools_data_blocks() {
    remove_frees_blocks(false);
}

/// The same with `discard_blocks` (the device's blocks are discarded before it goes).
#[test]
#[ignore = "needs device-mapper: run in the QEMU guest (integration/tests/devmapper_guest.rs)"]
fn remove_with_discard_blocks_frees_the_pools_data_blocks() {
    remove_frees_blocks(true);
}

fn remove_frees_blocks(discard_blocks: bool) {
    let _serial = serial();
    let Some((_tmp, root, _guard)) = dm_root() else {
        return;
    };
    let sn = open(Options {
        discard_blocks,
        ..options(&root)
    });
    // The base device is made by the first prepare; measure after it.
    sn.prepare("warm-up", None, BTreeMap::new())
        .expect("prepare");
    sn.remove("warm-up").expect("remove warm-up");
    let before = used_data_blocks(&sn);
    let mounts = sn.prepare("k", None, BTreeMap::new()).expect("prepare");
    let data: Vec<u8> = (0..16u32 << 20).map(|i| (i % 253) as u8).collect();
    write_through(&mounts, &[("blob", data)]);
    let written = used_data_blocks(&sn);
    assert!(
        written >= before + (16 << 20) / (64 << 10),
        "16 MiB written: {before} -> {written} blocks"
    );
    let (id, _, _) = sn.ms.get_info("k").unwrap();
    let name = sn.device_name(&id);
    sn.remove("k").expect("remove");
    let after = used_data_blocks(&sn);
    assert_eq!(after, before, "blocks after remove (written: {written})");
    assert!(sn.devices.get(&name).unwrap().is_none(), "{name} record");
    assert!(
        sn.pool.control().info(&name).unwrap().is_none(),
        "{name} active"
    );
}

/// Device records left in Creating by a crash, one whose thin device the pool made and one
/// whose message was never sent, are gone after a restart: from the pool, the device records
/// and the snapshot records.
#[test]
#[ignore = "needs device-mapper: run in the QEMU guest (integration/tests/devmapper_guest.rs)"]
fn recovery_removes_half_made_devices() {
    let _serial = serial();
    let Some((_tmp, root, _guard)) = dm_root() else {
        return;
    };
    let sn = open(options(&root));
    let live = sn.prepare("live", None, BTreeMap::new()).expect("prepare");
    write_through(&live, &[("f", b"kept".to_vec())]);
    let base = sn
        .devices()
        .unwrap()
        .into_iter()
        .find(|d| d.snapshot.is_empty())
        .expect("base device record");
    let mut made = Vec::new();
    for (key, send) in [("half-sent", true), ("half-recorded", false)] {
        let id = sn.ms.next_id().unwrap();
        let device = DeviceInfo {
            device_id: sn.devices.candidate_id().unwrap(),
            size: base.size,
            name: sn.device_name(&id.to_string()),
            parent_name: base.name.clone(),
            state: DeviceState::Creating,
            error: String::new(),
            snapshot: key.to_owned(),
            fs_type: FsType::Ext4,
            measured: Default::default(),
        };
        let add = |tx: &TransactionalTree, _: &Snapshot| metadata::tx_add(tx, &device);
        sn.ms
            .create_snapshot_and(
                id,
                Kind::Active,
                key,
                None,
                BTreeMap::new(),
                Some((sn.devices.tree(), &add)),
            )
            .unwrap();
        if send {
            sn.pool
                .create_snap(device.device_id, base.device_id, None)
                .expect("create_snap");
        }
        made.push(device);
    }
    drop(sn);
    let sn = open(options(&root));
    for device in &made {
        assert_eq!(
            sn.stat(&device.snapshot).unwrap_err().kind(),
            berth_registry::ErrorKind::NotFound,
            "snapshot {}",
            device.snapshot
        );
        assert!(
            sn.devices.get(&device.name).unwrap().is_none(),
            "{}",
            device.name
        );
        // Gone from the pool: deleting it again finds nothing (ENODATA).
        assert!(
            !sn.pool.delete(device.device_id).unwrap(),
            "{}",
            device.name
        );
    }
    assert_eq!(read_through(&sn.mounts("live").unwrap(), "f"), b"kept");
}

/// After the kernel lost every device of the pool (a reboot), start activates the pool and
/// the devices of active snapshots and views again; they mount with their data.
#[test]
#[ignore = "needs device-mapper: run in the QEMU guest (integration/tests/devmapper_guest.rs)"]
fn reactivates_devices_the_kernel_lost() {
    let _serial = serial();
    let Some((_tmp, root, guard)) = dm_root() else {
        return;
    };
    let sn = open(options(&root));
    let mounts = sn.prepare("layer-key", None, BTreeMap::new()).unwrap();
    write_through(&mounts, &[("base", b"layer".to_vec())]);
    sn.commit("layer", "layer-key", BTreeMap::new()).unwrap();
    let active = sn
        .prepare("active", Some("layer"), BTreeMap::new())
        .unwrap();
    write_through(&active, &[("own", b"active".to_vec())]);
    let view = sn.view("view", Some("layer"), BTreeMap::new()).unwrap();
    drop(sn);
    // What a reboot leaves: no device-mapper device of the pool, the pool included.
    drop(PoolGuard {
        root: guard.root.clone(),
        pool: guard.pool.clone(),
    });
    let control = dm::Control::open().unwrap();
    assert!(control.info(&guard.pool).unwrap().is_none());
    let sn = open(options(&root));
    assert_eq!(sn.mounts("active").unwrap(), active);
    assert_eq!(read_through(&active, "own"), b"active");
    assert_eq!(read_through(&active, "base"), b"layer");
    assert_eq!(read_through(&view, "base"), b"layer");
    assert!(view[0].options.contains(&"ro".to_owned()));
    // And the snapshotter goes on working on the re-made pool.
    sn.commit("top", "active", BTreeMap::new()).unwrap();
    sn.remove("view").unwrap();
    sn.remove("top").unwrap();
    sn.remove("layer").unwrap();
    let left: Vec<_> = sn
        .devices()
        .unwrap()
        .into_iter()
        .filter(|d| !d.snapshot.is_empty())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// With `async_remove` a removed snapshot's device stays (state Removed) until cleanup.
#[test]
#[ignore = "needs device-mapper: run in the QEMU guest (integration/tests/devmapper_guest.rs)"]
fn async_remove_leaves_the_device_to_cleanup() {
    let _serial = serial();
    let Some((_tmp, root, _guard)) = dm_root() else {
        return;
    };
    let sn = open(Options {
        async_remove: true,
        ..options(&root)
    });
    sn.prepare("k", None, BTreeMap::new()).unwrap();
    let (id, _, _) = sn.ms.get_info("k").unwrap();
    let name = sn.device_name(&id);
    sn.remove("k").unwrap();
    assert_eq!(
        sn.devices.get(&name).unwrap().map(|d| d.state),
        Some(DeviceState::Removed)
    );
    sn.cleanup().unwrap();
    assert!(sn.devices.get(&name).unwrap().is_none());
    assert!(sn.pool.control().info(&name).unwrap().is_none());
}

/// Host tests: names and mounts, without a kernel.
#[test]
fn device_names_follow_containerd() {
    let root = Path::new("/tmp/snapshot-suite-Ab1/root");
    assert_eq!(pool_name(root), "berth-test-snapshot-suite-Ab1");
    let o = options(root);
    assert_eq!(o.pool.as_ref().unwrap().block_sectors, 128);
    let device = DeviceInfo {
        device_id: 3,
        size: 1 << 30,
        name: format!("{}-snap-{}", o.pool_name, 7),
        parent_name: String::new(),
        state: DeviceState::Activated,
        error: String::new(),
        snapshot: "k".into(),
        fs_type: FsType::Ext4,
        measured: Default::default(),
    };
    let m = device_mount(&device, Kind::Active);
    assert_eq!(m.source, "/dev/mapper/berth-test-snapshot-suite-Ab1-snap-7");
    assert_eq!(m.mount_type, "ext4");
    assert!(m.options.is_empty());
    assert_eq!(device_mount(&device, Kind::View).options, ["ro"]);
    let xfs = DeviceInfo {
        fs_type: FsType::Xfs,
        ..device
    };
    assert_eq!(device_mount(&xfs, Kind::View).options, ["nouuid", "ro"]);
    assert_eq!(device_mount(&xfs, Kind::Active).mount_type, "xfs");
}

/// The dump reads device and snapshot records back as written (host test, no kernel).
#[test]
fn dump_lists_device_and_snapshot_records() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let device = DeviceInfo {
        device_id: 1,
        size: 1 << 30,
        name: "p-snap-1".into(),
        parent_name: "p-base-ext4".into(),
        state: DeviceState::Activated,
        error: String::new(),
        snapshot: "k".into(),
        fs_type: FsType::Ext4,
        measured: Default::default(),
    };
    {
        let ms = MetaStore::open(&root.join("metadata.db")).unwrap();
        let devices = DeviceStore::new(ms.open_tree(metadata::TREE).unwrap());
        let id = ms.next_id().unwrap();
        let add = |tx: &TransactionalTree, _: &Snapshot| metadata::tx_add(tx, &device);
        ms.create_snapshot_and(
            id,
            Kind::View,
            "k",
            None,
            BTreeMap::new(),
            Some((devices.tree(), &add)),
        )
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let dump = loop {
        match dump(root) {
            Ok(d) => break d,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("dump: {e}"),
        }
    };
    assert_eq!(dump.devices, [device]);
    assert_eq!(
        dump.snapshots,
        [DumpedSnapshot {
            key: "k".into(),
            id: "1".into(),
            kind: "view".into()
        }]
    );
    let json = serde_json::to_value(&dump).unwrap();
    assert_eq!(json["devices"][0]["state"], "Activated");
    assert_eq!(json["devices"][0]["fs_type"], "ext4");
}

/// A layer's usage: the larger of the mapped and the filesystem growth over its origin.
#[test]
fn usage_is_what_a_layer_holds_beyond_its_origin() {
    let origin = Measured {
        mapped_bytes: 10 << 20,
        fs_bytes: 8 << 20,
        fs_inodes: 11,
    };
    // New blocks mapped: the thin device's growth counts.
    let grew = Measured {
        mapped_bytes: 12 << 20,
        fs_bytes: (8 << 20) + 8192,
        fs_inodes: 13,
    };
    assert_eq!(
        usage_beyond(grew, origin),
        Usage {
            size: 2 << 20,
            inodes: 2
        }
    );
    // Only blocks the origin had mapped were rewritten: the filesystem's growth counts.
    let rewrote = Measured {
        mapped_bytes: 10 << 20,
        fs_bytes: (8 << 20) + 8192,
        fs_inodes: 12,
    };
    assert_eq!(
        usage_beyond(rewrote, origin),
        Usage {
            size: 8192,
            inodes: 1
        }
    );
    // Files deleted: never negative.
    let shrank = Measured {
        mapped_bytes: 10 << 20,
        fs_bytes: 1 << 20,
        fs_inodes: 5,
    };
    assert_eq!(usage_beyond(shrank, origin), Usage::default());
}

/// An active snapshot whose thin device the pool lost (deleted behind the snapshotter's back)
/// is reported and fixed at start: it and its device record go, the others stay.
#[test]
#[ignore = "needs device-mapper: run in the QEMU guest (integration/tests/devmapper_guest.rs)"]
fn records_whose_device_is_gone_are_fixed_at_start() {
    let _serial = serial();
    let Some((_tmp, root, _guard)) = dm_root() else {
        return;
    };
    let sn = open(options(&root));
    sn.prepare("lost", None, BTreeMap::new()).unwrap();
    sn.prepare("kept", None, BTreeMap::new()).unwrap();
    let (lost_id, _, _) = sn.ms.get_info("lost").unwrap();
    let lost = sn.devices.get(&sn.device_name(&lost_id)).unwrap().unwrap();
    assert!(sn.pool.deactivate(&lost.name).unwrap());
    assert!(sn.pool.delete(lost.device_id).unwrap());
    drop(sn);
    let sn = open(options(&root));
    assert_eq!(
        sn.stat("lost").unwrap_err().kind(),
        berth_registry::ErrorKind::NotFound
    );
    assert!(sn.devices.get(&lost.name).unwrap().is_none());
    assert!(sn.mounts("kept").is_ok());
    let names: Vec<_> = sn.walk(&berth_filters::Filter::always()).unwrap();
    assert_eq!(names.len(), 1, "{names:?}");
}

/// `fs_type = "xfs"`: the base is made by `mkfs.xfs`, snapshots mount as xfs with `nouuid`
/// (every snapshot carries its origin's uuid) and views `ro`; data written in a layer is seen
/// by its children and a view cannot be written.
#[test]
#[ignore = "needs device-mapper: run in the QEMU guest (integration/tests/devmapper_guest.rs)"]
fn xfs_layers_keep_their_data_and_views_are_read_only() {
    let _serial = serial();
    let Some((_tmp, root, _guard)) = dm_root() else {
        return;
    };
    if !berth_testutil::on_path("mkfs.xfs") {
        berth_testutil::skip("mkfs.xfs (xfsprogs) is not installed");
        return;
    }
    let sn = open(Options {
        fs_type: FsType::Xfs,
        // mkfs.xfs 5.19 and later refuse a filesystem under 300 MB.
        base_image_size: 512 << 20,
        ..options(&root)
    });
    let mounts = sn.prepare("a", None, BTreeMap::new()).expect("prepare a");
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].mount_type, "xfs");
    assert_eq!(mounts[0].options, ["nouuid"]);
    write_through(&mounts, &[("first", b"layer one".to_vec())]);
    sn.commit("c1", "a", BTreeMap::new()).expect("commit a");
    let mounts = sn
        .prepare("b", Some("c1"), BTreeMap::new())
        .expect("prepare b");
    assert_eq!(read_through(&mounts, "first"), b"layer one");
    write_through(&mounts, &[("second", b"layer two".to_vec())]);
    sn.commit("c2", "b", BTreeMap::new()).expect("commit b");

    let view = sn.view("v", Some("c2"), BTreeMap::new()).expect("view");
    assert_eq!(view[0].mount_type, "xfs");
    assert_eq!(view[0].options, ["nouuid", "ro"]);
    let m = TempMount::new(&view).expect("mount view");
    assert_eq!(std::fs::read(m.path().join("first")).unwrap(), b"layer one");
    assert_eq!(
        std::fs::read(m.path().join("second")).unwrap(),
        b"layer two"
    );
    let err = std::fs::write(m.path().join("third"), b"x").expect_err("a view is read-only");
    assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS), "{err}");
    m.close().expect("unmount view");

    for key in ["v", "c2", "c1"] {
        sn.remove(key)
            .unwrap_or_else(|e| panic!("remove {key}: {e}"));
    }
    assert!(sn
        .walk(&berth_filters::Filter::always())
        .unwrap()
        .is_empty());
}
