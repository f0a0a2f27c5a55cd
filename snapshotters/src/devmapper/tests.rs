//! The devmapper snapshotter's host tests: names, mounts, records and usage arithmetic, without
//! a kernel. The tests that need device-mapper are in `kernel_tests` (built with the
//! `devmapper-kernel-tests` feature and run in the QEMU guest).

use std::path::Path;
use std::time::{Duration, Instant};

use sled::transaction::TransactionalTree;

use super::*;

/// A pool name unique to `root` (the suite's roots are `<tmp>/snapshot-suite-XXXXXX/root`).
pub(super) fn pool_name(root: &Path) -> String {
    let dir = root
        .parent()
        .and_then(|p| p.file_name())
        .unwrap_or(root.as_os_str())
        .to_string_lossy()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    format!("berth-test-{dir}")
}

pub(super) fn options(root: &Path) -> Options {
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
