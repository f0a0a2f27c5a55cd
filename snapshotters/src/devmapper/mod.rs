//! The devmapper snapshotter (containerd `snapshots/devmapper`): every snapshot is a thin
//! device in a device-mapper thin pool, mounted as a block device with its own filesystem.
//!
//! - [`dm`], [`pool`], [`loopdev`]: the kernel interface. It talks to device-mapper through
//!   its ioctls on `/dev/mapper/control`, not by running `dmsetup`: no tool to install or
//!   parse, errors as errnos, and the guest that tests it needs no userspace LVM.
//! - [`metadata`]: the device records.
//! - [`plugin`]: the config and the registration.
//!
//! # Devices
//!
//! A base thin device per filesystem type (`<pool>-base-<fs_type>`, `base_image_size`,
//! formatted once with `mkfs.ext4 -E <fs_options>` or `mkfs.xfs`, its `lost+found` removed)
//! is the origin of every snapshot without a parent: where containerd formats a new thin
//! device for each such snapshot, Berth snapshots the formatted one (same tree, one mkfs).
//! Prepare and View take a thin snapshot (`create_snap`) of the parent's device (or the base),
//! named `<pool>-snap-<snapshot id>` as containerd names it, activate it and return one mount
//! of `/dev/mapper/<pool>-snap-<id>` of type `fs_type` (`nouuid` for xfs, `ro` for views).
//! Commit records the device's usage and deactivates it (deferred, as containerd); Remove
//! deactivates (after `blkdiscard` with `discard_blocks`) and sends `delete`, or with
//! `async_remove` only marks the device Removed for [`Snapshotter::cleanup`], as containerd.
//! Usage is what a layer holds beyond its parent (or the empty base): bytes, the larger of the
//! thin device's mapped sectors beyond the parent's (containerd's measure, which misses blocks
//! the parent had mapped and the layer rewrote) and its filesystem's used bytes beyond the
//! parent's; inodes, its filesystem's used inodes beyond the parent's ([`usage_beyond`]). Both
//! are read at commit (statfs through a temporary mount) and kept in the device record.
//!
//! # Metadata and crash safety
//!
//! Snapshot records live in the shared metastore (`<root>/metadata.db`), device records in
//! the tree `devmapper` of the same database ([`metadata`]), and a snapshot and its device
//! change in one transaction. Every kernel step is bracketed: the record (with the step's
//! `-ing` state) is durable before the message, the resulting state is written after it:
//!
//! ```text
//! prepare/view  [snapshot + device Creating] create_snap [Activating] activate [Activated]
//! commit        [snapshot committed + device Deactivating] deferred remove [Deactivated]
//! remove        deactivate [snapshot gone + device Removing] delete [device gone]
//! base          [Creating] create_thin [Activating] activate, mkfs, deactivate [Deactivated]
//! ```
//!
//! At start ([`DevmapperSnapshotter::new`]) the records are reconciled with the pool:
//! a device still Creating/Created/Activating was never handed out: it is deleted from the
//! pool (`ENODATA`, never made, is fine) and its device and snapshot records go in one
//! transaction; a base that is not Deactivated is deleted and made again when needed;
//! Deactivating is finished; Removing is deleted and its record dropped; an Activated device
//! the kernel lost (a reboot) is activated again, so active snapshots and views mount again;
//! an Activated device the pool does not have is reported and its records dropped (or marked
//! Faulty when the snapshot has children); a snapshot record without a device record is
//! reported and dropped when it has no children. Device-mapper names of this pool that no
//! record owns are removed by cleanup.
//!
//! Hang points ([`hang_points`], `BERTH_DEBUG_HANG_AT`, see `berth-abortpoint`) mark the
//! windows of create and remove for the guest's crash test.

pub mod dm;
#[cfg(test)]
#[cfg(feature = "devmapper-kernel-tests")]
mod kernel_tests;
pub mod loopdev;
pub mod metadata;
pub mod plugin;
pub mod pool;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use crate::common::{parent_id, require_key};
use crate::error::SnapshotError;
use crate::fsutil;
use crate::mount::TempMount;
use crate::snapshotter::{Info, Kind, Mount, Snapshotter, Usage};
use crate::storage::{Change, MetaStore, Snapshot, TxResult};
use metadata::{DeviceInfo, DeviceState, DeviceStore, FsType, Measured};
use pool::Pool;

