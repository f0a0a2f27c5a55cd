//! A thin pool and its thin devices, driven as containerd's `snapshots/devmapper/dmsetup`
//! package and `pool_device.go` drive them: the table formats, the `create_thin`,
//! `create_snap` and `delete` messages to the pool, the origin suspended around a snapshot,
//! `EBUSY` retried, `ENODATA` of a `delete` meaning the id is already free. The kernel's side is
//! `Documentation/admin-guide/device-mapper/thin-provisioning.rst`.
//!
//! Thin devices are named in the pool's table by `major:minor`, which is how the kernel prints
//! them back in `dmsetup table` whichever form containerd wrote (`/dev/mapper/<pool>`), and
//! which needs no node in `/dev/mapper`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;

use super::dm::{self, Control, DmError, Target, SECTOR_SIZE};

/// containerd's `lowWaterMark`, in data blocks ("picked arbitrary").
pub const LOW_WATER_MARK: u64 = 32768;
/// Thin device ids are 24-bit.
pub const MAX_DEVICE_ID: u32 = 0xff_ffff;
/// The pool's data block size bounds, in sectors (64 KiB .. 1 GiB, a multiple of 64 KiB).
const MIN_BLOCK_SECTORS: u32 = 128;
const MAX_BLOCK_SECTORS: u32 = 2_097_152;

/// `EBUSY` on a `delete` is retried as containerd's `retry` does (100 x 100 ms).
const BUSY_RETRIES: u32 = 100;
const BUSY_RETRY_DELAY: Duration = Duration::from_millis(100);

nix::ioctl_read!(
    /// `BLKGETSIZE64`: a block device's size in bytes.
    blk_get_size64,
    0x12,
    114,
    u64
);
nix::ioctl_write_ptr_bad!(
    /// `BLKDISCARD` (`_IO(0x12, 119)` taking a `uint64_t[2]` of offset and length).
    blk_discard,
    nix::request_code_none!(0x12, 119),
    [u64; 2]
);

/// A thin-pool's status line (`dmsetup status <pool>`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolStatus {
    /// The metadata transaction id.
    pub transaction_id: u64,
    /// Metadata blocks in use.
    pub used_metadata_blocks: u64,
    /// Metadata blocks in all.
    pub total_metadata_blocks: u64,
    /// Data blocks in use.
    pub used_data_blocks: u64,
    /// Data blocks in all.
    pub total_data_blocks: u64,
    /// The held metadata root (`reserve_metadata_snap`), if any.
    pub held_metadata_root: Option<u64>,
    /// The pool is read-only (`ro`, or `out_of_data_space`, which refuses new writes).
    pub read_only: bool,
    /// The pool ran out of data space.
    pub out_of_data_space: bool,
    /// The metadata needs a `thin_check` before the pool can be written again.
    pub needs_check: bool,
    /// The pool failed (`Fail` / `Error`): no figures.
    pub fail: bool,
}

/// A thin device's status line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ThinStatus {
    /// Sectors mapped (allocated in the pool) to this device.
    pub mapped_sectors: u64,
    /// The highest mapped sector, `None` if nothing is mapped.
    pub highest_mapped_sector: Option<u64>,
    /// The pool failed (`Fail` / `Error`).
    pub fail: bool,
}

/// Parses a thin-pool status line:
/// `<transaction id> <used meta>/<total meta> <used data>/<total data> <held root>|-
///  ro|rw|out_of_data_space [no_]discard_passdown [error|queue]_if_no_space needs_check|-
///  [<metadata low watermark>]`, or `Fail` / `Error`.
pub fn parse_pool_status(line: &str) -> Result<PoolStatus, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if matches!(fields.as_slice(), ["Fail"] | ["Error"]) {
        return Ok(PoolStatus {
            fail: true,
            ..PoolStatus::default()
        });
    }
    if fields.len() < 5 {
        return Err(format!(
            "thin-pool status {line:?} has {} fields",
            fields.len()
        ));
    }
    let num = |s: &str, what: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("thin-pool status {line:?}: {what} {s:?} is not a number"))
    };
    let ratio = |s: &str, what: &str| {
        let (used, total) = s
            .split_once('/')
            .ok_or_else(|| format!("thin-pool status {line:?}: {what} {s:?} is not used/total"))?;
        Ok::<_, String>((num(used, what)?, num(total, what)?))
    };
    let (used_metadata_blocks, total_metadata_blocks) = ratio(fields[1], "metadata blocks")?;
    let (used_data_blocks, total_data_blocks) = ratio(fields[2], "data blocks")?;
    let held_metadata_root = match fields[3] {
        "-" => None,
        root => Some(num(root, "held metadata root")?),
    };
    let mode = fields[4];
    if !matches!(mode, "rw" | "ro" | "out_of_data_space") {
        return Err(format!("thin-pool status {line:?}: unknown mode {mode:?}"));
    }
    Ok(PoolStatus {
        transaction_id: num(fields[0], "transaction id")?,
        used_metadata_blocks,
        total_metadata_blocks,
        used_data_blocks,
        total_data_blocks,
        held_metadata_root,
        read_only: mode != "rw",
        out_of_data_space: mode == "out_of_data_space",
        needs_check: fields.contains(&"needs_check"),
        fail: false,
    })
}

