//! The devmapper snapshotter's device records (containerd `snapshots/devmapper/metadata.go`,
//! `device_info.go`), kept in the tree `devmapper` of the snapshot metastore's sled database so
//! that a snapshot record and its device record change in one transaction.
//!
//! Layout of the tree:
//!
//! ```text
//! dev/<device name>  -> JSON DeviceInfo { device_id, size, name, parent_name, state, error,
//!                                         snapshot, fs_type }
//! id/<u32 BE>        -> [0 free | 1 taken | 2 faulty]   thin ids ever handed out
//! next-id            -> u32 BE                         the next never-used thin id
//! ```
//!
//! Thin ids are 24-bit. As in containerd, the lowest freed id is handed out again before a new
//! one, and the id of a device that could not be made or deleted is marked faulty and never
//! reused. sled transactions cannot scan, so `DeviceStore::candidate_id` finds the id
//! outside the transaction and `tx_add` checks it is still free inside it; the snapshotter
//! serializes its changes, so the check only guards against a bug.

use std::fmt;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::pool::MAX_DEVICE_ID;
use crate::error::SnapshotError;
use crate::storage::TxResult;

/// The name of the device tree in the metastore's database.
pub(crate) const TREE: &str = "devmapper";

const DEV_PREFIX: &str = "dev/";
const ID_PREFIX: &[u8] = b"id/";
const NEXT_ID: &[u8] = b"next-id";

const ID_FREE: u8 = 0;
const ID_TAKEN: u8 = 1;
const ID_FAULTY: u8 = 2;

/// A device's state as its record says (containerd's `DeviceState`, same names). A state in
/// `-ing` is written before the kernel is asked, the state after it once it answered, so a
/// crash leaves the step it was in on record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeviceState {
    /// Allocated, nothing done yet.
    Unknown,
    /// The record (and thin id) is durable; the pool may or may not have the thin device.
    Creating,
    /// The pool has the thin device.
    Created,
    /// The thin device is being activated for the first time (creation is not finished).
    Activating,
    /// The device is meant to be active (an active snapshot or a view): start re-activates it
    /// when the kernel lost it.
    Activated,
    /// Being suspended.
    Suspending,
    /// Suspended.
    Suspended,
    /// Being resumed.
    Resuming,
    /// Resumed.
    Resumed,
    /// Being deactivated (a commit).
    Deactivating,
    /// Inactive: a committed snapshot or the base device.
    Deactivated,
    /// Being deleted from the pool; its snapshot record is gone.
    Removing,
    /// Its snapshot is gone, its deletion from the pool is left to cleanup (`async_remove`).
    Removed,
    /// Something failed that the snapshotter could not roll back; `error` says what.
    Faulty,
}

