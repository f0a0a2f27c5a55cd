//! Container records: the spec, runtime and root filesystem a task will be created from.

use std::collections::BTreeMap;
use std::time::SystemTime;

use berth_filters::{label_field, Adaptor, Filter};
use berth_registry::identifiers::{validate, validate_namespace};
use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::images::set_or_remove;
use super::namespaces::check_labels;
use super::tx::{self, abort, finish};
use super::{key, kinds, ns_prefix, split_key, MetadataStore};
use crate::error::{storage, MetadataError};

/// A protobuf `Any` kept opaque: the type URL and the encoded bytes (hex in the record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnyValue {
    /// The type URL (bare proto name, or containerd's OCI type names).
    pub type_url: String,
    /// The encoded value.
    #[serde(with = "hex_bytes")]
    pub value: Vec<u8>,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

/// The runtime a container's task runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeRecord {
    /// e.g. `io.containerd.runc.v2`.
    pub name: String,
    /// Runtime options (`containerd.runc.v1.Options`).
    pub options: Option<AnyValue>,
}

/// A container record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// Its id (an identifier).
    pub id: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The image it was made from.
    #[serde(default)]
    pub image: String,
    /// The runtime.
    pub runtime: RuntimeRecord,
    /// The OCI spec (JSON inside an `Any`).
    pub spec: Option<AnyValue>,
    /// The snapshotter of its root filesystem.
    #[serde(default)]
    pub snapshotter: String,
    /// The snapshot key of its root filesystem.
    #[serde(default)]
    pub snapshot_key: String,
    /// Creation time.
    pub created_at: SystemTime,
    /// Last change.
    pub updated_at: SystemTime,
    /// Client extensions.
    #[serde(default)]
    pub extensions: BTreeMap<String, AnyValue>,
}

impl Adaptor for Container {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "id" if path.len() == 1 => Some(self.id.clone()),
            "image" if path.len() == 1 => Some(self.image.clone()),
            "runtime" => match path.get(1).map(String::as_str)? {
                "name" => Some(self.runtime.name.clone()),
                _ => None,
            },
            "labels" => label_field(&self.labels, path),
            _ => None,
        }
    }
}

fn check(c: &Container) -> Result<(), MetadataError> {
    validate(&c.id)?;
    let invalid = |reason: &str| MetadataError::InvalidContainer {
        id: c.id.clone(),
        reason: reason.to_owned(),
    };
    if c.extensions.keys().any(String::is_empty) {
        return Err(invalid("container.Extension keys must not be zero-length"));
    }
    check_labels(&c.labels)?;
    if c.runtime.name.is_empty() {
        return Err(invalid("container.Runtime.Name must be set"));
    }
    if c.spec.is_none() {
        return Err(invalid("container.Spec must be set"));
    }
    if !c.snapshot_key.is_empty() && c.snapshotter.is_empty() {
        return Err(invalid(
            "container.Snapshotter must be set if container.SnapshotKey is set",
        ));
    }
    Ok(())
}

impl MetadataStore {
    /// One container; NotFound if absent.
    pub fn get_container(&self, ns: &str, id: &str) -> Result<Container, MetadataError> {
        validate_namespace(ns)?;
        let k = key(&[ns, id]);
        match self.containers.get(&k).map_err(storage("get container"))? {
            Some(v) => tx::decode("containers", &k, &v),
            None => Err(MetadataError::ContainerNotFound(id.to_owned())),
        }
    }

