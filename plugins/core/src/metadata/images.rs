//! Image records: a name pointing at a target descriptor, with labels.

use std::collections::BTreeMap;
use std::time::SystemTime;

use berth_filters::{label_field, map_field, Adaptor, Filter};
use berth_registry::identifiers::validate_namespace;
use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::namespaces::check_labels;
use super::tx::{self, abort, finish};
use super::{key, kinds, ns_prefix, split_key, MetadataStore};
use crate::error::{storage, MetadataError};

/// An OCI descriptor as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// `alg:hex` digest.
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// An image record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Its name (any string; not an identifier).
    pub name: String,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What it points at.
    pub target: Descriptor,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it last changed.
    pub updated_at: SystemTime,
}

impl Adaptor for Image {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "name" if path.len() == 1 => Some(self.name.clone()),
            "target" => match path.get(1).map(String::as_str)? {
                "digest" => Some(self.target.digest.clone()),
                "mediatype" => Some(self.target.media_type.clone()),
                _ => None,
            },
            "labels" => label_field(&self.labels, path),
            "annotations" => map_field(&self.target.annotations, &path[1..]),
            _ => None,
        }
    }
}

fn validate(image: &Image) -> Result<(), MetadataError> {
    let invalid = |reason: String| MetadataError::InvalidImage {
        name: image.name.clone(),
        reason,
    };
    if image.name.is_empty() {
        return Err(invalid("image name must not be empty".into()));
    }
    check_labels(&image.labels)?;
    if !is_digest(&image.target.digest) {
        return Err(invalid(format!(
            "Target.Digest {:?} invalid",
            image.target.digest
        )));
    }
    if image.target.size <= 0 {
        return Err(invalid("Target.Size must be greater than zero".into()));
    }
    if image.target.media_type.is_empty() {
        return Err(invalid("Target.MediaType must be set".into()));
    }
    Ok(())
}

/// True for a well-formed `sha256:<64 hex>` or `sha512:<128 hex>` digest.
pub(crate) fn is_digest(s: &str) -> bool {
    let Some((alg, hex)) = s.split_once(':') else {
        return false;
    };
    let len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl MetadataStore {
    /// One image; NotFound if absent.
    pub fn get_image(&self, ns: &str, name: &str) -> Result<Image, MetadataError> {
        validate_namespace(ns)?;
        let k = key(&[ns, name]);
        match self.images.get(&k).map_err(storage("get image"))? {
            Some(bytes) => tx::decode("images", &k, &bytes),
            None => Err(MetadataError::ImageNotFound(name.to_owned())),
        }
    }

    /// The images of a namespace that match `filter`, sorted by name.
    pub fn list_images(&self, ns: &str, filter: &Filter) -> Result<Vec<Image>, MetadataError> {
        validate_namespace(ns)?;
        let mut out = Vec::new();
        for item in self.images.scan_prefix(ns_prefix(ns)) {
            let (k, v) = item.map_err(storage("list images"))?;
            let image: Image = tx::decode("images", &k, &v)?;
            if filter.matches(&image) {
                out.push(image);
            }
        }
        Ok(out)
    }

    /// Every image of every namespace, as `(namespace, image)`; for the garbage collector.
    pub fn all_images(&self) -> Result<Vec<(String, Image)>, MetadataError> {
        self.images
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(storage("scan images"))?;
                let (ns, _) = split_key(&k).unwrap_or_default();
                Ok((ns, tx::decode("images", &k, &v)?))
            })
            .collect()
    }

    /// Creates an image; AlreadyExists if the name is taken. Timestamps are set here.
    pub fn create_image(&self, ns: &str, mut image: Image) -> Result<Image, MetadataError> {
        self.admit_add()?;
        validate_namespace(ns)?;
        validate(&image)?;
        let now = SystemTime::now();
        image.created_at = now;
        image.updated_at = now;
        let k = key(&[ns, &image.name]);
        finish((&self.namespaces, &self.images).transaction(|(nst, imt)| {
            if imt.get(&k)?.is_some() {
                return abort(MetadataError::ImageExists(image.name.clone()));
            }
            tx::write(imt, &k, &image)?;
            MetadataStore::count_object(nst, ns, kinds::IMAGES, 1)
        }))?;
        self.flush()?;
        Ok(image)
    }

    /// Updates an image by field paths (`labels`, `labels.<k>`, `target`, `annotations`,
    /// `annotations.<k>`), or replaces it when there are none. NotFound if absent.
    pub fn update_image(
        &self,
        ns: &str,
        image: Image,
        paths: &[String],
    ) -> Result<Image, MetadataError> {
        self.admit_add()?;
        validate_namespace(ns)?;
        if image.name.is_empty() {
            return Err(MetadataError::InvalidImage {
                name: String::new(),
                reason: "image name is required for update".into(),
            });
        }
        let k = key(&[ns, &image.name]);
        let updated = finish(self.images.transaction(|imt| {
            let Some(current) = tx::read::<Image>(imt, "images", &k)? else {
                return abort(MetadataError::ImageNotFound(image.name.clone()));
            };
            let mut updated = current.clone();
            if paths.is_empty() {
                updated = image.clone();
            }
            for path in paths {
                if let Some(key) = path.strip_prefix("labels.") {
                    set_or_remove(&mut updated.labels, key, image.labels.get(key));
                } else if let Some(key) = path.strip_prefix("annotations.") {
                    set_or_remove(
                        &mut updated.target.annotations,
                        key,
                        image.target.annotations.get(key),
                    );
                } else {
                    match path.as_str() {
                        "labels" => updated.labels = image.labels.clone(),
                        "target" => updated.target = image.target.clone(),
                        "annotations" => {
                            updated.target.annotations = image.target.annotations.clone()
                        }
                        _ => {
                            return abort(MetadataError::BadFieldPath(format!(
                                "{path}\" on image \"{}",
                                image.name
                            )))
                        }
                    }
                }
            }
            if let Err(e) = validate(&updated) {
                return abort(e);
            }
            updated.created_at = current.created_at;
            updated.updated_at = SystemTime::now();
            tx::write(imt, &k, &updated)?;
            Ok(updated)
        }))?;
        self.flush()?;
        Ok(updated)
    }

    /// Deletes an image; NotFound if absent. The garbage collector reclaims what it held.
    pub fn delete_image(&self, ns: &str, name: &str) -> Result<(), MetadataError> {
        self.make_room();
        validate_namespace(ns)?;
        let k = key(&[ns, name]);
        finish((&self.namespaces, &self.images).transaction(|(nst, imt)| {
            if imt.remove(k.as_slice())?.is_none() {
                return abort(MetadataError::ImageNotFound(name.to_owned()));
            }
            MetadataStore::count_object(nst, ns, kinds::IMAGES, -1)
        }))?;
        self.note_deletion();
        self.flush()
    }
}

