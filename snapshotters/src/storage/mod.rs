//! The snapshot metastore every local driver shares (containerd `snapshots/storage`): snapshot
//! ids, parent chains, kinds, labels, timestamps and committed usage, in a sled database at
//! `<root>/metadata.db`.
//!
//! Layout (one tree, `snapshots`):
//!
//! ```text
//! snapshots/<key or name> -> JSON Record { id, kind, parent, labels, created_at, updated_at,
//!                                          usage, children: [child ids] }
//! ```
//!
//! Ids come from sled's persistent id generator, so they never repeat across restarts; a
//! driver reserves one with [`MetaStore::next_id`] before it builds the snapshot's directory
//! and passes it to [`MetaStore::create_snapshot`]. A committed snapshot keeps the id it had
//! while active. Where bolt keeps a `parents` bucket of `(parent id, child id)` keys, each
//! record here lists its children's ids (sled transactions cannot scan a prefix). Every
//! mutation is one transaction followed by a flush.
//!
//! A driver with records of its own that must change together with a snapshot's (devmapper's
//! thin devices) keeps them in a second tree of the same database ([`MetaStore::open_tree`])
//! and passes an [`Also`] to [`MetaStore::create_snapshot_and`], [`MetaStore::commit_active_and`]
//! or [`MetaStore::remove_and`]: both trees change in one sled transaction. Changes of its own
//! tree alone go through [`MetaStore::transact_tree`] (same reserve, same flush).
//!
//! A full disk: the store keeps a [`Reserve`] next to the database, released to open it and
//! to remove snapshots when the filesystem is nearly full, and refuses other writes before
//! sled sees them ([`crate::space`]).

mod record;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use berth_registry::identifiers::validate_label;
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};
use sled::Transactional;

use crate::error::SnapshotError;
use crate::snapshotter::{Info, Kind, Usage};
use crate::space::Reserve;
use record::Record;

/// What a driver needs to build mounts: the snapshot's id, kind and its parents' ids, nearest
/// first (containerd `storage.Snapshot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The snapshot's id, the name of its directory.
    pub id: String,
    /// Active or view.
    pub kind: Kind,
    /// Parent ids, the direct parent first.
    pub parent_ids: Vec<String>,
}

/// The metastore. Cheap to share by reference; all methods take `&self`.
#[derive(Debug, Clone)]
pub struct MetaStore {
    db: sled::Db,
    tree: sled::Tree,
    reserve: Arc<Reserve>,
}

/// Whether a mutation only removes (and may use the reserve) or adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Adds or updates records: refused on a nearly full disk.
    Add,
    /// Only removes: may use the reserve.
    Remove,
}

/// A driver's change to its own tree, run in the same transaction as a snapshot change: the
/// tree (from [`MetaStore::open_tree`]) and a function of its transactional view and of what
/// the snapshot change saw (`A`). An `Abort` from it aborts both.
pub type Also<'a, A> = (
    &'a sled::Tree,
    &'a dyn Fn(&TransactionalTree, &A) -> TxResult<()>,
);

/// The result of a function run inside a metastore transaction.
pub type TxResult<T> = ConflictableTransactionResult<T, SnapshotError>;

fn abort<T>(err: SnapshotError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(err))
}

fn tx_error(op: &'static str, e: TransactionError<SnapshotError>) -> SnapshotError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => SnapshotError::db(op, e),
    }
}

fn tx_get(tx: &TransactionalTree, key: &str) -> TxResult<Option<Record>> {
    match tx.get(key.as_bytes())? {
        None => Ok(None),
        Some(bytes) => match Record::decode(key, &bytes) {
            Ok(record) => Ok(Some(record)),
            Err(e) => abort(e),
        },
    }
}

fn tx_put(tx: &TransactionalTree, key: &str, record: &Record) -> TxResult<()> {
    tx.insert(key.as_bytes(), record.encode())?;
    Ok(())
}