/// Parses a thin device's status line: `<mapped sectors> <highest mapped sector>|-`, or
/// `Fail` / `Error`.
pub fn parse_thin_status(line: &str) -> Result<ThinStatus, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields.as_slice() {
        ["Fail"] | ["Error"] => Ok(ThinStatus {
            fail: true,
            ..ThinStatus::default()
        }),
        [mapped, highest] => {
            let num = |s: &str| {
                s.parse::<u64>()
                    .map_err(|_| format!("thin status {line:?}: {s:?} is not a number"))
            };
            Ok(ThinStatus {
                mapped_sectors: num(mapped)?,
                highest_mapped_sector: match *highest {
                    "-" => None,
                    h => Some(num(h)?),
                },
                fail: false,
            })
        }
        _ => Err(format!("thin status {line:?} has {} fields", fields.len())),
    }
}

/// The size in bytes of a block device (`BLKGETSIZE64`) or of a regular file.
pub fn device_size(path: &Path) -> Result<u64, DmError> {
    let io_err = |op, e| DmError::Io {
        op,
        path: path.to_path_buf(),
        source: e,
    };
    let file = File::open(path).map_err(|e| io_err("open", e))?;
    let meta = file.metadata().map_err(|e| io_err("stat", e))?;
    if !meta.file_type().is_block_device() {
        return Ok(meta.len());
    }
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64.
    unsafe { blk_get_size64(file.as_raw_fd(), &mut size) }
        .map_err(|e| io_err("BLKGETSIZE64", e.into()))?;
    Ok(size)
}