impl DeviceState {
    /// True while the device's creation is not finished: nobody was handed the snapshot yet,
    /// so recovery deletes the device and drops its records.
    pub fn is_creating(self) -> bool {
        matches!(
            self,
            DeviceState::Unknown
                | DeviceState::Creating
                | DeviceState::Created
                | DeviceState::Activating
        )
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The filesystem on a thin device (`fs_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    /// ext4, the default.
    Ext4,
    /// xfs (mounted with `nouuid`: every snapshot carries its origin's uuid).
    Xfs,
}

impl FsType {
    /// The mount type and config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a device held when it was last measured (the base once formatted, a snapshot at
/// commit): its children's usage is what they hold beyond it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measured {
    /// Bytes the thin device maps (mapped sectors x 512, containerd's measure).
    pub mapped_bytes: u64,
    /// Bytes its filesystem uses (statvfs: blocks - free, x fragment size).
    pub fs_bytes: u64,
    /// Inodes its filesystem uses.
    pub fs_inodes: u64,
}

/// One thin device's record (containerd `DeviceInfo`, plus the owning snapshot and the
/// filesystem, which containerd keeps in a snapshot label, and the last measure).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// The 24-bit thin id in the pool.
    pub device_id: u32,
    /// Virtual size in bytes.
    pub size: u64,
    /// The device-mapper name, `<pool>-snap-<snapshot id>` (or the base's).
    pub name: String,
    /// The device it is a snapshot of (empty for the base).
    pub parent_name: String,
    /// Its state.
    pub state: DeviceState,
    /// The last failed step's error, empty when the last step worked.
    pub error: String,
    /// The key or name of the snapshot it belongs to; empty for the base device.
    pub snapshot: String,
    /// The filesystem it carries.
    pub fs_type: FsType,
    /// What it held when last measured (zero until then).
    #[serde(default)]
    pub measured: Measured,
}

fn dev_key(name: &str) -> Vec<u8> {
    format!("{DEV_PREFIX}{name}").into_bytes()
}

fn id_key(id: u32) -> Vec<u8> {
    let mut key = ID_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn decode(name: &str, bytes: &[u8]) -> Result<DeviceInfo, SnapshotError> {
    serde_json::from_slice(bytes).map_err(|source| SnapshotError::Corrupt {
        key: format!("{DEV_PREFIX}{name}"),
        source,
    })
}

fn encode(info: &DeviceInfo) -> Vec<u8> {
    serde_json::to_vec(info).expect("a device record always serializes to JSON")
}

fn abort<T>(err: SnapshotError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(err))
}

fn read_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// The device record `name`, if any, inside a transaction.
pub(crate) fn tx_get(tx: &TransactionalTree, name: &str) -> TxResult<Option<DeviceInfo>> {
    match tx.get(dev_key(name))? {
        None => Ok(None),
        Some(bytes) => match decode(name, &bytes) {
            Ok(info) => Ok(Some(info)),
            Err(e) => abort(e),
        },
    }
}

fn tx_put(tx: &TransactionalTree, info: &DeviceInfo) -> TxResult<()> {
    tx.insert(dev_key(&info.name), encode(info))?;
    Ok(())
}

/// Adds `info` with the thin id [`DeviceStore::candidate_id`] chose (`info.device_id`),
/// marking the id taken. A record of that name that is not Faulty is AlreadyExists (containerd
/// retries a Faulty one with a new id).
pub(crate) fn tx_add(tx: &TransactionalTree, info: &DeviceInfo) -> TxResult<()> {
    if let Some(existing) = tx_get(tx, &info.name)? {
        if existing.state != DeviceState::Faulty {
            return abort(SnapshotError::AlreadyExists {
                key: format!("device {}", info.name),
            });
        }
    }
    let id = info.device_id;
    let next = tx.get(NEXT_ID)?.and_then(|b| read_u32(&b)).unwrap_or(1);
    match tx.get(id_key(id))?.map(|b| b.first().copied()) {
        Some(Some(ID_FREE)) => {}
        None if id >= next => {
            if id >= MAX_DEVICE_ID {
                return abort(SnapshotError::Unsupported {
                    reason: format!("devmapper: no free thin device id (all {MAX_DEVICE_ID} used)"),
                });
            }
            tx.insert(NEXT_ID, &(id + 1).to_be_bytes())?;
        }
        _ => {
            return abort(SnapshotError::AlreadyExists {
                key: format!("thin device id {id}"),
            })
        }
    }
    tx.insert(id_key(id), &[ID_TAKEN])?;
    tx_put(tx, info)
}

/// Sets the state (and error) of record `name`; NotFound if there is none.
pub(crate) fn tx_set_state(
    tx: &TransactionalTree,
    name: &str,
    state: DeviceState,
    error: &str,
) -> TxResult<DeviceInfo> {
    tx_update(tx, name, |info| {
        info.state = state;
        error.clone_into(&mut info.error);
    })
}

/// Changes record `name` with `f` (which must not change its name or id).
pub(crate) fn tx_update(
    tx: &TransactionalTree,
    name: &str,
    f: impl Fn(&mut DeviceInfo),
) -> TxResult<DeviceInfo> {
    let Some(mut info) = tx_get(tx, name)? else {
        return abort(SnapshotError::NotFound {
            key: format!("device {name}"),
        });
    };
    f(&mut info);
    tx_put(tx, &info)?;
    Ok(info)
}

/// Drops record `name` and frees its thin id (or marks it faulty: `faulty_id`, for an id the
/// pool may still hold). A missing record is fine.
pub(crate) fn tx_remove(tx: &TransactionalTree, name: &str, faulty_id: bool) -> TxResult<()> {
    let Some(info) = tx_get(tx, name)? else {
        return Ok(());
    };
    tx.remove(dev_key(name))?;
    let mark = if faulty_id { ID_FAULTY } else { ID_FREE };
    tx.insert(id_key(info.device_id), &[mark])?;
    Ok(())
}

/// Marks record `name` Faulty with `error`, and its thin id faulty (containerd `MarkFaulty`).
pub(crate) fn tx_mark_faulty(tx: &TransactionalTree, name: &str, error: &str) -> TxResult<()> {
    let info = tx_set_state(tx, name, DeviceState::Faulty, error)?;
    tx.insert(id_key(info.device_id), &[ID_FAULTY])?;
    Ok(())
}

/// Reads of the device tree outside transactions.
#[derive(Debug, Clone)]
pub(crate) struct DeviceStore {
    tree: sled::Tree,
}

impl DeviceStore {
    pub(crate) fn new(tree: sled::Tree) -> DeviceStore {
        DeviceStore { tree }
    }

    /// The tree, for [`crate::storage::MetaStore`]'s transactions.
    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// The record `name`, if any.
    pub(crate) fn get(&self, name: &str) -> Result<Option<DeviceInfo>, SnapshotError> {
        match self
            .tree
            .get(dev_key(name))
            .map_err(|e| SnapshotError::db("get device", e))?
        {
            None => Ok(None),
            Some(bytes) => decode(name, &bytes).map(Some),
        }
    }

    /// Every device record, by name.
    pub(crate) fn list(&self) -> Result<Vec<DeviceInfo>, SnapshotError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(DEV_PREFIX.as_bytes()) {
            let (k, v) = item.map_err(|e| SnapshotError::db("list devices", e))?;
            let name = String::from_utf8_lossy(&k[DEV_PREFIX.len()..]).into_owned();
            out.push(decode(&name, &v)?);
        }
        Ok(out)
    }

    /// The thin id the next [`tx_add`] should take: the lowest freed one, else the next new.
    pub(crate) fn candidate_id(&self) -> Result<u32, SnapshotError> {
        for item in self.tree.scan_prefix(ID_PREFIX) {
            let (k, v) = item.map_err(|e| SnapshotError::db("scan device ids", e))?;
            if v.first() == Some(&ID_FREE) {
                if let Some(id) = read_u32(&k[ID_PREFIX.len()..]) {
                    return Ok(id);
                }
            }
        }
        Ok(self
            .tree
            .get(NEXT_ID)
            .map_err(|e| SnapshotError::db("get next device id", e))?
            .and_then(|b| read_u32(&b))
            .unwrap_or(1))
    }
}

#[cfg(test)]
mod tests {
    use berth_registry::ErrorKind;

    use super::*;
    use crate::storage::{Change, MetaStore};

    fn store() -> (tempfile::TempDir, MetaStore, DeviceStore) {
        let dir = tempfile::tempdir().unwrap();
        let ms = MetaStore::open(&dir.path().join("metadata.db")).unwrap();
        let devices = DeviceStore::new(ms.open_tree(TREE).unwrap());
        (dir, ms, devices)
    }

    fn info(name: &str, id: u32) -> DeviceInfo {
        DeviceInfo {
            device_id: id,
            size: 1 << 30,
            name: name.into(),
            parent_name: String::new(),
            state: DeviceState::Creating,
            error: String::new(),
            snapshot: format!("key-{name}"),
            fs_type: FsType::Ext4,
            measured: Measured::default(),
        }
    }

    fn add(ms: &MetaStore, devices: &DeviceStore, name: &str) -> Result<u32, SnapshotError> {
        let id = devices.candidate_id()?;
        let record = info(name, id);
        ms.transact_tree("add device", Change::Add, devices.tree(), |tx| {
            tx_add(tx, &record)
        })?;
        Ok(id)
    }

    #[test]
    fn ids_start_at_one_and_the_lowest_freed_comes_back() {
        let (_d, ms, devices) = store();
        assert_eq!(add(&ms, &devices, "a").unwrap(), 1);
        assert_eq!(add(&ms, &devices, "b").unwrap(), 2);
        assert_eq!(add(&ms, &devices, "c").unwrap(), 3);
        ms.transact_tree("remove", Change::Remove, devices.tree(), |tx| {
            tx_remove(tx, "c", false)?;
            tx_remove(tx, "a", false)
        })
        .unwrap();
        assert_eq!(add(&ms, &devices, "d").unwrap(), 1);
        assert_eq!(add(&ms, &devices, "e").unwrap(), 3);
        assert_eq!(add(&ms, &devices, "f").unwrap(), 4);
        let names: Vec<_> = devices
            .list()
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["b", "d", "e", "f"]);
    }

    #[test]
    fn faulty_ids_are_never_reused_and_faulty_names_are_retried() {
        let (_d, ms, devices) = store();
        add(&ms, &devices, "a").unwrap();
        add(&ms, &devices, "b").unwrap();
        ms.transact_tree("faulty", Change::Add, devices.tree(), |tx| {
            tx_mark_faulty(tx, "a", "create_snap failed")
        })
        .unwrap();
        let a = devices.get("a").unwrap().unwrap();
        assert_eq!(a.state, DeviceState::Faulty);
        assert_eq!(a.error, "create_snap failed");
        // A Faulty record of the same name is replaced, with a new id.
        assert_eq!(add(&ms, &devices, "a").unwrap(), 3);
        assert_eq!(
            devices.get("a").unwrap().unwrap().state,
            DeviceState::Creating
        );
        // A live one is not.
        let err = add(&ms, &devices, "b").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        // The dropped id stays faulty.
        ms.transact_tree("remove", Change::Remove, devices.tree(), |tx| {
            tx_remove(tx, "b", true)
        })
        .unwrap();
        assert_eq!(add(&ms, &devices, "c").unwrap(), 4);
    }

    #[test]
    fn an_id_taken_meanwhile_is_refused() {
        let (_d, ms, devices) = store();
        let mut record = info("a", 1);
        ms.transact_tree("add", Change::Add, devices.tree(), |tx| tx_add(tx, &record))
            .unwrap();
        record.name = "b".into();
        let err = ms
            .transact_tree("add", Change::Add, devices.tree(), |tx| tx_add(tx, &record))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("thin device id 1"), "{err}");
    }

    #[test]
    fn state_changes_are_durable_and_typed() {
        let (_d, ms, devices) = store();
        add(&ms, &devices, "a").unwrap();
        for state in [
            DeviceState::Activating,
            DeviceState::Activated,
            DeviceState::Deactivating,
            DeviceState::Deactivated,
            DeviceState::Removing,
        ] {
            ms.transact_tree("state", Change::Add, devices.tree(), |tx| {
                tx_set_state(tx, "a", state, "")
            })
            .unwrap();
            assert_eq!(devices.get("a").unwrap().unwrap().state, state);
        }
        let err = ms
            .transact_tree("state", Change::Add, devices.tree(), |tx| {
                tx_set_state(tx, "missing", DeviceState::Activated, "")
            })
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(DeviceState::Creating.is_creating());
        assert!(DeviceState::Activating.is_creating());
        assert!(!DeviceState::Activated.is_creating());
        assert!(!DeviceState::Removing.is_creating());
        assert_eq!(
            serde_json::to_string(&devices.get("a").unwrap().unwrap().state).unwrap(),
            "\"Removing\""
        );
    }

    #[test]
    fn device_records_change_with_the_snapshot_in_one_transaction() {
        let (_d, ms, devices) = store();
        let id = ms.next_id().unwrap();
        let record = info("pool-snap-1", devices.candidate_id().unwrap());
        let also = |tx: &TransactionalTree, _: &crate::storage::Snapshot| tx_add(tx, &record);
        ms.create_snapshot_and(
            id,
            crate::Kind::Active,
            "k",
            None,
            Default::default(),
            Some((devices.tree(), &also)),
        )
        .unwrap();
        assert!(devices.get("pool-snap-1").unwrap().is_some());
        // A failing device change undoes the snapshot change too.
        let refuse = |_: &TransactionalTree, _: &(String, crate::Kind)| -> TxResult<()> {
            abort(SnapshotError::NotFound { key: "x".into() })
        };
        assert!(ms.remove_and("k", Some((devices.tree(), &refuse))).is_err());
        assert!(ms.get_info("k").is_ok());
        let drop_device =
            |tx: &TransactionalTree, _: &(String, crate::Kind)| tx_remove(tx, "pool-snap-1", false);
        ms.remove_and("k", Some((devices.tree(), &drop_device)))
            .unwrap();
        assert!(ms.get_info("k").is_err());
        assert!(devices.get("pool-snap-1").unwrap().is_none());
    }
}