/// The hang (and abort) points of the devmapper snapshotter, for `BERTH_DEBUG_HANG_AT`.
pub mod hang_points {
    /// Prepare/view: snapshot and device records (state Creating) are durable, nothing sent.
    pub const CREATE_RECORDED: &str = "devmapper.create.recorded";
    /// Prepare/view: the pool made the thin device; its record still says Creating.
    pub const CREATE_SENT: &str = "devmapper.create.sent";
    /// Remove: the device is deactivated; both records are unchanged.
    pub const REMOVE_DEACTIVATED: &str = "devmapper.remove.deactivated";
    /// Remove: the pool deleted the thin device; its record (Removing) is not gone yet.
    pub const REMOVE_DELETED: &str = "devmapper.remove.deleted";
}

/// The parsed config the snapshotter runs with ([`plugin::Config::options`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Root directory (the metastore).
    pub root: PathBuf,
    /// The thin pool's device-mapper name.
    pub pool_name: String,
    /// Virtual size of each thin device, bytes.
    pub base_image_size: u64,
    /// Leave the deletion of removed devices to cleanup.
    pub async_remove: bool,
    /// `blkdiscard` a device before removing it.
    pub discard_blocks: bool,
    /// The filesystem of new base devices.
    pub fs_type: FsType,
    /// `mkfs.ext4 -E` options (empty: containerd's default).
    pub fs_options: String,
    /// How to make the pool when it does not exist (Berth); `None`: it must exist.
    pub pool: Option<PoolSetup>,
}

/// The devices a missing pool is made on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSetup {
    /// Data device: a block device, or a file attached as a loop device.
    pub data_device: PathBuf,
    /// Metadata device: a block device, or a file attached as a loop device.
    pub metadata_device: PathBuf,
    /// Size of a data file made because it is missing.
    pub data_size: u64,
    /// Size of a metadata file made because it is missing.
    pub metadata_size: u64,
    /// The pool's data block size in 512-byte sectors.
    pub block_sectors: u32,
}

/// containerd's `mkfs.ext4 -E` options when `fs_options` is empty.
pub const DEFAULT_EXT4_OPTIONS: &str = "nodiscard,lazy_itable_init=0,lazy_journal_init=0";

/// The devmapper snapshotter.
#[derive(Debug)]
pub struct DevmapperSnapshotter {
    opts: Options,
    ms: MetaStore,
    devices: DeviceStore,
    pool: Pool,
    /// Serializes changes (containerd holds its bolt write transaction over each).
    lock: Mutex<()>,
}

fn abort<T>(err: SnapshotError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(err))
}

/// An error about the snapshotter's own bookkeeping (a record that should be there is not).
fn missing_device(name: &str) -> SnapshotError {
    SnapshotError::Unsupported {
        reason: format!("devmapper: no device record {name}"),
    }
}

impl DevmapperSnapshotter {
    /// Opens the snapshotter: the metastore under `opts.root`, the pool (made from
    /// `opts.pool` when it does not exist), then reconciles records and pool (module docs).
    pub fn new(opts: Options) -> Result<DevmapperSnapshotter, SnapshotError> {
        fsutil::ensure_dir(&opts.root, 0o700)?;
        let ms = MetaStore::open(&opts.root.join("metadata.db"))?;
        let devices = DeviceStore::new(ms.open_tree(metadata::TREE)?);
        let pool = open_pool(&opts)?;
        let sn = DevmapperSnapshotter {
            opts,
            ms,
            devices,
            pool,
            lock: Mutex::new(()),
        };
        sn.recover()?;
        Ok(sn)
    }

