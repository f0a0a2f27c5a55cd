//! Per-namespace snapshot records. A namespace names snapshots with its own keys; the driver
//! sees backend keys `<ns>/<seq>/<key>`, so namespaces never collide (containerd
//! `metadata/snapshot.go`). The record keeps the client-visible parent, kind and labels.

use std::collections::BTreeMap;
use std::time::SystemTime;

use berth_filters::{label_field, Adaptor};
use berth_registry::identifiers::validate_namespace;
use berth_snapshotters::Kind;
use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::namespaces::check_labels;
use super::tx::{self, abort, finish};
use super::{key, MetadataStore};
use crate::error::{storage, MetadataError};

/// A snapshot as one namespace sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The snapshotter holding it.
    pub snapshotter: String,
    /// The client's key (or committed name).
    pub key: String,
    /// The key the driver knows it by.
    pub backend_key: String,
    /// The client's key of its parent.
    pub parent: Option<String>,
    /// Active, view or committed; stored as the lowercase name (`active`, ...), as always.
    #[serde(with = "stored_kind")]
    pub kind: Kind,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Creation time.
    pub created_at: SystemTime,
    /// Last change.
    pub updated_at: SystemTime,
}

impl Adaptor for SnapshotRecord {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "kind" if path.len() == 1 => Some(self.kind.as_str().to_owned()),
            "name" if path.len() == 1 => Some(self.key.clone()),
            "parent" if path.len() == 1 => self.parent.clone(),
            "labels" => label_field(&self.labels, path),
            _ => None,
        }
    }
}

/// The stored form of [`SnapshotRecord::kind`]: the lowercase name (`active`, `view`,
/// `committed`), which records have always held, so databases written before the field was
/// typed read unchanged. (The driver metastore serializes `Kind` its own way; the two never mix.)
mod stored_kind {
    use berth_snapshotters::Kind;
    use serde::de::{self, Deserializer};
    use serde::{Deserialize, Serializer};

    const NAMES: &[&str] = &["active", "view", "committed"];

    pub(super) fn serialize<S: Serializer>(kind: &Kind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(d)?;
        [Kind::Active, Kind::View, Kind::Committed]
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| de::Error::unknown_variant(&name, NAMES))
    }
}

/// How the namespace-not-empty error names snapshots of one snapshotter.
pub(crate) fn object_kind(snapshotter: &str) -> String {
    format!("snapshots on {snapshotter:?} snapshotter")
}

fn prefix(ns: &str, snapshotter: &str) -> Vec<u8> {
    let mut p = key(&[ns, snapshotter]);
    p.push(0);
    p
}

impl MetadataStore {
    /// A fresh number for backend keys.
    pub fn next_snapshot_seq(&self) -> Result<u64, MetadataError> {
        self.admit_add()?;
        self.db
            .generate_id()
            .map_err(storage("generate snapshot id"))
    }

    /// One record; NotFound (`snapshot <key> does not exist`) if absent.
    pub fn get_snapshot(
        &self,
        ns: &str,
        snapshotter: &str,
        key_: &str,
    ) -> Result<SnapshotRecord, MetadataError> {
        validate_namespace(ns)?;
        let k = key(&[ns, snapshotter, key_]);
        match self.snapshots.get(&k).map_err(storage("get snapshot"))? {
            Some(v) => tx::decode("snapshots", &k, &v),
            None => Err(MetadataError::SnapshotNotFound(key_.to_owned())),
        }
    }

    /// A namespace's records of one snapshotter, sorted by key.
    pub fn list_snapshots(
        &self,
        ns: &str,
        snapshotter: &str,
    ) -> Result<Vec<SnapshotRecord>, MetadataError> {
        validate_namespace(ns)?;
        self.snapshots
            .scan_prefix(prefix(ns, snapshotter))
            .map(|item| {
                let (k, v) = item.map_err(storage("list snapshots"))?;
                tx::decode("snapshots", &k, &v)
            })
            .collect()
    }

    /// Every record of one snapshotter across namespaces, as `(namespace, record)`.
    pub fn all_snapshots(
        &self,
        snapshotter: &str,
    ) -> Result<Vec<(String, SnapshotRecord)>, MetadataError> {
        let mut out = Vec::new();
        for item in self.snapshots.iter() {
            let (k, v) = item.map_err(storage("scan snapshots"))?;
            let rec: SnapshotRecord = tx::decode("snapshots", &k, &v)?;
            if rec.snapshotter == snapshotter {
                let ns = String::from_utf8_lossy(k.split(|b| *b == 0).next().unwrap_or_default())
                    .into_owned();
                out.push((ns, rec));
            }
        }
        Ok(out)
    }

    /// Stores a new record; AlreadyExists if the key is taken.
    pub fn insert_snapshot(&self, ns: &str, rec: &SnapshotRecord) -> Result<(), MetadataError> {
        self.admit_add()?;
        validate_namespace(ns)?;
        check_labels(&rec.labels)?;
        let k = key(&[ns, &rec.snapshotter, &rec.key]);
        let kind = object_kind(&rec.snapshotter);
        finish(
            (&self.namespaces, &self.snapshots).transaction(|(nst, st)| {
                if st.get(&k)?.is_some() {
                    return abort(MetadataError::SnapshotExists(rec.key.clone()));
                }
                tx::write(st, &k, rec)?;
                MetadataStore::count_object(nst, ns, &kind, 1)
            }),
        )?;
        self.flush()
    }