/// The ids of `parent` and its ancestors, nearest first.
fn tx_chain(tx: &TransactionalTree, parent: &Record) -> TxResult<Vec<String>> {
    let mut ids = vec![parent.id.to_string()];
    let mut next = parent.parent.clone();
    while let Some(name) = next {
        let Some(record) = tx_get(tx, &name)? else {
            return abort(SnapshotError::ParentNotFound { parent: name });
        };
        ids.push(record.id.to_string());
        next = record.parent;
    }
    Ok(ids)
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), SnapshotError> {
    for (k, v) in labels {
        validate_label(k, v)?;
    }
    Ok(())
}

fn require_name(what: &'static str, name: &str) -> Result<(), SnapshotError> {
    if name.is_empty() {
        return Err(SnapshotError::EmptyName { what });
    }
    Ok(())
}

impl MetaStore {
    /// Opens (or creates) the database at `path`, e.g. `<root>/metadata.db`.
    /// On a nearly full filesystem the reserve is released first, since sled writes as it
    /// opens.
    pub fn open(path: &Path) -> Result<MetaStore, SnapshotError> {
        let reserve = Arc::new(Reserve::new(path));
        reserve.make_room();
        let db = sled::open(path).map_err(|e| SnapshotError::db("open", e))?;
        let tree = db
            .open_tree("snapshots")
            .map_err(|e| SnapshotError::db("open tree", e))?;
        reserve.replenish();
        Ok(MetaStore { db, tree, reserve })
    }

    /// Makes room for `change` or refuses it before sled is touched.
    fn admit(&self, change: Change) -> Result<(), SnapshotError> {
        match change {
            Change::Add => self.reserve.admit_write()?,
            Change::Remove => self.reserve.make_room(),
        }
        Ok(())
    }

    fn transact<T>(
        &self,
        op: &'static str,
        change: Change,
        f: impl Fn(&TransactionalTree) -> TxResult<T>,
    ) -> Result<T, SnapshotError> {
        self.transact_on(op, change, &self.tree, f)
    }

    /// One transaction on `tree` (of this database), admitted and flushed like every change.
    fn transact_on<T>(
        &self,
        op: &'static str,
        change: Change,
        tree: &sled::Tree,
        f: impl Fn(&TransactionalTree) -> TxResult<T>,
    ) -> Result<T, SnapshotError> {
        self.admit(change)?;
        let out = tree.transaction(f).map_err(|e| tx_error(op, e))?;
        self.flushed()?;
        Ok(out)
    }

    /// A snapshot change `f` and, when given, a driver's change of its own tree in one
    /// transaction; `also` sees what `f` returned.
    fn transact_also<T>(
        &self,
        op: &'static str,
        change: Change,
        also: Option<Also<'_, T>>,
        f: impl Fn(&TransactionalTree) -> TxResult<T>,
    ) -> Result<T, SnapshotError> {
        let Some((tree, also)) = also else {
            return self.transact(op, change, f);
        };
        self.admit(change)?;
        let out = (&self.tree, tree)
            .transaction(|(snapshots, own)| {
                let out = f(snapshots)?;
                also(own, &out)?;
                Ok(out)
            })
            .map_err(|e| tx_error(op, e))?;
        self.flushed()?;
        Ok(out)
    }

    fn flushed(&self) -> Result<(), SnapshotError> {
        self.db.flush().map_err(|e| SnapshotError::db("flush", e))?;
        self.reserve.replenish();
        Ok(())
    }

    /// A second tree of this database for a driver's own records (see the module docs); any
    /// name but `snapshots`, the store's own.
    pub fn open_tree(&self, name: &str) -> Result<sled::Tree, SnapshotError> {
        assert_ne!(
            name, "snapshots",
            "a driver's tree must not be the store's own"
        );
        self.db
            .open_tree(name)
            .map_err(|e| SnapshotError::db("open tree", e))
    }

    /// A change of a driver's own tree alone (from [`MetaStore::open_tree`]): admitted (a
    /// [`Change::Remove`] may use the reserve) and flushed before it returns.
    pub fn transact_tree<T>(
        &self,
        op: &'static str,
        change: Change,
        tree: &sled::Tree,
        f: impl Fn(&TransactionalTree) -> TxResult<T>,
    ) -> Result<T, SnapshotError> {
        self.transact_on(op, change, tree, f)
    }