    /// The pool's device-mapper name.
    pub fn pool_name(&self) -> &str {
        &self.opts.pool_name
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Every device record (the base devices' too), for consistency checks and debugging.
    pub fn devices(&self) -> Result<Vec<DeviceInfo>, SnapshotError> {
        self.devices.list()
    }

    /// The device name of snapshot `id` (containerd `getDeviceName`).
    pub fn device_name(&self, id: &str) -> String {
        format!("{}-snap-{id}", self.opts.pool_name)
    }

    fn base_name(&self, fs: FsType) -> String {
        format!("{}-base-{fs}", self.opts.pool_name)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn device_tx<T>(
        &self,
        op: &'static str,
        change: Change,
        f: impl Fn(&TransactionalTree) -> TxResult<T>,
    ) -> Result<T, SnapshotError> {
        self.ms.transact_tree(op, change, self.devices.tree(), f)
    }

    fn set_state(&self, name: &str, state: DeviceState, error: &str) -> Result<(), SnapshotError> {
        self.device_tx("set device state", Change::Add, |tx| {
            metadata::tx_set_state(tx, name, state, error).map(|_| ())
        })
    }

    /// Records a failed step on the device (its state stays), logging if even that fails.
    fn note_error(&self, name: &str, err: &SnapshotError) {
        let text = err.to_string();
        let noted = self.device_tx("note device error", Change::Add, |tx| {
            metadata::tx_update(tx, name, |i| text.clone_into(&mut i.error)).map(|_| ())
        });
        if let Err(e) = noted {
            tracing::warn!(device = name, error = %e, "recording a device error");
        }
    }

    /// Deactivates, deletes from the pool and drops the record of `device`; a pool that does
    /// not have it is fine. When the delete fails the record is marked Faulty.
    fn destroy(&self, device: &DeviceInfo) -> Result<(), SnapshotError> {
        self.pool.deactivate(&device.name)?;
        if let Err(e) = self.pool.delete(device.device_id) {
            let err = SnapshotError::from(e);
            let text = err.to_string();
            self.device_tx("mark device faulty", Change::Add, |tx| {
                metadata::tx_mark_faulty(tx, &device.name, &text)
            })?;
            return Err(err);
        }
        self.device_tx("remove device", Change::Remove, |tx| {
            metadata::tx_remove(tx, &device.name, false)
        })
    }

    fn destroy_quietly(&self, device: &DeviceInfo) {
        if let Err(e) = self.destroy(device) {
            tracing::warn!(device = %device.name, error = %e, "removing devmapper device");
        }
    }

    /// The formatted, inactive base device for `opts.fs_type`, made when missing.
    fn ensure_base(&self) -> Result<DeviceInfo, SnapshotError> {
        let fs = self.opts.fs_type;
        let name = self.base_name(fs);
        if let Some(base) = self.devices.get(&name)? {
            if base.state == DeviceState::Deactivated {
                return Ok(base);
            }
            self.destroy(&base)?;
        }
        let mut base = DeviceInfo {
            device_id: self.devices.candidate_id()?,
            size: self.opts.base_image_size,
            name: name.clone(),
            parent_name: String::new(),
            state: DeviceState::Creating,
            error: String::new(),
            snapshot: String::new(),
            fs_type: fs,
            measured: Measured::default(),
        };
        self.device_tx("add base device", Change::Add, |tx| {
            metadata::tx_add(tx, &base)
        })?;
        let made = self.make_base(&base);
        if let Err(e) = made {
            tracing::warn!(device = %name, error = %e, "making the devmapper base device failed");
            self.destroy_quietly(&base);
            return Err(e);
        }
        base.state = DeviceState::Deactivated;
        Ok(base)
    }

    fn make_base(&self, base: &DeviceInfo) -> Result<(), SnapshotError> {
        self.pool.create_thin(base.device_id)?;
        self.set_state(&base.name, DeviceState::Activating, "")?;
        let path = self
            .pool
            .activate_thin(&base.name, base.device_id, base.size)?;
        mkfs(base.fs_type, &self.opts.fs_options, &path)?;
        // containerd removes lost+found from each new filesystem.
        let mount = device_mount(base, Kind::Active);
        let m = TempMount::new(std::slice::from_ref(&mount))?;
        let lost = m.path().join("lost+found");
        match std::fs::remove_dir(&lost) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SnapshotError::io("remove", lost, e)),
        }
        m.close()?;
        let measured = self.measure(base, Kind::Active)?;
        self.pool.deactivate(&base.name)?;
        self.device_tx("set device state", Change::Add, |tx| {
            metadata::tx_update(tx, &base.name, |i| {
                i.state = DeviceState::Deactivated;
                i.measured = measured;
            })
            .map(|_| ())
        })
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        require_key(key)?;
        let _guard = self.lock();
        let origin = match parent_id(&self.ms, parent)? {
            Some(pid) => {
                let name = self.device_name(&pid);
                self.devices
                    .get(&name)?
                    .ok_or_else(|| missing_device(&name))?
            }
            None => self.ensure_base()?,
        };
        let id = self.ms.next_id()?;
        let device = DeviceInfo {
            device_id: self.devices.candidate_id()?,
            size: self.opts.base_image_size,
            name: self.device_name(&id.to_string()),
            parent_name: origin.name.clone(),
            state: DeviceState::Creating,
            error: String::new(),
            snapshot: key.to_owned(),
            fs_type: origin.fs_type,
            measured: Measured::default(),
        };
        let add = |tx: &TransactionalTree, _: &Snapshot| metadata::tx_add(tx, &device);
        self.ms.create_snapshot_and(
            id,
            kind,
            key,
            parent,
            labels,
            Some((self.devices.tree(), &add)),
        )?;
        berth_abortpoint::hit(hang_points::CREATE_RECORDED);
        if let Err(e) =
            self.pool
                .create_snap(device.device_id, origin.device_id, Some(&origin.name))
        {
            // EEXIST: the pool holds that id although no record does; never hand it out again.
            self.drop_records(key, &device, e.is_exists());
            return Err(e.into());
        }
        berth_abortpoint::hit(hang_points::CREATE_SENT);
        let activated = self
            .set_state(&device.name, DeviceState::Activating, "")
            .and_then(|()| {
                self.pool
                    .activate_thin(&device.name, device.device_id, device.size)
                    .map_err(SnapshotError::from)
            })
            .and_then(|_| self.set_state(&device.name, DeviceState::Activated, ""));
        if let Err(e) = activated {
            let undone = self
                .pool
                .deactivate(&device.name)
                .and_then(|_| self.pool.delete(device.device_id));
            match undone {
                Ok(_) => self.drop_records(key, &device, false),
                Err(undo) => {
                    tracing::warn!(device = %device.name, error = %undo, "undoing a failed activation");
                    self.drop_records(key, &device, true);
                }
            }
            return Err(e);
        }
        Ok(vec![device_mount(&device, kind)])
    }

    /// Drops the snapshot `key` and the record of `device` in one transaction, logging a
    /// failure (the caller is returning an error already; start retries).
    fn drop_records(&self, key: &str, device: &DeviceInfo, faulty_id: bool) {
        let drop = |tx: &TransactionalTree, _: &(String, Kind)| {
            metadata::tx_remove(tx, &device.name, faulty_id)
        };
        if let Err(e) = self.ms.remove_and(key, Some((self.devices.tree(), &drop))) {
            tracing::warn!(key, device = %device.name, error = %e, "dropping the records of a failed create");
        }
    }

    /// What the active `device` holds: the bytes its thin device maps (containerd
    /// `GetUsage`) and the bytes and inodes its filesystem uses (statvfs through a temporary
    /// mount).
    fn measure(&self, device: &DeviceInfo, kind: Kind) -> Result<Measured, SnapshotError> {
        let status = self.pool.thin_status(&device.name)?;
        let mount = device_mount(device, kind);
        let m = TempMount::new(std::slice::from_ref(&mount))?;
        let stat = nix::sys::statvfs::statvfs(m.path())
            .map_err(|e| SnapshotError::sys("statvfs", m.path(), e))?;
        m.close()?;
        let used_blocks = stat.blocks().saturating_sub(stat.blocks_free());
        Ok(Measured {
            mapped_bytes: status.mapped_sectors * dm::SECTOR_SIZE,
            fs_bytes: used_blocks * stat.fragment_size(),
            fs_inodes: stat.files().saturating_sub(stat.files_free()),
        })
    }

    /// The usage of the active `device` now: what it holds beyond its origin (parent or base)
    /// when that was measured.
    fn layer_usage(&self, device: &DeviceInfo) -> Result<(Usage, Measured), SnapshotError> {
        let now = self.measure(device, Kind::Active)?;
        let origin = self
            .devices
            .get(&device.parent_name)?
            .map(|d| d.measured)
            .unwrap_or_default();
        Ok((usage_beyond(now, origin), now))
    }

    /// Deactivates `name` once nothing holds it (containerd's deferred remove at commit).
    fn deactivate_deferred(&self, name: &str) -> Result<(), SnapshotError> {
        if self.pool.control().info(name)?.is_some() {
            self.pool.control().remove_deferred(name)?;
        }
        dm::remove_node(name)?;
        Ok(())
    }

    /// The device record of snapshot `id`.
    fn device_of(&self, id: &str) -> Result<DeviceInfo, SnapshotError> {
        let name = self.device_name(id);
        self.devices
            .get(&name)?
            .ok_or_else(|| missing_device(&name))
    }

    /// Reconciles the records with the pool (module docs); run once, before any request.
    fn recover(&self) -> Result<(), SnapshotError> {
        for device in self.devices.list()? {
            let is_base = device.snapshot.is_empty() && device.parent_name.is_empty();
            if is_base {
                if device.state != DeviceState::Deactivated {
                    tracing::warn!(device = %device.name, state = %device.state, "devmapper: removing a half-made base device");
                    self.destroy_quietly(&device);
                }
                continue;
            }
            match device.state {
                s if s.is_creating() => self.recover_creating(&device),
                DeviceState::Deactivating => match self.deactivate_deferred(&device.name) {
                    Ok(()) => self.set_state(&device.name, DeviceState::Deactivated, "")?,
                    Err(e) => self.note_error(&device.name, &e),
                },
                DeviceState::Removing => {
                    tracing::info!(device = %device.name, "devmapper: finishing an interrupted remove");
                    self.destroy_quietly(&device);
                }
                DeviceState::Activated => self.reactivate(&device)?,
                DeviceState::Suspending
                | DeviceState::Suspended
                | DeviceState::Resuming
                | DeviceState::Resumed => {
                    tracing::warn!(device = %device.name, state = %device.state, "devmapper device has invalid state, marking as faulty");
                    let error = format!("found in state {} at start", device.state);
                    self.device_tx("mark device faulty", Change::Add, |tx| {
                        metadata::tx_mark_faulty(tx, &device.name, &error)
                    })?;
                }
                _ => {}
            }
        }
        // Snapshot records without a device record.
        for info in self.ms.walk(&berth_filters::Filter::always())? {
            let (id, _, _) = self.ms.get_info(&info.name)?;
            if self.devices.get(&self.device_name(&id))?.is_some() {
                continue;
            }
            tracing::warn!(snapshot = %info.name, id, "devmapper: snapshot has no device record, removing it");
            if let Err(e) = self.ms.remove(&info.name) {
                tracing::warn!(snapshot = %info.name, error = %e, "devmapper: cannot remove a snapshot without device");
            }
        }
        Ok(())
    }

    /// A device whose creation never finished: gone from the pool, its records dropped.
    fn recover_creating(&self, device: &DeviceInfo) {
        tracing::warn!(device = %device.name, state = %device.state, snapshot = %device.snapshot, "devmapper: removing a half-made device");
        let deleted = self
            .pool
            .deactivate(&device.name)
            .and_then(|_| self.pool.delete(device.device_id));
        if let Err(e) = deleted {
            let err = SnapshotError::from(e);
            tracing::warn!(device = %device.name, error = %err, "devmapper: deleting a half-made device");
            let text = err.to_string();
            if let Err(e) = self.device_tx("mark device faulty", Change::Add, |tx| {
                metadata::tx_mark_faulty(tx, &device.name, &text)
            }) {
                tracing::warn!(device = %device.name, error = %e, "marking a device faulty");
            }
            return;
        }
        self.drop_owned(device);
    }

    /// Drops `device`'s record and, in the same transaction, its snapshot's if that has this
    /// device's id and no children; otherwise the device record alone.
    fn drop_owned(&self, device: &DeviceInfo) {
        let name = device.name.clone();
        let own = |tx: &TransactionalTree, removed: &(String, Kind)| {
            if self.device_name(&removed.0) != name {
                return abort(SnapshotError::NotFound {
                    key: device.snapshot.clone(),
                });
            }
            metadata::tx_remove(tx, &name, false)
        };
        let with_snapshot = if device.snapshot.is_empty() {
            Err(SnapshotError::NotFound { key: String::new() })
        } else {
            self.ms
                .remove_and(&device.snapshot, Some((self.devices.tree(), &own)))
                .map(|_| ())
        };
        if with_snapshot.is_err() {
            if let Err(e) = self.device_tx("remove device", Change::Remove, |tx| {
                metadata::tx_remove(tx, &name, false)
            }) {
                tracing::warn!(device = %name, error = %e, "dropping a device record");
            }
        }
    }

    /// An Activated device the kernel may have lost (a reboot): active again. One the pool
    /// does not have is reported and its records dropped (Faulty when it has children).
    fn reactivate(&self, device: &DeviceInfo) -> Result<(), SnapshotError> {
        let live = self
            .pool
            .control()
            .info(&device.name)?
            .is_some_and(|i| i.active_table && !i.suspended);
        if live {
            dm::ensure_node(
                &device.name,
                self.pool.control().info(&device.name)?.map_or(0, |i| i.dev),
            )?;
            return Ok(());
        }
        match self
            .pool
            .activate_thin(&device.name, device.device_id, device.size)
        {
            Ok(_) => {
                tracing::info!(device = %device.name, "devmapper: re-activated device");
                Ok(())
            }
            Err(e) if e.is_not_found() => {
                tracing::error!(device = %device.name, thin_id = device.device_id, snapshot = %device.snapshot, "devmapper: the pool has no thin device for this record; dropping the snapshot");
                let before = self.devices.get(&device.name)?;
                self.drop_owned(device);
                if before.is_some() && self.devices.get(&device.name)?.is_some() {
                    let text = format!("thin device {} missing from the pool", device.device_id);
                    self.device_tx("mark device faulty", Change::Add, |tx| {
                        metadata::tx_mark_faulty(tx, &device.name, &text)
                    })?;
                }
                Ok(())
            }
            Err(e) => {
                let err = SnapshotError::from(e);
                tracing::error!(device = %device.name, error = %err, "devmapper: re-activating a device");
                self.note_error(&device.name, &err);
                Ok(())
            }
        }
    }
}

/// The usage of a layer that holds `now` on top of an origin that held `origin`: bytes, the
/// larger of what the thin device maps beyond its origin (containerd's measure; whole pool
/// blocks, blind to blocks the origin had mapped and the layer rewrote) and what its filesystem
/// uses beyond its origin's; inodes, its filesystem's beyond its origin's.
pub fn usage_beyond(now: Measured, origin: Measured) -> Usage {
    let mapped = now.mapped_bytes.saturating_sub(origin.mapped_bytes);
    let fs = now.fs_bytes.saturating_sub(origin.fs_bytes);
    Usage {
        size: i64::try_from(mapped.max(fs)).unwrap_or(i64::MAX),
        inodes: i64::try_from(now.fs_inodes.saturating_sub(origin.fs_inodes)).unwrap_or(i64::MAX),
    }
}

/// What a devmapper snapshotter recorded under its root ([`dump`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dump {
    /// Every device record (base devices included: their `snapshot` is empty).
    pub devices: Vec<DeviceInfo>,
    /// Every snapshot: key or name, id (its device is `<pool>-snap-<id>`) and kind.
    pub snapshots: Vec<DumpedSnapshot>,
}

