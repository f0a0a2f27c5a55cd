//! The devmapper snapshotter's kernel tests: the shared conformance suite and the
//! devmapper-specific checks, each on its own pool (named after its root) on two sparse loop
//! files under that root. They need root and a kernel with device-mapper, which this project's
//! hosts lack, so they are only built with the `devmapper-kernel-tests` feature, and
//! `integration/tests/devmapper_guest.rs` builds them so and runs them in a QEMU guest booting
//! Debian's kernel. There, a missing device-mapper or tool fails a test instead of skipping it.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tests::{options, pool_name};
use super::*;
use crate::snapshotter::Snapshotter;
use crate::testsuite::serial;

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
    root: PathBuf,
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

/// Panics unless this kernel has device-mapper and the tools are installed: a build with the
/// `devmapper-kernel-tests` feature says it runs where they are (the QEMU guest), so nothing
/// here is skipped.
fn require_devmapper(tools: &[&str]) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the devmapper kernel tests run as root"
    );
    if let Err(reason) = dm::availability() {
        panic!("the devmapper kernel tests need device-mapper: {reason}");
    }
    for tool in ["mkfs.ext4"].iter().chain(tools) {
        assert!(
            berth_testutil::on_path(tool),
            "the devmapper kernel tests need {tool}"
        );
    }
}

fn setup(root: &Path) -> Result<Option<Box<dyn Any>>, String> {
    require_devmapper(&[]);
    Ok(Some(Box::new(PoolGuard {
        root: root.to_path_buf(),
        pool: pool_name(root),
    })))
}

crate::snapshotter_suite!(make, setup);

/// A root with a pool guard for the devmapper-specific tests.
fn dm_root() -> (tempfile::TempDir, PathBuf, PoolGuard) {
    require_devmapper(&[]);
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
    (tmp, root, guard)
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
fn remove_frees_the_pools_data_blocks() {
    remove_frees_blocks(false);
}

/// The same with `discard_blocks` (the device's blocks are discarded before it goes).
#[test]
fn remove_with_discard_blocks_frees_the_pools_data_blocks() {
    remove_frees_blocks(true);
}

fn remove_frees_blocks(discard_blocks: bool) {
    let _serial = serial();
    let (_tmp, root, _guard) = dm_root();
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
fn recovery_removes_half_made_devices() {
    let _serial = serial();
    let (_tmp, root, _guard) = dm_root();
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
fn reactivates_devices_the_kernel_lost() {
    let _serial = serial();
    let (_tmp, root, guard) = dm_root();
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
fn async_remove_leaves_the_device_to_cleanup() {
    let _serial = serial();
    let (_tmp, root, _guard) = dm_root();
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

/// An active snapshot whose thin device the pool lost (deleted behind the snapshotter's back)
/// is reported and fixed at start: it and its device record go, the others stay.
#[test]
fn records_whose_device_is_gone_are_fixed_at_start() {
    let _serial = serial();
    let (_tmp, root, _guard) = dm_root();
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
fn xfs_layers_keep_their_data_and_views_are_read_only() {
    let _serial = serial();
    let (_tmp, root, _guard) = dm_root();
    require_devmapper(&["mkfs.xfs"]);
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