    fn read(&self, key: &str) -> Result<Record, SnapshotError> {
        let bytes = self
            .tree
            .get(key.as_bytes())
            .map_err(|e| SnapshotError::db("get", e))?
            .ok_or_else(|| SnapshotError::NotFound {
                key: key.to_owned(),
            })?;
        Record::decode(key, &bytes)
    }

    /// Reserves a fresh snapshot id (never 0, never reused).
    pub fn next_id(&self) -> Result<u64, SnapshotError> {
        self.admit(Change::Add)?;
        let id = self
            .db
            .generate_id()
            .map_err(|e| SnapshotError::db("generate id", e))?;
        Ok(id + 1)
    }

    /// Records a new active snapshot or view with the id the caller reserved. The parent must
    /// exist and be committed; the key must be free.
    pub fn create_snapshot(
        &self,
        id: u64,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Snapshot, SnapshotError> {
        self.create_snapshot_and(id, kind, key, parent, labels, None)
    }

    /// [`MetaStore::create_snapshot`] and the driver's `also` in one transaction.
    pub fn create_snapshot_and(
        &self,
        id: u64,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
        also: Option<Also<'_, Snapshot>>,
    ) -> Result<Snapshot, SnapshotError> {
        if kind == Kind::Committed {
            return Err(SnapshotError::InvalidKind { kind });
        }
        require_name("key", key)?;
        validate_labels(&labels)?;
        let parent = parent.filter(|p| !p.is_empty());
        self.transact_also("create snapshot", Change::Add, also, |tx| {
            let mut parent_ids = Vec::new();
            if let Some(parent_name) = parent {
                let Some(mut p) = tx_get(tx, parent_name)? else {
                    return abort(SnapshotError::ParentNotFound {
                        parent: parent_name.to_owned(),
                    });
                };
                if p.kind != Kind::Committed {
                    return abort(SnapshotError::ParentNotCommitted {
                        parent: parent_name.to_owned(),
                    });
                }
                parent_ids = tx_chain(tx, &p)?;
                p.children.insert(id);
                tx_put(tx, parent_name, &p)?;
            }
            if tx_get(tx, key)?.is_some() {
                return abort(SnapshotError::AlreadyExists {
                    key: key.to_owned(),
                });
            }
            let now = SystemTime::now();
            let record = Record {
                id,
                kind,
                parent: parent.map(str::to_owned),
                labels: labels.clone(),
                created_at: now,
                updated_at: now,
                usage: Usage::default(),
                children: Default::default(),
            };
            tx_put(tx, key, &record)?;
            Ok(Snapshot {
                id: id.to_string(),
                kind,
                parent_ids,
            })
        })
    }

    /// The id, kind and parent chain of an active snapshot or view; a committed snapshot is
    /// FailedPrecondition.
    pub fn get_snapshot(&self, key: &str) -> Result<Snapshot, SnapshotError> {
        // A read-only transaction gives a consistent view of the whole chain.
        self.tree
            .transaction(|tx| {
                let Some(record) = tx_get(tx, key)? else {
                    return abort(SnapshotError::NotFound {
                        key: key.to_owned(),
                    });
                };
                if record.kind == Kind::Committed {
                    return abort(SnapshotError::NotActiveOrView {
                        key: key.to_owned(),
                    });
                }
                let parent_ids = match &record.parent {
                    None => Vec::new(),
                    Some(name) => {
                        let Some(p) = tx_get(tx, name)? else {
                            return abort(SnapshotError::ParentNotFound {
                                parent: name.clone(),
                            });
                        };
                        tx_chain(tx, &p)?
                    }
                };
                Ok(Snapshot {
                    id: record.id.to_string(),
                    kind: record.kind,
                    parent_ids,
                })
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => SnapshotError::db("get snapshot", e),
            })
    }

    /// The id, info and stored usage of any snapshot.
    /// The id of the active snapshot `key`, the one thing every driver's commit needs first;
    /// NotActive for a view or a committed snapshot.
    pub fn active_id(&self, key: &str) -> Result<String, SnapshotError> {
        let (id, info, _) = self.get_info(key)?;
        if info.kind != Kind::Active {
            return Err(SnapshotError::NotActive {
                key: key.to_owned(),
            });
        }
        Ok(id)
    }

    pub fn get_info(&self, key: &str) -> Result<(String, Info, Usage), SnapshotError> {
        let record = self.read(key)?;
        Ok((record.id.to_string(), record.info(key), record.usage))
    }

    /// Updates labels (all with no field paths or `labels`, single ones with `labels.<k>`;
    /// a `labels.<k>` absent from `info` or empty is deleted) and the update time.
    pub fn update_info(&self, info: Info, fieldpaths: &[String]) -> Result<Info, SnapshotError> {
        validate_labels(&info.labels)?;
        for path in fieldpaths {
            if path != "labels" && !path.starts_with("labels.") {
                return Err(SnapshotError::BadFieldPath {
                    key: info.name.clone(),
                    field: path.clone(),
                });
            }
        }
        self.transact("update snapshot", Change::Add, |tx| {
            let Some(mut record) = tx_get(tx, &info.name)? else {
                return abort(SnapshotError::NotFound {
                    key: info.name.clone(),
                });
            };
            if fieldpaths.is_empty() {
                record.labels = info.labels.clone();
            }
            for path in fieldpaths {
                if path == "labels" {
                    record.labels = info.labels.clone();
                } else if let Some(label) = path.strip_prefix("labels.") {
                    match info.labels.get(label).filter(|v| !v.is_empty()) {
                        Some(v) => {
                            record.labels.insert(label.to_owned(), v.clone());
                        }
                        None => {
                            record.labels.remove(label);
                        }
                    }
                }
            }
            record.labels.retain(|_, v| !v.is_empty());
            record.updated_at = SystemTime::now();
            tx_put(tx, &info.name, &record)?;
            Ok(record.info(&info.name))
        })
    }

    /// Turns the active snapshot `key` into committed `name`, keeping its id and recording its
    /// usage; the labels replace the active snapshot's. Returns the id.
    pub fn commit_active(
        &self,
        key: &str,
        name: &str,
        usage: Usage,
        labels: BTreeMap<String, String>,
    ) -> Result<String, SnapshotError> {
        self.commit_active_and(key, name, usage, labels, None)
    }

    /// [`MetaStore::commit_active`] and the driver's `also` (which sees the id) in one
    /// transaction.
    pub fn commit_active_and(
        &self,
        key: &str,
        name: &str,
        usage: Usage,
        labels: BTreeMap<String, String>,
        also: Option<Also<'_, String>>,
    ) -> Result<String, SnapshotError> {
        require_name("name", name)?;
        validate_labels(&labels)?;
        self.transact_also("commit snapshot", Change::Add, also, |tx| {
            if tx_get(tx, name)?.is_some() {
                return abort(SnapshotError::AlreadyExists {
                    key: name.to_owned(),
                });
            }
            let Some(mut record) = tx_get(tx, key)? else {
                return abort(SnapshotError::NotFound {
                    key: key.to_owned(),
                });
            };
            if record.kind != Kind::Active {
                return abort(SnapshotError::NotActive {
                    key: key.to_owned(),
                });
            }
            let now = SystemTime::now();
            record.kind = Kind::Committed;
            record.created_at = now;
            record.updated_at = now;
            record.labels = labels.clone();
            record.usage = usage;
            tx.remove(key.as_bytes())?;
            tx_put(tx, name, &record)?;
            Ok(record.id.to_string())
        })
    }

    /// Removes a snapshot without children; returns its id and kind.
    pub fn remove(&self, key: &str) -> Result<(String, Kind), SnapshotError> {
        self.remove_and(key, None)
    }

    /// [`MetaStore::remove`] and the driver's `also` (which sees the id and kind) in one
    /// transaction.
    pub fn remove_and(
        &self,
        key: &str,
        also: Option<Also<'_, (String, Kind)>>,
    ) -> Result<(String, Kind), SnapshotError> {
        self.transact_also("remove snapshot", Change::Remove, also, |tx| {
            let Some(record) = tx_get(tx, key)? else {
                return abort(SnapshotError::NotFound {
                    key: key.to_owned(),
                });
            };
            if !record.children.is_empty() {
                return abort(SnapshotError::HasChildren {
                    key: key.to_owned(),
                });
            }
            if let Some(parent) = &record.parent {
                let Some(mut p) = tx_get(tx, parent)? else {
                    return abort(SnapshotError::ParentNotFound {
                        parent: parent.clone(),
                    });
                };
                p.children.remove(&record.id);
                tx_put(tx, parent, &p)?;
            }
            tx.remove(key.as_bytes())?;
            Ok((record.id.to_string(), record.kind))
        })
    }

    /// Infos of every snapshot the filter matches, in key order.
    pub fn walk(&self, filter: &berth_filters::Filter) -> Result<Vec<Info>, SnapshotError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item.map_err(|e| SnapshotError::db("walk", e))?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let info = Record::decode(&key, &v)?.info(&key);
            if filter.matches(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Every snapshot's id and kind, for finding directories no snapshot owns.
    pub fn id_map(&self) -> Result<HashMap<String, Kind>, SnapshotError> {
        let mut out = HashMap::new();
        for item in self.tree.iter() {
            let (k, v) = item.map_err(|e| SnapshotError::db("id map", e))?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let record = Record::decode(&key, &v)?;
            out.insert(record.id.to_string(), record.kind);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use berth_filters::{parse, Filter};
    use berth_registry::ErrorKind;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn store() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let ms = MetaStore::open(&dir.path().join("metadata.db")).unwrap();
        (dir, ms)
    }

    fn prepare(ms: &MetaStore, key: &str, parent: Option<&str>) -> Snapshot {
        let id = ms.next_id().unwrap();
        ms.create_snapshot(id, Kind::Active, key, parent, BTreeMap::new())
            .unwrap()
    }

    #[test]
    fn chain_of_parents_nearest_first() {
        let (_d, ms) = store();
        let a = prepare(&ms, "a-key", None);
        ms.commit_active("a-key", "a", Usage::default(), BTreeMap::new())
            .unwrap();
        let b = prepare(&ms, "b-key", Some("a"));
        assert_eq!(b.parent_ids, vec![a.id.clone()]);
        ms.commit_active("b-key", "b", Usage { size: 5, inodes: 1 }, BTreeMap::new())
            .unwrap();
        let c = prepare(&ms, "c", Some("b"));
        assert_eq!(c.parent_ids, vec![b.id.clone(), a.id.clone()]);
        assert_eq!(ms.get_snapshot("c").unwrap(), c);
        let (id, info, usage) = ms.get_info("b").unwrap();
        assert_eq!(id, b.id);
        assert_eq!(info.kind, Kind::Committed);
        assert_eq!(info.parent.as_deref(), Some("a"));
        assert_eq!(usage, Usage { size: 5, inodes: 1 });
        assert_eq!(
            ms.get_snapshot("b").unwrap_err().kind(),
            ErrorKind::FailedPrecondition
        );
    }

    #[test]
    fn parent_rules() {
        let (_d, ms) = store();
        let err = ms
            .create_snapshot(1, Kind::Active, "x", Some("nope"), BTreeMap::new())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        prepare(&ms, "active", None);
        let err = ms
            .create_snapshot(2, Kind::View, "y", Some("active"), BTreeMap::new())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let err = ms
            .create_snapshot(3, Kind::Active, "active", None, BTreeMap::new())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        let err = ms
            .create_snapshot(4, Kind::Committed, "z", None, BTreeMap::new())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn remove_refuses_parents_with_children() {
        let (_d, ms) = store();
        prepare(&ms, "p-key", None);
        ms.commit_active("p-key", "p", Usage::default(), BTreeMap::new())
            .unwrap();
        let child = prepare(&ms, "child", Some("p"));
        let err = ms.remove("p").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert_eq!(
            ms.remove("child").unwrap(),
            (child.id.clone(), Kind::Active)
        );
        assert_eq!(ms.remove("p").unwrap().1, Kind::Committed);
        assert_eq!(ms.remove("p").unwrap_err().kind(), ErrorKind::NotFound);
        assert!(ms.id_map().unwrap().is_empty());
    }

    #[test]
    fn commit_rules() {
        let (_d, ms) = store();
        prepare(&ms, "k", None);
        ms.commit_active("k", "n", Usage::default(), labels(&[("a", "1")]))
            .unwrap();
        assert_eq!(
            ms.commit_active("k", "m", Usage::default(), BTreeMap::new())
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );
        prepare(&ms, "k2", None);
        assert_eq!(
            ms.commit_active("k2", "n", Usage::default(), BTreeMap::new())
                .unwrap_err()
                .kind(),
            ErrorKind::AlreadyExists
        );
        let id = ms.next_id().unwrap();
        ms.create_snapshot(id, Kind::View, "v", Some("n"), BTreeMap::new())
            .unwrap();
        assert_eq!(
            ms.commit_active("v", "vv", Usage::default(), BTreeMap::new())
                .unwrap_err()
                .kind(),
            ErrorKind::FailedPrecondition
        );
        assert_eq!(ms.get_info("n").unwrap().1.labels, labels(&[("a", "1")]));
    }

    #[test]
    fn update_labels_by_field_path() {
        let (_d, ms) = store();
        let id = ms.next_id().unwrap();
        ms.create_snapshot(
            id,
            Kind::Active,
            "k",
            None,
            labels(&[("a", "1"), ("b", "2")]),
        )
        .unwrap();
        let before = ms.get_info("k").unwrap().1;
        let info = Info::with_labels("k", labels(&[("a", "x"), ("c", "3")]));
        let updated = ms
            .update_info(info.clone(), &["labels.a".into(), "labels.b".into()])
            .unwrap();
        assert_eq!(updated.labels, labels(&[("a", "x")]));
        assert!(updated.updated_at >= before.updated_at);
        assert_eq!(updated.created_at, before.created_at);
        let updated = ms.update_info(info.clone(), &[]).unwrap();
        assert_eq!(updated.labels, labels(&[("a", "x"), ("c", "3")]));
        let err = ms.update_info(info, &["parent".into()]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let err = ms
            .update_info(Info::with_labels("missing", BTreeMap::new()), &[])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let big = "v".repeat(5000);
        let err = ms
            .update_info(Info::with_labels("k", labels(&[("a", &big)])), &[])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn walk_filters_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.db");
        let first_id;
        {
            let ms = MetaStore::open(&path).unwrap();
            first_id = ms.next_id().unwrap();
            ms.create_snapshot(first_id, Kind::Active, "c-key", None, BTreeMap::new())
                .unwrap();
            ms.commit_active("c-key", "c", Usage::default(), labels(&[("x", "1")]))
                .unwrap();
            let id = ms.next_id().unwrap();
            ms.create_snapshot(id, Kind::Active, "a", Some("c"), BTreeMap::new())
                .unwrap();
            let id = ms.next_id().unwrap();
            ms.create_snapshot(id, Kind::View, "v", Some("c"), BTreeMap::new())
                .unwrap();
        }
        // sled's background flusher of the dropped store may still hold the file lock for a
        // moment (a restart is a new process; here it is the same one): retry briefly.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let ms = loop {
            match MetaStore::open(&path) {
                Ok(ms) => break ms,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("reopen {}: {e:?}", path.display()),
            }
        };
        let names = |f: &Filter| -> Vec<String> {
            ms.walk(f).unwrap().into_iter().map(|i| i.name).collect()
        };
        assert_eq!(names(&Filter::always()), ["a", "c", "v"]);
        assert_eq!(names(&parse("kind==active").unwrap()), ["a"]);
        assert_eq!(names(&parse("kind==view").unwrap()), ["v"]);
        assert_eq!(names(&parse("parent==c").unwrap()), ["a", "v"]);
        assert_eq!(names(&parse("labels.x==1").unwrap()), ["c"]);
        assert!(ms.next_id().unwrap() > first_id);
        assert_eq!(ms.id_map().unwrap().len(), 3);
    }
}