/// One snapshot of a [`Dump`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DumpedSnapshot {
    /// Key (active, view) or name (committed).
    pub key: String,
    /// The snapshot id.
    pub id: String,
    /// `active`, `view` or `committed`.
    pub kind: String,
}

/// The records of the devmapper snapshotter whose root is `root`, read without touching the
/// kernel (for the guest's consistency check and `berth-devmapper-dump`). The database is
/// locked by a running berthd: call it while none runs on that root.
pub fn dump(root: &Path) -> Result<Dump, SnapshotError> {
    let ms = MetaStore::open(&root.join("metadata.db"))?;
    let devices = DeviceStore::new(ms.open_tree(metadata::TREE)?).list()?;
    let mut snapshots = Vec::new();
    for info in ms.walk(&berth_filters::Filter::always())? {
        let (id, _, _) = ms.get_info(&info.name)?;
        snapshots.push(DumpedSnapshot {
            key: info.name,
            id,
            kind: info.kind.as_str().to_owned(),
        });
    }
    Ok(Dump { devices, snapshots })
}

/// The mount of a snapshot's device (containerd `buildMounts`): `/dev/mapper/<name>` of the
/// device's filesystem type, `nouuid` for xfs, `ro` unless active.
pub fn device_mount(device: &DeviceInfo, kind: Kind) -> Mount {
    let mut options = Vec::new();
    if device.fs_type == FsType::Xfs {
        options.push("nouuid".to_owned());
    }
    if kind != Kind::Active {
        options.push("ro".to_owned());
    }
    Mount {
        mount_type: device.fs_type.as_str().to_owned(),
        source: dm::device_path(&device.name).display().to_string(),
        target: String::new(),
        options,
    }
}