/// containerd sets a label from the request, and an empty value deletes it.
pub(crate) fn set_or_remove(map: &mut BTreeMap<String, String>, key: &str, value: Option<&String>) {
    match value {
        Some(v) if !v.is_empty() => {
            map.insert(key.to_owned(), v.clone());
        }
        _ => {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

    fn image(name: &str) -> Image {
        Image {
            name: name.into(),
            labels: BTreeMap::new(),
            target: Descriptor {
                media_type: "application/vnd.oci.image.index.v1+json".into(),
                digest: DIGEST.into(),
                size: 10,
                annotations: BTreeMap::new(),
            },
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }

    fn store() -> (tempfile::TempDir, MetadataStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = MetadataStore::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn create_get_update_delete() {
        let (_d, s) = store();
        let created = s.create_image("default", image("docker.io/x:1")).unwrap();
        assert!(created.created_at > SystemTime::UNIX_EPOCH);
        let err = s
            .create_image("default", image("docker.io/x:1"))
            .unwrap_err();
        assert_eq!(err.to_string(), "image \"docker.io/x:1\": already exists");
        let mut change = image("docker.io/x:1");
        change.labels.insert("a".into(), "b".into());
        let updated = s
            .update_image("default", change, &["labels.a".into()])
            .unwrap();
        assert_eq!(updated.labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(updated.created_at, created.created_at);
        let err = s
            .update_image("default", image("docker.io/x:1"), &["name".into()])
            .unwrap_err();
        assert!(matches!(err, MetadataError::BadFieldPath(_)));
        // Namespaced: another namespace does not see it.
        assert!(matches!(
            s.get_image("other", "docker.io/x:1"),
            Err(MetadataError::ImageNotFound(_))
        ));
        let err = s.delete_namespace("default").unwrap_err();
        assert!(err.to_string().contains("images"), "{err}");
        s.delete_image("default", "docker.io/x:1").unwrap();
        assert!(s.delete_image("default", "docker.io/x:1").is_err());
        s.delete_namespace("default").unwrap();
    }

    #[test]
    fn invalid_targets_are_refused() {
        let (_d, s) = store();
        let mut bad = image("x");
        bad.target.digest = "sha256:../../etc".into();
        assert!(matches!(
            s.create_image("default", bad),
            Err(MetadataError::InvalidImage { .. })
        ));
        let mut bad = image("x");
        bad.target.size = 0;
        assert!(s.create_image("default", bad).is_err());
        assert!(s
            .list_images("default", &Filter::always())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn list_filters() {
        let (_d, s) = store();
        s.create_image("default", image("a")).unwrap();
        let mut b = image("b");
        b.labels.insert("k".into(), "v".into());
        s.create_image("default", b).unwrap();
        let f = berth_filters::parse_any(&["labels.k==v"]).unwrap();
        let names: Vec<_> = s
            .list_images("default", &f)
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["b"]);
        let f = berth_filters::parse_any(&["name==a", "name==b"]).unwrap();
        assert_eq!(s.list_images("default", &f).unwrap().len(), 2);
    }
}