/// Discards every block of a block device (`blkdiscard`, containerd's `discard_blocks`): on
/// a thin device the pool unmaps the blocks at once.
pub fn discard(path: &Path) -> Result<(), DmError> {
    let size = device_size(path)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| DmError::Io {
            op: "open",
            path: path.to_path_buf(),
            source: e,
        })?;
    let range = [0u64, size];
    // SAFETY: BLKDISCARD reads a uint64_t[2].
    unsafe { blk_discard(file.as_raw_fd(), &range) }.map_err(|e| DmError::Io {
        op: "BLKDISCARD",
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    Ok(())
}

fn check_id(op: &str, pool: &str, id: u32) -> Result<(), DmError> {
    if id > MAX_DEVICE_ID {
        return Err(DmError::Invalid {
            what: "thin device id",
            value: format!("{id} ({op} on {pool})"),
            reason: "is larger than 24 bits",
        });
    }
    Ok(())
}

/// The thin-pool table line (containerd's `makeThinPoolMapping`).
pub(crate) fn pool_table(
    data_sectors: u64,
    meta_dev: &Path,
    data_dev: &Path,
    block_size_sectors: u32,
) -> Target {
    Target {
        start: 0,
        length: data_sectors,
        target_type: "thin-pool".into(),
        params: format!(
            "{} {} {block_size_sectors} {LOW_WATER_MARK} 1 skip_block_zeroing",
            meta_dev.display(),
            data_dev.display()
        ),
    }
}

/// The thin table line (containerd's `makeThinMapping`, the pool by number).
pub(crate) fn thin_table(pool_dev: u64, dev_id: u32, size_bytes: u64) -> Target {
    Target {
        start: 0,
        length: size_bytes / SECTOR_SIZE,
        target_type: "thin".into(),
        params: format!(
            "{}:{} {dev_id}",
            nix::sys::stat::major(pool_dev),
            nix::sys::stat::minor(pool_dev)
        ),
    }
}

/// An active thin pool.
#[derive(Debug)]
pub struct Pool {
    control: Control,
    name: String,
    dev: u64,
    block_sectors: u32,
}

impl Pool {
    /// Creates and activates the pool `name` on `data_dev` and `meta_dev` (block devices):
    /// `0 <data sectors> thin-pool <meta> <data> <block sectors> 32768 1 skip_block_zeroing`.
    /// A metadata device that starts zeroed (its first 4 KiB) gets a fresh pool; one holding
    /// pool metadata is opened as it is. `EEXIST` (AlreadyExists) if the name is taken.
    pub fn create(
        name: &str,
        data_dev: &Path,
        meta_dev: &Path,
        block_size_sectors: u32,
    ) -> Result<Pool, DmError> {
        if !(MIN_BLOCK_SECTORS..=MAX_BLOCK_SECTORS).contains(&block_size_sectors)
            || !block_size_sectors.is_multiple_of(MIN_BLOCK_SECTORS)
        {
            return Err(DmError::Invalid {
                what: "thin-pool block size",
                value: format!("{block_size_sectors} sectors"),
                reason: "must be a multiple of 128 sectors (64 KiB) from 128 to 2097152",
            });
        }
        let data_sectors = device_size(data_dev)? / SECTOR_SIZE;
        let table = pool_table(data_sectors, meta_dev, data_dev, block_size_sectors);
        let control = Control::open()?;
        control.create(name, "")?;
        let made = control
            .load_table(name, std::slice::from_ref(&table))
            .and_then(|()| control.resume(name))
            .and_then(|dev| dm::ensure_node(name, dev).map(|_| dev));
        match made {
            Ok(dev) => Ok(Pool {
                control,
                name: name.to_string(),
                dev,
                block_sectors: block_size_sectors,
            }),
            Err(e) => {
                // Nothing left half-made: the device we created goes.
                if let Err(undo) = control.remove(name) {
                    tracing::warn!(pool = name, error = %undo, "removing a half-made thin-pool");
                }
                let _ = dm::remove_node(name);
                Err(e)
            }
        }
    }

    /// The active pool `name`. `ENXIO` (NotFound) if there is none; a Parse error if its live
    /// table is not one thin-pool target.
    pub fn open(name: &str) -> Result<Pool, DmError> {
        let control = Control::open()?;
        let info = control
            .info(name)?
            .filter(|i| i.active_table)
            .ok_or_else(|| DmError::Ioctl {
                op: "open thin-pool".into(),
                name: name.to_string(),
                errno: Errno::ENXIO,
            })?;
        let table = control.table(name)?;
        let block_sectors = match table.as_slice() {
            [t] if t.target_type == "thin-pool" => t
                .params
                .split_whitespace()
                .nth(2)
                .and_then(|b| b.parse().ok())
                .ok_or_else(|| {
                    DmError::parse("table", name, format!("thin-pool table {:?}", t.params))
                })?,
            other => {
                return Err(DmError::parse(
                    "table",
                    name,
                    format!("not a thin-pool: {other:?}"),
                ))
            }
        };
        dm::ensure_node(name, info.dev)?;
        Ok(Pool {
            control,
            name: name.to_string(),
            dev: info.dev,
            block_sectors,
        })
    }

    /// The pool's device-mapper name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/dev/mapper/<pool>`.
    pub fn path(&self) -> PathBuf {
        dm::device_path(&self.name)
    }

    /// The pool's data block size in sectors.
    pub fn block_sectors(&self) -> u32 {
        self.block_sectors
    }

    /// The control handle, for device calls the pool does not wrap.
    pub fn control(&self) -> &Control {
        &self.control
    }

    fn message(&self, msg: &str) -> Result<Option<String>, DmError> {
        self.control.message(&self.name, 0, msg)
    }

    /// `create_thin <id>`: a new empty thin device. `EEXIST` if the id is in use.
    pub fn create_thin(&self, dev_id: u32) -> Result<(), DmError> {
        check_id("create_thin", &self.name, dev_id)?;
        self.message(&format!("create_thin {dev_id}"))?;
        Ok(())
    }

    /// `create_snap <id> <origin id>`: a snapshot of the thin device `origin_id`. When the
    /// origin is active as `origin_active_name` it is suspended around the message (the
    /// kernel document's "internal snapshots"), and resumed whether or not the message worked.
    pub fn create_snap(
        &self,
        dev_id: u32,
        origin_id: u32,
        origin_active_name: Option<&str>,
    ) -> Result<(), DmError> {
        check_id("create_snap", &self.name, dev_id)?;
        check_id("create_snap", &self.name, origin_id)?;
        let msg = format!("create_snap {dev_id} {origin_id}");
        let origin = match origin_active_name {
            Some(origin) => self
                .control
                .info(origin)?
                .filter(|i| i.active_table)
                .map(|i| (origin, i.suspended)),
            None => None,
        };
        let Some((origin, already_suspended)) = origin else {
            return self.message(&msg).map(|_| ());
        };
        if !already_suspended {
            self.control.suspend(origin)?;
        }
        let sent = self.message(&msg);
        let resumed = self.control.resume(origin);
        match (sent, resumed) {
            (Err(e), Err(resume)) => {
                tracing::error!(device = origin, error = %resume, "resuming a snapshot's origin");
                Err(e)
            }
            (Err(e), Ok(_)) => Err(e),
            (Ok(_), Err(resume)) => Err(resume),
            (Ok(_), Ok(_)) => Ok(()),
        }
    }

    /// `delete <id>`: frees the thin device's blocks and id. `Ok(false)` when the id did not
    /// exist (`ENODATA`, containerd ignores it); `EBUSY` (the device is active) is retried
    /// for up to 10 s as containerd does, then returned.
    pub fn delete(&self, dev_id: u32) -> Result<bool, DmError> {
        check_id("delete", &self.name, dev_id)?;
        let msg = format!("delete {dev_id}");
        let mut tries = 0;
        loop {
            match self.message(&msg) {
                Ok(_) => return Ok(true),
                Err(e) if e.errno() == Some(Errno::ENODATA) => return Ok(false),
                Err(e) if e.errno() == Some(Errno::EBUSY) && tries + 1 < BUSY_RETRIES => {
                    tries += 1;
                    std::thread::sleep(BUSY_RETRY_DELAY);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Activates thin device `dev_id` as `dev_name` of `size_bytes` (containerd's
    /// `ActivateDevice`: create, load `0 <sectors> thin <pool> <id>`, resume) and makes
    /// `/dev/mapper/<dev_name>`; returns that path. A device of that name already active on
    /// the same thin id is taken as it is (recovery after a crash); one half-made (no live
    /// table) gets its table. `EEXIST` if the name is active on another id; nothing is left
    /// behind on failure.
    pub fn activate_thin(
        &self,
        dev_name: &str,
        dev_id: u32,
        size_bytes: u64,
    ) -> Result<PathBuf, DmError> {
        check_id("activate", &self.name, dev_id)?;
        if size_bytes < SECTOR_SIZE {
            return Err(DmError::Invalid {
                what: "thin device size",
                value: format!("{size_bytes} bytes"),
                reason: "is smaller than one sector",
            });
        }
        let table = thin_table(self.dev, dev_id, size_bytes);
        let op = format!("activate thin {dev_id}");
        let existing = self.control.info(dev_name)?;
        if let Some(info) = &existing {
            if info.active_table {
                let live = self.control.table(dev_name)?;
                let same = matches!(live.as_slice(), [t] if t.target_type == "thin"
                    && t.params.split_whitespace().nth(1) == Some(&dev_id.to_string()));
                if !same {
                    return Err(DmError::Ioctl {
                        op,
                        name: dev_name.to_string(),
                        errno: Errno::EEXIST,
                    });
                }
                if info.suspended {
                    self.control.resume(dev_name)?;
                }
                return dm::ensure_node(dev_name, info.dev);
            }
        } else {
            self.control.create(dev_name, "")?;
        }
        let made = self
            .control
            .load_table(dev_name, std::slice::from_ref(&table))
            .and_then(|()| self.control.resume(dev_name))
            .and_then(|dev| dm::ensure_node(dev_name, dev));
        if made.is_err() {
            if let Err(undo) = self.control.remove(dev_name) {
                tracing::warn!(device = dev_name, error = %undo, "removing a half-made thin device");
            }
            let _ = dm::remove_node(dev_name);
        }
        made
    }

    /// Removes the device `dev_name` (its thin device stays in the pool) and its node;
    /// `EBUSY` is retried for up to 10 s. `Ok(false)` if it was not active.
    pub fn deactivate(&self, dev_name: &str) -> Result<bool, DmError> {
        if self.control.info(dev_name)?.is_none() {
            dm::remove_node(dev_name)?;
            return Ok(false);
        }
        let removed = match self.control.remove(dev_name) {
            Ok(()) => true,
            Err(e) if e.errno() == Some(Errno::ENXIO) => false,
            Err(e) => return Err(e),
        };
        dm::remove_node(dev_name)?;
        Ok(removed)
    }

    /// The thin device `dev_name`'s status (containerd's `GetUsage`: mapped sectors x 512).
    pub fn thin_status(&self, dev_name: &str) -> Result<ThinStatus, DmError> {
        let status = self.control.status(dev_name)?;
        match status.as_slice() {
            [t] if t.target_type == "thin" => {
                parse_thin_status(&t.params).map_err(|w| DmError::parse("status", dev_name, w))
            }
            other => Err(DmError::parse(
                "status",
                dev_name,
                format!("not a thin device: {other:?}"),
            )),
        }
    }

    /// The pool's status.
    pub fn pool_status(&self) -> Result<PoolStatus, DmError> {
        let status = self.control.status(&self.name)?;
        match status.as_slice() {
            [t] if t.target_type == "thin-pool" => {
                parse_pool_status(&t.params).map_err(|w| DmError::parse("status", &self.name, w))
            }
            other => Err(DmError::parse(
                "status",
                &self.name,
                format!("not a thin-pool: {other:?}"),
            )),
        }
    }

    /// Removes the pool device (its metadata stays on the metadata device) and its node.
    pub fn remove_pool(self) -> Result<(), DmError> {
        self.control.remove(&self.name)?;
        dm::remove_node(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use berth_registry::ErrorKind;

    use super::*;

    #[test]
    fn pool_status_lines_parse() {
        // thin-provisioning.rst's format, as a 6.1 kernel prints it.
        let s =
            parse_pool_status("3 280/4096 136/1600 - rw discard_passdown queue_if_no_space - 1024")
                .unwrap();
        assert_eq!(
            s,
            PoolStatus {
                transaction_id: 3,
                used_metadata_blocks: 280,
                total_metadata_blocks: 4096,
                used_data_blocks: 136,
                total_data_blocks: 1600,
                held_metadata_root: None,
                read_only: false,
                out_of_data_space: false,
                needs_check: false,
                fail: false,
            }
        );
        let s = parse_pool_status(
            "0 10/4096 1600/1600 42 out_of_data_space no_discard_passdown error_if_no_space needs_check",
        )
        .unwrap();
        assert!(s.read_only && s.out_of_data_space && s.needs_check);
        assert_eq!(s.held_metadata_root, Some(42));
        let s = parse_pool_status("7 1/2 1/2 - ro discard_passdown queue_if_no_space -").unwrap();
        assert!(s.read_only && !s.out_of_data_space);
        assert!(parse_pool_status("Fail").unwrap().fail);
        assert!(parse_pool_status("Error").unwrap().fail);
        for bad in ["", "1 2 3/4 - rw", "1 2/3 4/x - rw", "1 2/3 4/5 - sideways"] {
            assert!(parse_pool_status(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn thin_status_lines_parse() {
        assert_eq!(
            parse_thin_status("17280 204799").unwrap(),
            ThinStatus {
                mapped_sectors: 17280,
                highest_mapped_sector: Some(204799),
                fail: false,
            }
        );
        assert_eq!(
            parse_thin_status("0 -").unwrap(),
            ThinStatus {
                mapped_sectors: 0,
                highest_mapped_sector: None,
                fail: false,
            }
        );
        assert!(parse_thin_status("Fail").unwrap().fail);
        assert!(parse_thin_status("12").is_err());
        assert!(parse_thin_status("a b").is_err());
    }

    #[test]
    fn tables_are_containerds() {
        let t = pool_table(
            2_097_152,
            Path::new("/dev/loop1"),
            Path::new("/dev/loop0"),
            128,
        );
        assert_eq!(t.length, 2_097_152);
        assert_eq!(t.target_type, "thin-pool");
        assert_eq!(
            t.params,
            "/dev/loop1 /dev/loop0 128 32768 1 skip_block_zeroing"
        );
        let t = thin_table(nix::sys::stat::makedev(253, 0), 7, 10 * 1024 * 1024);
        assert_eq!((t.start, t.length), (0, 20480));
        assert_eq!(t.target_type, "thin");
        assert_eq!(t.params, "253:0 7");
    }

    #[test]
    fn ids_beyond_24_bits_are_refused() {
        assert!(check_id("create_thin", "p", MAX_DEVICE_ID).is_ok());
        let e = check_id("create_thin", "p", MAX_DEVICE_ID + 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("24 bits"), "{e}");
    }

    #[test]
    fn device_size_of_a_regular_file_is_its_length() {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(3 * 1024 * 1024).unwrap();
        assert_eq!(device_size(file.path()).unwrap(), 3 * 1024 * 1024);
        let e = device_size(Path::new("/nonexistent/berth-dev")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
}

/// The kernel path, for real: a pool on two loop devices and every call of [`dm`], [`Pool`]
/// and the loop module. Needs root and a kernel with dm-thin-pool, so only built with the
/// `devmapper-kernel-tests` feature: `integration/tests/devmapper_guest.rs` runs them in the
/// QEMU guest.
#[cfg(test)]
#[cfg(feature = "devmapper-kernel-tests")]
mod kernel_tests {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::time::Instant;

    use berth_registry::ErrorKind;

    use super::*;
    use crate::devmapper::loopdev;

    const PREFIX: &str = "berthdmtest-";
    const MIB: u64 = 1024 * 1024;

    /// Removes every device this test made (thin devices first, then the pool) and detaches
    /// the loop devices, also when an assertion fails midway.
    struct Cleanup {
        loops: Vec<PathBuf>,
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Ok(control) = Control::open() {
                let mut names: Vec<String> = control
                    .list()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(n, _)| n)
                    .filter(|n| n.starts_with(PREFIX))
                    .collect();
                // The pool last: its thin devices hold it open.
                names.sort_by_key(|n| n.ends_with("pool"));
                for name in names {
                    let _ = control.remove(&name);
                    let _ = dm::remove_node(&name);
                }
            }
            for l in &self.loops {
                let _ = loopdev::detach(l);
            }
        }
    }

    fn sparse_file(path: &Path, size: u64) {
        File::create(path).unwrap().set_len(size).unwrap();
    }

    #[test]
    fn ioctl_round_trip_cost() {
        dm::availability().unwrap();
        let control = Control::open().unwrap();
        let started = Instant::now();
        for _ in 0..1000 {
            control.version().unwrap();
        }
        // A figure for dm.rs's module doc, not an assertion.
        println!(
            "DM_VERSION ioctl round trip: {:.1} us",
            started.elapsed().as_secs_f64() * 1e6 / 1000.0
        );
        assert_eq!(control.version().unwrap()[0], 4);
        // The same in the same guest for `dmsetup version`, which does one DM_VERSION too.
        if let Some(dmsetup) = [
            "/usr/sbin/dmsetup",
            "/sbin/dmsetup",
            "/usr/local/sbin/dmsetup",
        ]
        .iter()
        .find(|p| Path::new(p).exists())
        {
            let started = Instant::now();
            for _ in 0..100 {
                let out = std::process::Command::new(dmsetup)
                    .arg("version")
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
            }
            println!(
                "dmsetup version: {:.0} us",
                started.elapsed().as_secs_f64() * 1e6 / 100.0
            );
        }
    }

    #[test]
    fn a_pool_on_loop_devices_goes_through_every_call() {
        dm::availability().unwrap();
        // A missing control node is made again from /proc/misc's minor.
        let control_rdev = std::fs::metadata(dm::CONTROL_PATH).unwrap().rdev();
        std::fs::remove_file(dm::CONTROL_PATH).unwrap();
        Control::open().unwrap().version().unwrap();
        assert_eq!(
            std::fs::metadata(dm::CONTROL_PATH).unwrap().rdev(),
            control_rdev
        );
        let dir = tempfile::tempdir().unwrap();
        let (data_file, meta_file) = (dir.path().join("data"), dir.path().join("meta"));
        sparse_file(&data_file, 256 * MIB);
        sparse_file(&meta_file, 16 * MIB);
        let mut cleanup = Cleanup { loops: Vec::new() };
        let data = loopdev::attach(&data_file).unwrap();
        cleanup.loops.push(data.path.clone());
        let meta = loopdev::attach(&meta_file).unwrap();
        cleanup.loops.push(meta.path.clone());
        assert_eq!(loopdev::attach(&data_file).unwrap(), data);

        let pool_name = format!("{PREFIX}pool");
        let pool = Pool::create(&pool_name, &data.path, &meta.path, 128).unwrap();
        let again = Pool::create(&pool_name, &data.path, &meta.path, 128).unwrap_err();
        assert_eq!(again.kind(), ErrorKind::AlreadyExists, "{again}");
        assert!(pool
            .path()
            .metadata()
            .unwrap()
            .file_type()
            .is_block_device());
        let reopened = Pool::open(&pool_name).unwrap();
        assert_eq!(reopened.block_sectors(), 128);
        drop(reopened);
        let table = pool.control().table(&pool_name).unwrap();
        assert_eq!(table.len(), 1);
        assert_eq!(table[0].target_type, "thin-pool");
        assert_eq!(table[0].length, 256 * MIB / SECTOR_SIZE);
        assert!(
            table[0].params.contains(" 128 32768 1 skip_block_zeroing"),
            "{table:?}"
        );
        let status = pool.pool_status().unwrap();
        assert_eq!(status.total_data_blocks, 256 * MIB / (128 * SECTOR_SIZE));
        assert_eq!(status.used_data_blocks, 0);
        assert!(
            !status.read_only && !status.fail && !status.needs_check,
            "{status:?}"
        );
        let missing = Pool::open(&format!("{PREFIX}nopool")).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");

        // A thin device, written to.
        pool.create_thin(1).unwrap();
        let taken = pool.create_thin(1).unwrap_err();
        assert!(taken.is_exists(), "{taken}");
        assert_eq!(
            crate::error::SnapshotError::from(taken).kind(),
            ErrorKind::AlreadyExists
        );
        let thin1 = format!("{PREFIX}thin1");
        let path1 = pool.activate_thin(&thin1, 1, 64 * MIB).unwrap();
        assert_eq!(path1, dm::device_path(&thin1));
        assert_eq!(device_size(&path1).unwrap(), 64 * MIB);
        let info = pool.control().info(&thin1).unwrap().unwrap();
        assert!(
            info.active_table && !info.suspended && !info.inactive_table,
            "{info:?}"
        );
        assert_eq!(info.open_count, 0);
        let table = pool.control().table(&thin1).unwrap();
        assert_eq!(
            table[0].params,
            format!(
                "{}:{} 1",
                pool_info(&pool).major(),
                pool_info(&pool).minor()
            )
        );
        assert!(pool
            .control()
            .list()
            .unwrap()
            .contains(&(thin1.clone(), info.dev)));
        let pattern: Vec<u8> = (0..MIB as usize).map(|i| (i % 251) as u8).collect();
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path1)
                .unwrap();
            f.write_all(&pattern).unwrap();
            f.sync_all().unwrap();
        }
        let thin_status = pool.thin_status(&thin1).unwrap();
        assert!(
            thin_status.mapped_sectors >= MIB / SECTOR_SIZE,
            "{thin_status:?}"
        );
        assert!(thin_status.highest_mapped_sector.is_some());
        let used = pool.pool_status().unwrap().used_data_blocks;
        assert!(used >= MIB / (128 * SECTOR_SIZE), "{used}");

        // A stale node of another number is replaced.
        std::fs::remove_file(&path1).unwrap();
        nix::sys::stat::mknod(
            &path1,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        assert_eq!(dm::ensure_node(&thin1, info.dev).unwrap(), path1);
        assert_eq!(std::fs::metadata(&path1).unwrap().rdev(), info.dev);
        // A symlink to the device's devtmpfs node (as udev makes) is kept.
        let dm_n = format!("/dev/dm-{}", info.minor());
        std::fs::remove_file(&path1).unwrap();
        std::os::unix::fs::symlink(&dm_n, &path1).unwrap();
        assert_eq!(dm::ensure_node(&thin1, info.dev).unwrap(), path1);
        assert!(std::fs::symlink_metadata(&path1)
            .unwrap()
            .file_type()
            .is_symlink());

        // Same name, same id: taken as it is; another id: refused.
        assert_eq!(pool.activate_thin(&thin1, 1, 64 * MIB).unwrap(), path1);
        let other = pool.activate_thin(&thin1, 9, 64 * MIB).unwrap_err();
        assert_eq!(other.kind(), ErrorKind::AlreadyExists, "{other}");

        // A snapshot of the active origin: suspended around the message, resumed after.
        pool.create_snap(2, 1, Some(&thin1)).unwrap();
        assert!(!pool.control().info(&thin1).unwrap().unwrap().suspended);
        let snap2 = format!("{PREFIX}snap2");
        let path2 = pool.activate_thin(&snap2, 2, 64 * MIB).unwrap();
        let mut read = vec![0u8; MIB as usize];
        File::open(&path2).unwrap().read_exact(&mut read).unwrap();
        assert!(read == pattern, "the snapshot reads its origin's data");
        // A snapshot of an origin that does not exist fails, and names the message.
        let bad = pool.create_snap(3, 77, None).unwrap_err();
        assert!(bad.to_string().contains("create_snap 3 77"), "{bad}");

        // Explicit suspend and resume.
        pool.control().suspend(&thin1).unwrap();
        assert!(pool.control().info(&thin1).unwrap().unwrap().suspended);
        assert_eq!(pool.control().resume(&thin1).unwrap(), info.dev);
        assert!(!pool.control().info(&thin1).unwrap().unwrap().suspended);

        // Delete of an active device is busy (after containerd's retries): do not wait 10 s
        // here; deactivate first, then delete twice.
        assert!(pool.deactivate(&snap2).unwrap());
        assert!(!path2.exists());
        assert!(!pool.deactivate(&snap2).unwrap());
        assert!(pool.delete(2).unwrap());
        assert!(!pool.delete(2).unwrap(), "ENODATA: already gone");

        // Discard frees the thin device's blocks in the pool.
        discard(&path1).unwrap();
        assert_eq!(pool.thin_status(&thin1).unwrap().mapped_sectors, 0);

        // remove retries EBUSY while another holder closes the device.
        let holder = File::open(&path1).unwrap();
        assert_eq!(pool.control().info(&thin1).unwrap().unwrap().open_count, 1);
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(holder);
        });
        pool.control().remove(&thin1).unwrap();
        closer.join().unwrap();
        assert_eq!(pool.control().info(&thin1).unwrap(), None);
        dm::remove_node(&thin1).unwrap();
        assert!(pool.delete(1).unwrap());
        assert_eq!(pool.pool_status().unwrap().used_data_blocks, 0);

        // Deferred remove: marked while open, gone at the last close.
        pool.create_thin(3).unwrap();
        let thin3 = format!("{PREFIX}thin3");
        let path3 = pool.activate_thin(&thin3, 3, 8 * MIB).unwrap();
        let mut holder = File::open(&path3).unwrap();
        holder.seek(SeekFrom::Start(0)).unwrap();
        pool.control().remove_deferred(&thin3).unwrap();
        assert!(
            pool.control()
                .info(&thin3)
                .unwrap()
                .unwrap()
                .deferred_remove
        );
        drop(holder);
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.control().info(&thin3).unwrap().is_some() {
            assert!(Instant::now() < deadline, "deferred remove did not happen");
            std::thread::sleep(Duration::from_millis(20));
        }
        dm::remove_node(&thin3).unwrap();
        assert!(pool.delete(3).unwrap());

        // Errors name the device and carry the errno.
        assert_eq!(pool.control().info(&format!("{PREFIX}none")).unwrap(), None);
        let e = pool.control().status(&format!("{PREFIX}none")).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(e.to_string().contains("berthdmtest-none"), "{e}");

        // A name list larger than the first buffer: DM_BUFFER_FULL_FLAG and a retry.
        let long: Vec<String> = (0..200)
            .map(|i| format!("{PREFIX}{i:03}-{}", "x".repeat(100)))
            .collect();
        for name in &long {
            pool.control().create(name, "").unwrap();
        }
        let listed = pool.control().list().unwrap();
        for name in &long {
            assert!(listed.iter().any(|(n, _)| n == name), "{name} not listed");
        }
        for name in &long {
            pool.control().remove(name).unwrap();
        }

        pool.remove_pool().unwrap();
        let control = Control::open().unwrap();
        assert_eq!(control.info(&pool_name).unwrap(), None);
        assert!(!dm::device_path(&pool_name).exists());
        for l in cleanup.loops.drain(..) {
            loopdev::detach(&l).unwrap();
        }
        assert_eq!(loopdev::find(&data_file).unwrap(), None);
    }

    fn pool_info(pool: &Pool) -> dm::DevInfo {
        pool.control().info(pool.name()).unwrap().unwrap()
    }
}