/// The pool `opts.pool_name`: the existing one, or one made on `opts.pool`'s devices.
fn open_pool(opts: &Options) -> Result<Pool, SnapshotError> {
    let e = match Pool::open(&opts.pool_name) {
        Ok(pool) => return Ok(pool),
        Err(e) => e,
    };
    let Some(setup) = opts.pool.as_ref().filter(|_| e.is_not_found()) else {
        return Err(SnapshotError::Unsupported {
            reason: format!(
                "failed to query pool {:?}: {e}",
                dm::device_path(&opts.pool_name)
            ),
        });
    };
    let data = backing_device(&setup.data_device, setup.data_size)?;
    let meta = backing_device(&setup.metadata_device, setup.metadata_size)?;
    tracing::info!(pool = %opts.pool_name, data = %data.display(), metadata = %meta.display(), "creating devmapper thin-pool");
    Ok(Pool::create(
        &opts.pool_name,
        &data,
        &meta,
        setup.block_sectors,
    )?)
}

/// A block device as it is; a regular file (made sparse with `size` when missing) attached
/// as a loop device.
fn backing_device(path: &Path, size: u64) -> Result<PathBuf, SnapshotError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_block_device() => return Ok(path.to_path_buf()),
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(SnapshotError::Unsupported {
                reason: format!(
                    "devmapper: {} is neither a block device nor a regular file",
                    path.display()
                ),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| SnapshotError::io("create", parent, e))?;
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| SnapshotError::io("create", path, e))?;
            file.set_len(size)
                .map_err(|e| SnapshotError::io("truncate", path, e))?;
            file.sync_all()
                .map_err(|e| SnapshotError::io("sync", path, e))?;
        }
        Err(e) => return Err(SnapshotError::io("stat", path, e)),
    }
    Ok(loopdev::attach(path)?.path)
}