    /// A namespace's containers matching `filter`, sorted by id.
    pub fn list_containers(
        &self,
        ns: &str,
        filter: &Filter,
    ) -> Result<Vec<Container>, MetadataError> {
        validate_namespace(ns)?;
        let mut out = Vec::new();
        for item in self.containers.scan_prefix(ns_prefix(ns)) {
            let (k, v) = item.map_err(storage("list containers"))?;
            let c: Container = tx::decode("containers", &k, &v)?;
            if filter.matches(&c) {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Every container of every namespace; for the collector.
    pub fn all_containers(&self) -> Result<Vec<(String, Container)>, MetadataError> {
        self.containers
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(storage("scan containers"))?;
                let (ns, _) = split_key(&k).unwrap_or_default();
                Ok((ns, tx::decode("containers", &k, &v)?))
            })
            .collect()
    }

    /// Creates a container; AlreadyExists if the id is taken.
    pub fn create_container(&self, ns: &str, mut c: Container) -> Result<Container, MetadataError> {
        self.admit_add()?;
        validate_namespace(ns)?;
        check(&c)?;
        let now = SystemTime::now();
        c.created_at = now;
        c.updated_at = now;
        let k = key(&[ns, &c.id]);
        finish(
            (&self.namespaces, &self.containers).transaction(|(nst, ct)| {
                if ct.get(&k)?.is_some() {
                    return abort(MetadataError::ContainerExists(c.id.clone()));
                }
                tx::write(ct, &k, &c)?;
                MetadataStore::count_object(nst, ns, kinds::CONTAINERS, 1)
            }),
        )?;
        self.note_container_change();
        self.flush()?;
        Ok(c)
    }

    /// Updates by field paths (`labels[.k]`, `spec`, `extensions[.k]`, `image`,
    /// `snapshotkey`); without paths, all of those, and snapshotter and runtime must not change.
    pub fn update_container(
        &self,
        ns: &str,
        c: Container,
        paths: &[String],
    ) -> Result<Container, MetadataError> {
        self.admit_add()?;
        validate_namespace(ns)?;
        validate(&c.id)?;
        let k = key(&[ns, &c.id]);
        let updated = finish(self.containers.transaction(|ct| {
            let Some(current) = tx::read::<Container>(ct, "containers", &k)? else {
                return abort(MetadataError::ContainerNotFound(c.id.clone()));
            };
            let mut updated = current.clone();
            let defaults: Vec<String> = ["labels", "spec", "extensions", "image", "snapshotkey"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            let paths = if paths.is_empty() {
                if c.snapshotter != current.snapshotter {
                    return abort(MetadataError::InvalidContainer {
                        id: c.id.clone(),
                        reason: "container.Snapshotter field is immutable".into(),
                    });
                }
                if c.runtime.name != current.runtime.name {
                    return abort(MetadataError::InvalidContainer {
                        id: c.id.clone(),
                        reason: "container.Runtime.Name field is immutable".into(),
                    });
                }
                defaults.as_slice()
            } else {
                paths
            };
            for path in paths {
                if let Some(key) = path.strip_prefix("labels.") {
                    set_or_remove(&mut updated.labels, key, c.labels.get(key));
                    continue;
                }
                if let Some(key) = path.strip_prefix("extensions.") {
                    match c.extensions.get(key) {
                        Some(v) => updated.extensions.insert(key.to_owned(), v.clone()),
                        None => updated.extensions.remove(key),
                    };
                    continue;
                }
                match path.as_str() {
                    "labels" => updated.labels = c.labels.clone(),
                    "spec" => updated.spec = c.spec.clone(),
                    "extensions" => updated.extensions = c.extensions.clone(),
                    "image" => updated.image = c.image.clone(),
                    "snapshotkey" => updated.snapshot_key = c.snapshot_key.clone(),
                    _ => {
                        return abort(MetadataError::BadFieldPath(format!(
                            "{path}\" on \"{}",
                            c.id
                        )))
                    }
                }
            }
            if let Err(e) = check(&updated) {
                return abort(e);
            }
            updated.created_at = current.created_at;
            updated.updated_at = SystemTime::now();
            tx::write(ct, &k, &updated)?;
            Ok(updated)
        }))?;
        self.note_container_change();
        self.flush()?;
        Ok(updated)
    }

    /// Deletes a container; NotFound if absent.
    pub fn delete_container(&self, ns: &str, id: &str) -> Result<(), MetadataError> {
        self.make_room();
        validate_namespace(ns)?;
        let k = key(&[ns, id]);
        finish(
            (&self.namespaces, &self.containers).transaction(|(nst, ct)| {
                if ct.remove(k.as_slice())?.is_none() {
                    return abort(MetadataError::ContainerNotFound(id.to_owned()));
                }
                MetadataStore::count_object(nst, ns, kinds::CONTAINERS, -1)
            }),
        )?;
        self.note_container_change();
        self.note_deletion();
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str) -> Container {
        Container {
            id: id.into(),
            labels: BTreeMap::new(),
            image: "img".into(),
            runtime: RuntimeRecord {
                name: "io.containerd.runc.v2".into(),
                options: None,
            },
            spec: Some(AnyValue {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                value: b"{}".to_vec(),
            }),
            snapshotter: "overlayfs".into(),
            snapshot_key: id.into(),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
            extensions: BTreeMap::new(),
        }
    }

    #[test]
    fn lifecycle_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetadataStore::open(dir.path()).unwrap();
        let c = s.create_container("default", container("c1")).unwrap();
        assert_eq!(c.spec.as_ref().unwrap().value, b"{}");
        assert!(matches!(
            s.create_container("default", container("c1")),
            Err(MetadataError::ContainerExists(_))
        ));
        assert!(matches!(
            s.create_container("default", container("../x")),
            Err(MetadataError::Identifier(_))
        ));
        let mut bad = container("c2");
        bad.spec = None;
        assert!(s.create_container("default", bad).is_err());
        let mut change = container("c1");
        change.labels.insert("a".into(), "b".into());
        let u = s
            .update_container("default", change.clone(), &["labels.a".into()])
            .unwrap();
        assert_eq!(u.labels.len(), 1);
        change.runtime.name = "other".into();
        assert!(s.update_container("default", change, &[]).is_err());
        let f = berth_filters::parse_any(&["runtime.name==io.containerd.runc.v2"]).unwrap();
        assert_eq!(s.list_containers("default", &f).unwrap().len(), 1);
        assert!(s
            .delete_namespace("default")
            .unwrap_err()
            .to_string()
            .contains("containers"));
        s.delete_container("default", "c1").unwrap();
        assert!(s.get_container("default", "c1").is_err());
    }
}