    /// Replaces the active record `key` by the committed record `committed` in one step.
    pub fn commit_snapshot_record(
        &self,
        ns: &str,
        key_: &str,
        committed: &SnapshotRecord,
    ) -> Result<(), MetadataError> {
        self.admit_add()?;
        validate_namespace(ns)?;
        check_labels(&committed.labels)?;
        let old = key(&[ns, &committed.snapshotter, key_]);
        let new = key(&[ns, &committed.snapshotter, &committed.key]);
        finish(self.snapshots.transaction(|st| {
            if st.get(&new)?.is_some() {
                return abort(MetadataError::SnapshotExists(committed.key.clone()));
            }
            if st.remove(old.as_slice())?.is_none() {
                return abort(MetadataError::SnapshotNotFound(key_.to_owned()));
            }
            tx::write(st, &new, committed)
        }))?;
        self.flush()
    }

    /// Rewrites a record's labels (already merged by the caller).
    pub fn update_snapshot_record(
        &self,
        ns: &str,
        rec: &SnapshotRecord,
    ) -> Result<(), MetadataError> {
        self.admit_add()?;
        validate_namespace(ns)?;
        check_labels(&rec.labels)?;
        let k = key(&[ns, &rec.snapshotter, &rec.key]);
        finish(self.snapshots.transaction(|st| {
            if st.get(&k)?.is_none() {
                return abort(MetadataError::SnapshotNotFound(rec.key.clone()));
            }
            tx::write(st, &k, rec)
        }))?;
        self.flush()
    }

    /// Removes a record; FailedPrecondition while another record names it as parent.
    pub fn delete_snapshot_record(
        &self,
        ns: &str,
        snapshotter: &str,
        key_: &str,
    ) -> Result<SnapshotRecord, MetadataError> {
        self.make_room();
        validate_namespace(ns)?;
        for rec in self.list_snapshots(ns, snapshotter)? {
            if rec.parent.as_deref() == Some(key_) {
                return Err(MetadataError::SnapshotHasChildren(key_.to_owned()));
            }
        }
        let k = key(&[ns, snapshotter, key_]);
        let kind = object_kind(snapshotter);
        let rec = finish(
            (&self.namespaces, &self.snapshots).transaction(|(nst, st)| {
                let Some(bytes) = st.remove(k.as_slice())? else {
                    return abort(MetadataError::SnapshotNotFound(key_.to_owned()));
                };
                let rec: SnapshotRecord = match tx::decode("snapshots", &k, &bytes) {
                    Ok(r) => r,
                    Err(e) => return abort(e),
                };
                MetadataStore::count_object(nst, ns, &kind, -1)?;
                Ok(rec)
            }),
        )?;
        self.note_deletion();
        self.flush()?;
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, kind: Kind) -> SnapshotRecord {
        SnapshotRecord {
            snapshotter: "overlayfs".into(),
            key: key.into(),
            backend_key: format!("default/1/{key}"),
            parent: None,
            kind,
            labels: BTreeMap::new(),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn kind_is_stored_by_its_lowercase_name() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetadataStore::open(dir.path()).unwrap();
        for (key, kind, name) in [
            ("a", Kind::Active, "active"),
            ("v", Kind::View, "view"),
            ("c", Kind::Committed, "committed"),
        ] {
            s.insert_snapshot("default", &record(key, kind)).unwrap();
            let raw = s
                .snapshots
                .get(key_of("default", "overlayfs", key))
                .unwrap()
                .unwrap();
            let json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            assert_eq!(json["kind"], name);
            assert_eq!(
                s.get_snapshot("default", "overlayfs", key).unwrap().kind,
                kind
            );
            assert_eq!(
                record(key, kind).field(&["kind".to_owned()]).as_deref(),
                Some(name)
            );
        }
    }

    #[test]
    fn records_written_before_the_kind_was_typed_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetadataStore::open(dir.path()).unwrap();
        let old = br#"{"snapshotter":"overlayfs","key":"c","backend_key":"default/7/c",
            "parent":null,"kind":"committed","labels":{},
            "created_at":{"secs_since_epoch":1,"nanos_since_epoch":0},
            "updated_at":{"secs_since_epoch":1,"nanos_since_epoch":0}}"#;
        s.snapshots
            .insert(key_of("default", "overlayfs", "c"), &old[..])
            .unwrap();
        let rec = s.get_snapshot("default", "overlayfs", "c").unwrap();
        assert_eq!(rec.kind, Kind::Committed);
        assert_eq!(rec.backend_key, "default/7/c");

        let bad = String::from_utf8_lossy(old).replace("committed", "frozen");
        s.snapshots
            .insert(key_of("default", "overlayfs", "f"), bad.as_bytes())
            .unwrap();
        let err = s.get_snapshot("default", "overlayfs", "f").unwrap_err();
        assert!(matches!(err, MetadataError::Corrupt { .. }), "{err}");
    }

    fn key_of(ns: &str, snapshotter: &str, k: &str) -> Vec<u8> {
        key(&[ns, snapshotter, k])
    }
}