/// Formats `path` as containerd does: `mkfs.ext4 -E <options> <path>` (containerd's options
/// when empty) or `mkfs.xfs <path>`.
fn mkfs(fs: FsType, options: &str, path: &Path) -> Result<(), SnapshotError> {
    let (tool, args): (&'static str, Vec<String>) = match fs {
        FsType::Ext4 => {
            let options = if options.is_empty() {
                DEFAULT_EXT4_OPTIONS
            } else {
                options
            };
            ("mkfs.ext4", vec!["-E".into(), options.into()])
        }
        FsType::Xfs => ("mkfs.xfs", Vec::new()),
    };
    let out = Command::new(tool)
        .args(&args)
        .arg(path)
        .output()
        .map_err(|e| SnapshotError::io(tool, path, e))?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        return Err(SnapshotError::io(
            tool,
            path,
            std::io::Error::other(format!(
                "{tool} couldn't initialize {path:?}: {}: {}",
                text.trim(),
                out.status
            )),
        ));
    }
    Ok(())
}

impl Snapshotter for DevmapperSnapshotter {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        Ok(self.ms.get_info(key)?.1)
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info, SnapshotError> {
        self.ms.update_info(info, fieldpaths)
    }

    /// An active snapshot's is measured now, a committed one's was stored at commit (a view's
    /// is zero): what the layer holds beyond its parent (or the empty base), see
    /// [`usage_beyond`].
    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let (id, info, stored) = self.ms.get_info(key)?;
        if info.kind != Kind::Active {
            return Ok(stored);
        }
        Ok(self.layer_usage(&self.device_of(&id)?)?.0)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let s = self.ms.get_snapshot(key)?;
        Ok(vec![device_mount(&self.device_of(&s.id)?, s.kind)])
    }

    fn prepare(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.create(Kind::Active, key, parent, labels)
    }

    fn view(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.create(Kind::View, key, parent, labels)
    }

    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError> {
        let _guard = self.lock();
        let id = self.ms.active_id(key)?;
        let device = self.device_of(&id)?;
        let (usage, measured) = self.layer_usage(&device)?;
        let mark = |tx: &TransactionalTree, _: &String| {
            metadata::tx_update(tx, &device.name, |i| {
                i.state = DeviceState::Deactivating;
                name.clone_into(&mut i.snapshot);
                i.error.clear();
                i.measured = measured;
            })
            .map(|_| ())
        };
        self.ms
            .commit_active_and(key, name, usage, labels, Some((self.devices.tree(), &mark)))?;
        // Committed; a failed deactivation is finished at the next start.
        match self.deactivate_deferred(&device.name) {
            Ok(()) => self.set_state(&device.name, DeviceState::Deactivated, "")?,
            Err(e) => {
                tracing::warn!(device = %device.name, error = %e, "devmapper: deactivating a committed device");
                self.note_error(&device.name, &e);
            }
        }
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        let _guard = self.lock();
        let (id, _, _) = self.ms.get_info(key)?;
        let name = self.device_name(&id);
        let device = self.devices.get(&name)?;
        let has_device = device.is_some();
        if self.opts.async_remove {
            let mark = |tx: &TransactionalTree, _: &(String, Kind)| {
                if has_device {
                    metadata::tx_set_state(tx, &name, DeviceState::Removed, "")?;
                }
                Ok(())
            };
            self.ms
                .remove_and(key, Some((self.devices.tree(), &mark)))?;
            return Ok(());
        }
        if has_device && self.pool.control().info(&name)?.is_some() {
            if self.opts.discard_blocks {
                if let Err(e) = pool::discard(&dm::device_path(&name)) {
                    tracing::warn!(device = %name, error = %e, "device is in use, skipping blkdiscard");
                }
            }
            self.pool.deactivate(&name)?;
        }
        berth_abortpoint::hit(hang_points::REMOVE_DEACTIVATED);
        let mark = |tx: &TransactionalTree, _: &(String, Kind)| {
            if has_device {
                metadata::tx_set_state(tx, &name, DeviceState::Removing, "")?;
            }
            Ok(())
        };
        self.ms
            .remove_and(key, Some((self.devices.tree(), &mark)))?;
        let Some(device) = device else {
            return Ok(());
        };
        match self.pool.delete(device.device_id) {
            Ok(_) => {
                berth_abortpoint::hit(hang_points::REMOVE_DELETED);
                self.device_tx("remove device", Change::Remove, |tx| {
                    metadata::tx_remove(tx, &name, false)
                })?;
            }
            Err(e) => {
                // The snapshot is gone; cleanup and the next start retry the delete.
                let err = SnapshotError::from(e);
                tracing::warn!(device = %name, error = %err, "devmapper: deleting a removed snapshot's device");
                self.note_error(&name, &err);
            }
        }
        Ok(())
    }

    fn walk(&self, filter: &berth_filters::Filter) -> Result<Vec<Info>, SnapshotError> {
        self.ms.walk(filter)
    }

    /// Deletes the devices of removed snapshots (`async_remove`, interrupted removes) and
    /// devices no snapshot owns, and removes active device-mapper devices of this pool's
    /// snapshot names that no record knows.
    fn cleanup(&self) -> Result<(), SnapshotError> {
        let _guard = self.lock();
        let ids: HashMap<String, Kind> = self.ms.id_map()?;
        let prefix = self.device_name("");
        let devices = self.devices.list()?;
        let mut first_error = None;
        for device in &devices {
            let owner = device.name.strip_prefix(&prefix);
            let Some(owner) = owner else { continue };
            let gone = matches!(device.state, DeviceState::Removed | DeviceState::Removing)
                || !ids.contains_key(owner);
            if gone {
                tracing::info!(device = %device.name, state = %device.state, "devmapper cleanup: removing device");
                if let Err(e) = self.destroy(device) {
                    first_error.get_or_insert(e);
                }
            }
        }
        let devices = self.devices.list()?;
        let known: std::collections::HashSet<&str> =
            devices.iter().map(|d| d.name.as_str()).collect();
        for (name, _) in self.pool.control().list()? {
            if !name.starts_with(&prefix) || known.contains(name.as_str()) {
                continue;
            }
            tracing::info!(device = %name, "devmapper cleanup: removing a device no record owns");
            // Its thin id, from its table (`thin <pool> <id>`), goes too unless a record has it.
            let thin_id = self
                .pool
                .control()
                .table(&name)
                .ok()
                .and_then(|t| match t.as_slice() {
                    [t] if t.target_type == "thin" => {
                        t.params.split_whitespace().nth(1)?.parse().ok()
                    }
                    _ => None,
                });
            let removed = self.pool.deactivate(&name).and_then(|_| match thin_id {
                Some(id) if !devices.iter().any(|d| d.device_id == id) => {
                    self.pool.delete(id).map(|_| ())
                }
                _ => Ok(()),
            });
            if let Err(e) = removed {
                first_error.get_or_insert(e.into());
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
