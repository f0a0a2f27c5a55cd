//! Per-namespace content records. The bytes live once in the content store; a namespace sees a
//! blob only through its record here, which also holds the blob's labels (containerd
//! `metadata/content.go`).

use std::collections::BTreeMap;
use std::time::SystemTime;

use berth_filters::{label_field, Adaptor, Filter};
use berth_registry::identifiers::validate_namespace;
use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::images::{is_digest, set_or_remove};
use super::namespaces::check_labels;
use super::tx::{self, abort, finish};
use super::{key, kinds, ns_prefix, split_key, MetadataStore};
use crate::error::{storage, MetadataError};

/// A blob as one namespace sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    /// `alg:hex` digest.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Labels (GC references, uncompressed digest, ...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When this namespace got it.
    pub created_at: SystemTime,
    /// When its labels last changed.
    pub updated_at: SystemTime,
}

impl Adaptor for BlobRecord {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "digest" if path.len() == 1 => Some(self.digest.clone()),
            "labels" => label_field(&self.labels, path),
            _ => None,
        }
    }
}

fn check_digest(digest: &str) -> Result<(), MetadataError> {
    if is_digest(digest) {
        Ok(())
    } else {
        Err(MetadataError::InvalidDigest(digest.to_owned()))
    }
}

impl MetadataStore {
    /// A namespace's record of a blob; NotFound when the namespace does not hold it.
    pub fn get_blob(&self, ns: &str, digest: &str) -> Result<BlobRecord, MetadataError> {
        validate_namespace(ns)?;
        check_digest(digest)?;
        let k = key(&[ns, digest]);
        match self.content.get(&k).map_err(storage("get content"))? {
            Some(v) => tx::decode("content", &k, &v),
            None => Err(MetadataError::ContentNotFound(digest.to_owned())),
        }
    }

    /// A namespace's blobs matching `filter`, sorted by digest.
    pub fn list_blobs(&self, ns: &str, filter: &Filter) -> Result<Vec<BlobRecord>, MetadataError> {
        validate_namespace(ns)?;
        let mut out = Vec::new();
        for item in self.content.scan_prefix(ns_prefix(ns)) {
            let (k, v) = item.map_err(storage("list content"))?;
            let rec: BlobRecord = tx::decode("content", &k, &v)?;
            if filter.matches(&rec) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Every blob record of every namespace, as `(namespace, record)`; for the collector.
    pub fn all_blobs(&self) -> Result<Vec<(String, BlobRecord)>, MetadataError> {
        self.content
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(storage("scan content"))?;
                let (ns, _) = split_key(&k).unwrap_or_default();
                Ok((ns, tx::decode("content", &k, &v)?))
            })
            .collect()
    }

    /// True when some namespace holds the blob (so its bytes must stay).
    pub fn blob_in_any_namespace(&self, digest: &str) -> Result<bool, MetadataError> {
        for item in self.content.iter() {
            let (k, _) = item.map_err(storage("scan content"))?;
            if split_key(&k).is_some_and(|(_, d)| d == digest) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Records that `ns` holds a committed blob; AlreadyExists if it does already.
    pub fn add_blob(
        &self,
        ns: &str,
        digest: &str,
        size: u64,
        labels: BTreeMap<String, String>,
    ) -> Result<BlobRecord, MetadataError> {
        self.admit_add()?;
        validate_namespace(ns)?;
        check_digest(digest)?;
        check_labels(&labels)?;
        let now = SystemTime::now();
        let rec = BlobRecord {
            digest: digest.to_owned(),
            size,
            labels: labels.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
            created_at: now,
            updated_at: now,
        };
        let k = key(&[ns, digest]);
        finish((&self.namespaces, &self.content).transaction(|(nst, ct)| {
            if ct.get(&k)?.is_some() {
                return abort(MetadataError::ContentExists(digest.to_owned()));
            }
            tx::write(ct, &k, &rec)?;
            MetadataStore::count_object(nst, ns, kinds::BLOBS, 1)
        }))?;
        self.flush()?;
        Ok(rec)
    }

    /// Updates a blob's labels by field paths (`labels`, `labels.<k>`), or replaces them all
    /// when there are none. NotFound if the namespace does not hold it.
    pub fn update_blob(
        &self,
        ns: &str,
        digest: &str,
        labels: BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<BlobRecord, MetadataError> {
        self.admit_add()?;
        validate_namespace(ns)?;
        check_digest(digest)?;
        check_labels(&labels)?;
        let k = key(&[ns, digest]);
        let rec = finish(self.content.transaction(|ct| {
            let Some(mut rec) = tx::read::<BlobRecord>(ct, "content", &k)? else {
                return abort(MetadataError::ContentNotFound(digest.to_owned()));
            };
            if paths.is_empty() {
                rec.labels = labels.clone();
            }
            for path in paths {
                if let Some(key) = path.strip_prefix("labels.") {
                    set_or_remove(&mut rec.labels, key, labels.get(key));
                } else if path == "labels" {
                    rec.labels = labels.clone();
                } else {
                    return abort(MetadataError::BadFieldPath(format!(
                        "{path}\" on content \"{digest}"
                    )));
                }
            }
            rec.labels.retain(|_, v| !v.is_empty());
            rec.updated_at = SystemTime::now();
            tx::write(ct, &k, &rec)?;
            Ok(rec)
        }))?;
        self.flush()?;
        Ok(rec)
    }

    /// Removes a namespace's record of a blob; NotFound if absent. The bytes go when no
    /// namespace holds them any more (garbage collection).
    pub fn delete_blob(&self, ns: &str, digest: &str) -> Result<(), MetadataError> {
        self.make_room();
        validate_namespace(ns)?;
        check_digest(digest)?;
        let k = key(&[ns, digest]);
        finish((&self.namespaces, &self.content).transaction(|(nst, ct)| {
            if ct.remove(k.as_slice())?.is_none() {
                return abort(MetadataError::ContentNotFound(digest.to_owned()));
            }
            MetadataStore::count_object(nst, ns, kinds::BLOBS, -1)
        }))?;
        self.note_deletion();
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn records_are_per_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetadataStore::open(dir.path()).unwrap();
        s.add_blob("a", D1, 3, BTreeMap::new()).unwrap();
        assert!(matches!(
            s.add_blob("a", D1, 3, BTreeMap::new()),
            Err(MetadataError::ContentExists(_))
        ));
        assert!(matches!(
            s.get_blob("b", D1),
            Err(MetadataError::ContentNotFound(_))
        ));
        assert!(s.blob_in_any_namespace(D1).unwrap());
        let mut l = BTreeMap::new();
        l.insert("containerd.io/gc.root".to_owned(), "now".to_owned());
        let rec = s
            .update_blob("a", D1, l, &["labels.containerd.io/gc.root".into()])
            .unwrap();
        assert_eq!(rec.labels.len(), 1);
        let f = berth_filters::parse_any(&["labels.\"containerd.io/gc.root\""]).unwrap();
        assert_eq!(s.list_blobs("a", &f).unwrap().len(), 1);
        assert!(s
            .delete_namespace("a")
            .unwrap_err()
            .to_string()
            .contains("blobs"));
        s.delete_blob("a", D1).unwrap();
        assert!(!s.blob_in_any_namespace(D1).unwrap());
        assert!(matches!(
            s.get_blob("a", "sha256:../x"),
            Err(MetadataError::InvalidDigest(_))
        ));
    }
}
