//! Namespaces: a name, labels, and the count of objects that keep it from being deleted.

use std::collections::BTreeMap;

use berth_registry::identifiers::{validate_label, validate_namespace};
use serde::{Deserialize, Serialize};
use sled::transaction::TransactionalTree;

use super::tx::{self, abort, finish, TxResult};
use super::MetadataStore;
use crate::error::{storage, MetadataError};

/// A namespace as clients see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// What is stored under a namespace's key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct NamespaceRecord {
    labels: BTreeMap<String, String>,
    /// Objects held, by kind (`images`, `blobs`, `containers`, `snapshots on "x" snapshotter`,
    /// ...). Kept in the same transaction as the objects so that Delete can refuse atomically.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    objects: BTreeMap<String, u64>,
}

fn read(tree: &TransactionalTree, name: &str) -> TxResult<Option<NamespaceRecord>> {
    tx::read(tree, "namespaces", name.as_bytes())
}

fn write(tree: &TransactionalTree, name: &str, record: &NamespaceRecord) -> TxResult<()> {
    tx::write(tree, name.as_bytes(), record)
}

pub(crate) fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), MetadataError> {
    for (k, v) in labels {
        validate_label(k, v)?;
    }
    Ok(())
}

impl MetadataStore {
    /// Creates a namespace; AlreadyExists if it is there.
    pub fn create_namespace(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Namespace, MetadataError> {
        self.admit_add()?;
        validate_namespace(name)?;
        check_labels(&labels)?;
        finish(self.namespaces.transaction(|tree| {
            if read(tree, name)?.is_some() {
                return abort(MetadataError::NamespaceExists(name.to_owned()));
            }
            let record = NamespaceRecord {
                labels: labels
                    .iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                objects: BTreeMap::new(),
            };
            write(tree, name, &record)?;
            Ok(Namespace {
                name: name.to_owned(),
                labels: record.labels,
            })
        }))
        .and_then(|ns| self.flush().map(|()| ns))
    }

    /// A namespace's labels. An unknown namespace reads as empty, as containerd's does: any
    /// write creates its namespace, so "absent" and "empty" look the same to clients.
    pub fn get_namespace(&self, name: &str) -> Result<Namespace, MetadataError> {
        validate_namespace(name)?;
        let labels = match self.namespaces.get(name).map_err(storage("get"))? {
            None => BTreeMap::new(),
            Some(bytes) => {
                serde_json::from_slice::<NamespaceRecord>(&bytes)
                    .map_err(|source| MetadataError::Corrupt {
                        key: format!("namespaces/{name}"),
                        source,
                    })?
                    .labels
            }
        };
        Ok(Namespace {
            name: name.to_owned(),
            labels,
        })
    }

    /// Every namespace, sorted by name.
    pub fn list_namespaces(&self) -> Result<Vec<Namespace>, MetadataError> {
        self.namespaces
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(storage("list"))?;
                let name = String::from_utf8_lossy(&k).into_owned();
                let record: NamespaceRecord =
                    serde_json::from_slice(&v).map_err(|source| MetadataError::Corrupt {
                        key: format!("namespaces/{name}"),
                        source,
                    })?;
                Ok(Namespace {
                    name,
                    labels: record.labels,
                })
            })
            .collect()
    }

    /// Updates labels. With field paths, each `labels.<k>` is set from `labels` (absent or
    /// empty deletes it); without, the labels are replaced. Creates the namespace if absent,
    /// as containerd's label writes do.
    pub fn update_namespace(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<Namespace, MetadataError> {
        self.admit_add()?;
        validate_namespace(name)?;
        check_labels(&labels)?;
        let mut keys = Vec::with_capacity(paths.len());
        for path in paths {
            match path.strip_prefix("labels.") {
                Some(key) if !key.is_empty() => keys.push(key.to_owned()),
                _ => return Err(MetadataError::BadFieldPath(path.clone())),
            }
        }
        finish(self.namespaces.transaction(|tree| {
            let mut record = read(tree, name)?.unwrap_or_default();
            if keys.is_empty() {
                record.labels = labels.clone();
            } else {
                for key in &keys {
                    match labels.get(key) {
                        Some(v) if !v.is_empty() => {
                            record.labels.insert(key.clone(), v.clone());
                        }
                        _ => {
                            record.labels.remove(key);
                        }
                    }
                }
            }
            record.labels.retain(|_, v| !v.is_empty());
            write(tree, name, &record)?;
            Ok(Namespace {
                name: name.to_owned(),
                labels: record.labels,
            })
        }))
        .and_then(|ns| self.flush().map(|()| ns))
    }

    /// Deletes an empty namespace; FailedPrecondition naming what is left otherwise.
    pub fn delete_namespace(&self, name: &str) -> Result<(), MetadataError> {
        self.make_room();
        validate_namespace(name)?;
        finish(self.namespaces.transaction(|tree| {
            let Some(record) = read(tree, name)? else {
                return abort(MetadataError::NamespaceNotFound(name.to_owned()));
            };
            let mut left: Vec<&str> = record
                .objects
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(kind, _)| kind.as_str())
                .collect();
            // containerd's order: images, blobs, containers, then snapshots per snapshotter.
            left.sort_by_key(|kind| {
                let rank = ["images", "blobs", "containers"]
                    .iter()
                    .position(|k| k == kind)
                    .unwrap_or(3);
                (rank, *kind)
            });
            if !left.is_empty() {
                return abort(MetadataError::NamespaceNotEmpty {
                    name: name.to_owned(),
                    what: left.join(", "),
                });
            }
            tree.remove(name.as_bytes())?;
            Ok(())
        }))?;
        // Leases do not keep a namespace alive, but go with it, as in containerd.
        let keys: Vec<sled::IVec> = self
            .leases
            .scan_prefix(super::ns_prefix(name))
            .keys()
            .collect::<Result<_, _>>()
            .map_err(storage("scan leases"))?;
        for k in keys {
            self.leases.remove(k).map_err(storage("remove lease"))?;
        }
        self.flush()
    }

    /// Adds `delta` to a namespace's count of objects of one kind, creating the namespace if
    /// needed. Call inside the transaction that creates or removes the object.
    pub(crate) fn count_object(
        tree: &TransactionalTree,
        name: &str,
        kind: &str,
        delta: i64,
    ) -> TxResult<()> {
        let mut record = read(tree, name)?.unwrap_or_default();
        let n = record.objects.entry(kind.to_owned()).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            record.objects.remove(kind);
        }
        write(tree, name, &record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, MetadataStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = MetadataStore::open(dir.path()).unwrap();
        (dir, s)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn create_get_list_delete() {
        let (_d, s) = store();
        s.create_namespace("a", labels(&[("k", "v")])).unwrap();
        let err = s.create_namespace("a", BTreeMap::new()).unwrap_err();
        assert_eq!(err.to_string(), "namespace \"a\": already exists");
        assert_eq!(s.get_namespace("a").unwrap().labels, labels(&[("k", "v")]));
        assert!(s.get_namespace("unknown").unwrap().labels.is_empty());
        s.create_namespace("b", BTreeMap::new()).unwrap();
        let names: Vec<_> = s
            .list_namespaces()
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        s.delete_namespace("a").unwrap();
        assert!(matches!(
            s.delete_namespace("a"),
            Err(MetadataError::NamespaceNotFound(_))
        ));
    }

    #[test]
    fn update_with_and_without_field_paths() {
        let (_d, s) = store();
        s.create_namespace("a", labels(&[("x", "1"), ("y", "2")]))
            .unwrap();
        let ns = s
            .update_namespace(
                "a",
                labels(&[("x", "9")]),
                &["labels.x".into(), "labels.y".into()],
            )
            .unwrap();
        assert_eq!(ns.labels, labels(&[("x", "9")]));
        let ns = s.update_namespace("a", labels(&[("z", "3")]), &[]).unwrap();
        assert_eq!(ns.labels, labels(&[("z", "3")]));
        assert!(matches!(
            s.update_namespace("a", BTreeMap::new(), &["name".into()]),
            Err(MetadataError::BadFieldPath(_))
        ));
    }

    #[test]
    fn invalid_input_writes_nothing() {
        let (_d, s) = store();
        for bad in ["../x", "a/b", "", &"a".repeat(77)] {
            assert!(matches!(
                s.create_namespace(bad, BTreeMap::new()),
                Err(MetadataError::Identifier(_))
            ));
        }
        let big = labels(&[(&"k".repeat(4097), "v")]);
        assert!(s.create_namespace("ok", big).is_err());
        assert!(s.list_namespaces().unwrap().is_empty());
    }

    #[test]
    fn non_empty_namespace_cannot_be_deleted() {
        let (_d, s) = store();
        s.create_namespace("t1", BTreeMap::new()).unwrap();
        s.namespaces
            .transaction(|tree| {
                MetadataStore::count_object(tree, "t1", "images", 1)?;
                MetadataStore::count_object(tree, "t1", "blobs", 2)
            })
            .unwrap();
        let err = s.delete_namespace("t1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "namespace \"t1\" must be empty, but it still has images, blobs"
        );
        s.namespaces
            .transaction(|tree| {
                MetadataStore::count_object(tree, "t1", "images", -1)?;
                MetadataStore::count_object(tree, "t1", "blobs", -2)
            })
            .unwrap();
        s.delete_namespace("t1").unwrap();
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = MetadataStore::open(dir.path()).unwrap();
            s.create_namespace("keep", labels(&[("a", "b")])).unwrap();
        }
        let s = MetadataStore::open(dir.path()).unwrap();
        assert_eq!(
            s.get_namespace("keep").unwrap().labels,
            labels(&[("a", "b")])
        );
    }
}
