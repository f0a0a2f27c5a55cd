//! Leases: named, per-namespace holds on content, ingests and snapshots that keep them from the
//! garbage collector while a client works (containerd `metadata/leases.go`, `leases/lease.go`).
//!
//! A lease is one record under `<ns> 0x00 <id>` in the `leases` tree holding its labels, its
//! creation time and the set of resources it holds. Leases do not keep a namespace from being
//! deleted, as in containerd.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_filters::{label_field, Adaptor, Filter};
use berth_registry::identifiers::validate_namespace;
use serde::{Deserialize, Serialize};
use sled::transaction::TransactionalTree;
use sled::Transactional;

use super::images::is_digest;
use super::namespaces::check_labels;
use super::tx::{self, abort, finish, TxResult};
use super::{key, ns_prefix, split_key, MetadataStore};
use crate::error::{storage, MetadataError};

/// Resource type of a blob held by digest.
pub const RESOURCE_CONTENT: &str = "content";
/// Resource type of an ingest (an unfinished write) held by its ref.
pub const RESOURCE_INGESTS: &str = "ingests";
/// Prefix of the resource type of a snapshot, `snapshots/<snapshotter>`, held by its key.
pub const RESOURCE_SNAPSHOTS: &str = "snapshots";

/// A lease as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Its id: any string the client chose, or one generated at creation.
    pub id: String,
    /// Its labels (`containerd.io/gc.expire`, `containerd.io/gc.flat`, ...).
    pub labels: BTreeMap<String, String>,
    /// When it was created.
    pub created_at: SystemTime,
}

impl Adaptor for Lease {
    fn field(&self, path: &[String]) -> Option<String> {
        // containerd `adaptLease` in `metadata/adaptors.go`: `id` and `labels.*`.
        match path.first().map(String::as_str)? {
            "id" if path.len() == 1 && !self.id.is_empty() => Some(self.id.clone()),
            "labels" => label_field(&self.labels, path),
            _ => None,
        }
    }
}

/// One resource a lease holds: a type (`content`, `ingests`, `snapshots/<snapshotter>`) and the
/// resource's id in that type (digest, ingest ref, snapshot key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeaseResource {
    /// The resource type.
    pub kind: String,
    /// The resource's id within its type.
    pub id: String,
}

impl LeaseResource {
    /// A blob, by digest.
    pub fn content(digest: impl Into<String>) -> LeaseResource {
        LeaseResource {
            kind: RESOURCE_CONTENT.to_owned(),
            id: digest.into(),
        }
    }

    /// An ingest, by the client's ref.
    pub fn ingest(reference: impl Into<String>) -> LeaseResource {
        LeaseResource {
            kind: RESOURCE_INGESTS.to_owned(),
            id: reference.into(),
        }
    }

    /// A snapshot of one snapshotter, by key.
    pub fn snapshot(snapshotter: &str, key: impl Into<String>) -> LeaseResource {
        LeaseResource {
            kind: format!("{RESOURCE_SNAPSHOTS}/{snapshotter}"),
            id: key.into(),
        }
    }

    /// True for a blob held by digest.
    pub fn is_content(&self) -> bool {
        self.kind == RESOURCE_CONTENT
    }

    /// True for an ingest held by ref.
    pub fn is_ingest(&self) -> bool {
        self.kind == RESOURCE_INGESTS
    }

    /// The snapshotter of a `snapshots/<snapshotter>` resource.
    pub fn snapshotter(&self) -> Option<&str> {
        self.kind
            .strip_prefix(RESOURCE_SNAPSHOTS)?
            .strip_prefix('/')
            .filter(|s| !s.is_empty() && !s.contains('/'))
    }

    /// Checks the type and id as containerd's `parseLeaseResource` does: `content` and `ingests`
    /// take no sub-type, `content` ids are digests, `snapshots` needs exactly one snapshotter,
    /// and any other type is NotImplemented.
    pub fn validate(&self) -> Result<(), MetadataError> {
        let mut parts = self.kind.split('/');
        let head = parts.next().unwrap_or_default();
        let rest = parts.count();
        match head {
            RESOURCE_CONTENT | RESOURCE_INGESTS => {
                if rest != 0 {
                    return Err(MetadataError::InvalidResourceType(self.kind.clone()));
                }
                if head == RESOURCE_CONTENT && !is_digest(&self.id) {
                    return Err(MetadataError::InvalidContentResource(self.id.clone()));
                }
                Ok(())
            }
            RESOURCE_SNAPSHOTS => {
                if self.snapshotter().is_none() {
                    return Err(MetadataError::InvalidResourceType(self.kind.clone()));
                }
                Ok(())
            }
            _ => Err(MetadataError::UnsupportedResourceType(self.kind.clone())),
        }
    }
}

/// What is stored under a lease's key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseRecord {
    id: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    created_at: SystemTime,
    /// Sorted by type then id, which is also containerd's listing order (content, ingests,
    /// snapshots by snapshotter).
    #[serde(default)]
    resources: BTreeSet<LeaseResource>,
}

impl LeaseRecord {
    fn lease(&self) -> Lease {
        Lease {
            id: self.id.clone(),
            labels: self.labels.clone(),
            created_at: self.created_at,
        }
    }
}

const WHAT: &str = "leases";

/// A lease id as containerd's `leases.WithRandomID` makes it: the nanosecond part of the
/// current time, `-`, and 3 random bytes in URL-safe base64 (e.g. `869771842-0-Ls`).
pub fn random_lease_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    // A v4 UUID is 122 random bits from the OS generator; 3 of its bytes are all we need.
    let uuid = uuid::Uuid::new_v4();
    let b = uuid.as_bytes();
    format!("{nanos}-{}", base64url3([b[0], b[1], b[2]]))
}

/// URL-safe base64 of exactly 3 bytes: 4 characters, never padded.
fn base64url3(b: [u8; 3]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
    [18, 12, 6, 0]
        .iter()
        .map(|shift| char::from(ALPHABET[((n >> shift) & 0x3f) as usize]))
        .collect()
}

/// Adds `resource` (already validated) to lease `lease` of `ns` inside a transaction over the
/// leases tree; the lease must exist (`lease does not exist`, NotFound). For writes made under
/// the `containerd-lease` header, in the same transaction as the object they create.
pub(crate) fn add_resource_tx(
    leases: &TransactionalTree,
    ns: &str,
    lease: &str,
    resource: &LeaseResource,
) -> TxResult<()> {
    let k = key(&[ns, lease]);
    let Some(mut rec) = tx::read::<LeaseRecord>(leases, WHAT, &k)? else {
        return abort(MetadataError::LeaseMissing(lease.to_owned()));
    };
    if rec.resources.insert(resource.clone()) {
        tx::write(leases, &k, &rec)?;
    }
    Ok(())
}

/// Removes `resource` from lease `lease` of `ns` inside a transaction over the leases tree; a
/// missing lease or resource is not an error (containerd `removeContentLease`).
pub(crate) fn remove_resource_tx(
    leases: &TransactionalTree,
    ns: &str,
    lease: &str,
    resource: &LeaseResource,
) -> TxResult<()> {
    let k = key(&[ns, lease]);
    if let Some(mut rec) = tx::read::<LeaseRecord>(leases, WHAT, &k)? {
        if rec.resources.remove(resource) {
            tx::write(leases, &k, &rec)?;
        }
    }
    Ok(())
}

impl MetadataStore {
    /// Creates a lease; an empty `id` gets a generated one ([`random_lease_id`]). Labels with
    /// empty values are dropped. AlreadyExists if the id is taken in the namespace. Creates the
    /// namespace if needed, as any write does, without counting the lease as an object in it.
    pub fn create_lease(
        &self,
        ns: &str,
        id: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Lease, MetadataError> {
        self.admit_add()?;
        validate_namespace(ns)?;
        check_labels(&labels)?;
        let id = if id.is_empty() {
            random_lease_id()
        } else {
            id.to_owned()
        };
        let rec = LeaseRecord {
            labels: labels.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
            created_at: SystemTime::now(),
            resources: BTreeSet::new(),
            id,
        };
        let k = key(&[ns, &rec.id]);
        finish((&self.namespaces, &self.leases).transaction(|(nst, lt)| {
            if lt.get(&k)?.is_some() {
                return abort(MetadataError::LeaseExists(rec.id.clone()));
            }
            tx::write(lt, &k, &rec)?;
            // A zero delta creates the namespace record without counting the lease.
            MetadataStore::count_object(nst, ns, WHAT, 0)
        }))?;
        self.flush()?;
        Ok(rec.lease())
    }

    /// One lease; NotFound if absent.
    pub fn get_lease(&self, ns: &str, id: &str) -> Result<Lease, MetadataError> {
        self.lease_record(ns, id).map(|rec| rec.lease())
    }

    /// Deletes a lease; NotFound if absent. What it held becomes collectable.
    pub fn delete_lease(&self, ns: &str, id: &str) -> Result<(), MetadataError> {
        self.make_room();
        validate_namespace(ns)?;
        let k = key(&[ns, id]);
        finish(self.leases.transaction(|lt| {
            if lt.remove(k.as_slice())?.is_none() {
                return abort(MetadataError::LeaseNotFound(id.to_owned()));
            }
            Ok(())
        }))?;
        self.note_deletion();
        self.flush()
    }

    /// The leases of a namespace matching `filter` (fields `id`, `labels.*`), sorted by id.
    pub fn list_leases(&self, ns: &str, filter: &Filter) -> Result<Vec<Lease>, MetadataError> {
        validate_namespace(ns)?;
        let mut out = Vec::new();
        for item in self.leases.scan_prefix(ns_prefix(ns)) {
            let (k, v) = item.map_err(storage("list leases"))?;
            let lease = tx::decode::<LeaseRecord>(WHAT, &k, &v)?.lease();
            if filter.matches(&lease) {
                out.push(lease);
            }
        }
        Ok(out)
    }

    /// Adds a resource to a lease (a no-op if held already). NotFound if the lease is absent;
    /// InvalidArgument or NotImplemented for a bad resource type. The resource itself need not
    /// exist yet.
    pub fn add_lease_resource(
        &self,
        ns: &str,
        lease: &str,
        resource: &LeaseResource,
    ) -> Result<(), MetadataError> {
        self.admit_add()?;
        validate_namespace(ns)?;
        let k = key(&[ns, lease]);
        finish(self.leases.transaction(|lt| {
            if lt.get(&k)?.is_none() {
                return abort(MetadataError::LeaseNotFound(lease.to_owned()));
            }
            // Checked after the lease, as containerd does: an unknown lease is NotFound
            // whatever the resource.
            if let Err(e) = resource.validate() {
                return abort(e);
            }
            add_resource_tx(lt, ns, lease, resource)
        }))?;
        self.flush()
    }

    /// Removes a resource from a lease; removing one it does not hold succeeds. NotFound if the
    /// lease is absent. The resource becomes collectable if nothing else holds it.
    pub fn delete_lease_resource(
        &self,
        ns: &str,
        lease: &str,
        resource: &LeaseResource,
    ) -> Result<(), MetadataError> {
        self.make_room();
        validate_namespace(ns)?;
        let k = key(&[ns, lease]);
        finish(self.leases.transaction(|lt| {
            if lt.get(&k)?.is_none() {
                return abort(MetadataError::LeaseNotFound(lease.to_owned()));
            }
            if let Err(e) = resource.validate() {
                return abort(e);
            }
            remove_resource_tx(lt, ns, lease, resource)
        }))?;
        self.note_deletion();
        self.flush()
    }

    /// The resources a lease holds, sorted by type then id. NotFound if the lease is absent.
    pub fn list_lease_resources(
        &self,
        ns: &str,
        lease: &str,
    ) -> Result<Vec<LeaseResource>, MetadataError> {
        Ok(self
            .lease_record(ns, lease)?
            .resources
            .into_iter()
            .collect())
    }

    /// Every lease of every namespace with its resources, as `(namespace, lease, resources)`;
    /// for the garbage collector.
    pub fn all_leases(&self) -> Result<Vec<(String, Lease, Vec<LeaseResource>)>, MetadataError> {
        self.leases
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(storage("scan leases"))?;
                let (ns, _) = split_key(&k).unwrap_or_default();
                let rec: LeaseRecord = tx::decode(WHAT, &k, &v)?;
                let lease = rec.lease();
                Ok((ns, lease, rec.resources.into_iter().collect()))
            })
            .collect()
    }

    fn lease_record(&self, ns: &str, id: &str) -> Result<LeaseRecord, MetadataError> {
        validate_namespace(ns)?;
        let k = key(&[ns, id]);
        match self.leases.get(&k).map_err(storage("get lease"))? {
            Some(v) => tx::decode(WHAT, &k, &v),
            None => Err(MetadataError::LeaseNotFound(id.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_registry::{Classify, ErrorKind};

    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

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
    fn generated_ids_look_like_containerds() {
        let (_d, s) = store();
        let lease = s.create_lease("default", "", BTreeMap::new()).unwrap();
        let (nanos, tail) = lease.id.split_once('-').unwrap();
        assert!(
            nanos.parse::<u32>().unwrap() < 1_000_000_000,
            "{}",
            lease.id
        );
        assert_eq!(tail.len(), 4, "{}", lease.id);
        assert!(tail
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert!(lease.created_at > UNIX_EPOCH);
        assert_eq!(s.get_lease("default", &lease.id).unwrap(), lease);
        assert_ne!(random_lease_id(), random_lease_id());
    }

    #[test]
    fn base64url_matches_go() {
        // base64.URLEncoding of these bytes, as Go prints them.
        assert_eq!(base64url3([0, 0, 0]), "AAAA");
        assert_eq!(base64url3([0xfb, 0xff, 0xbf]), "-_-_");
        assert_eq!(base64url3([0xd1, 0x0b, 0xac]), "0Qus");
    }

    #[test]
    fn create_duplicate_get_delete() {
        let (_d, s) = store();
        let lease = s
            .create_lease("default", "l1", labels(&[("a", "b"), ("empty", "")]))
            .unwrap();
        assert_eq!(lease.labels, labels(&[("a", "b")]));
        let err = s
            .create_lease("default", "l1", BTreeMap::new())
            .unwrap_err();
        assert_eq!(err.to_string(), "lease \"l1\": already exists");
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        // Another namespace has its own ids.
        s.create_lease("other", "l1", BTreeMap::new()).unwrap();
        let before = s.deletion_count();
        s.delete_lease("default", "l1").unwrap();
        assert_eq!(s.deletion_count(), before + 1);
        let err = s.delete_lease("default", "l1").unwrap_err();
        assert_eq!(err.to_string(), "lease \"l1\": not found");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(matches!(
            s.get_lease("default", "l1"),
            Err(MetadataError::LeaseNotFound(_))
        ));
        assert!(s.get_lease("other", "l1").is_ok());
    }

    #[test]
    fn leases_do_not_keep_a_namespace() {
        let (_d, s) = store();
        s.create_lease("ns1", "l", BTreeMap::new()).unwrap();
        // The lease created the namespace ...
        assert!(s.list_namespaces().unwrap().iter().any(|n| n.name == "ns1"));
        // ... but does not count as an object in it.
        s.delete_namespace("ns1").unwrap();
    }

    #[test]
    fn invalid_input_is_refused() {
        let (_d, s) = store();
        assert!(matches!(
            s.create_lease("a/b", "l", BTreeMap::new()),
            Err(MetadataError::Identifier(_))
        ));
        let big = labels(&[(&"k".repeat(4097), "v")]);
        assert!(s.create_lease("default", "l", big).is_err());
        assert!(s
            .list_leases("default", &Filter::always())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn list_filters_on_id_and_labels() {
        let (_d, s) = store();
        s.create_lease("default", "b", labels(&[("containerd.io/gc.expire", "x")]))
            .unwrap();
        s.create_lease("default", "a", labels(&[("k", "v")]))
            .unwrap();
        s.create_lease("other", "c", BTreeMap::new()).unwrap();
        let ids = |f: &Filter| -> Vec<String> {
            s.list_leases("default", f)
                .unwrap()
                .into_iter()
                .map(|l| l.id)
                .collect()
        };
        assert_eq!(ids(&Filter::always()), ["a", "b"]);
        assert_eq!(ids(&berth_filters::parse_any(&["id==b"]).unwrap()), ["b"]);
        assert_eq!(
            ids(&berth_filters::parse_any(&["labels.k==v"]).unwrap()),
            ["a"]
        );
        assert_eq!(
            ids(&berth_filters::parse_any(&["labels.\"containerd.io/gc.expire\""]).unwrap()),
            ["b"]
        );
        assert_eq!(
            ids(&berth_filters::parse_any(&["id==a", "id==b"]).unwrap()),
            ["a", "b"]
        );
    }

    #[test]
    fn resources_add_list_remove() {
        let (_d, s) = store();
        s.create_lease("default", "l", BTreeMap::new()).unwrap();
        let snap = LeaseResource::snapshot("overlayfs", "extract-1 sha256:x");
        for r in [
            snap.clone(),
            LeaseResource::ingest("tar-blobs/1"),
            LeaseResource::content(D2),
            LeaseResource::content(D1),
            LeaseResource::content(D1),
        ] {
            s.add_lease_resource("default", "l", &r).unwrap();
        }
        let listed = s.list_lease_resources("default", "l").unwrap();
        assert_eq!(
            listed,
            [
                LeaseResource::content(D1),
                LeaseResource::content(D2),
                LeaseResource::ingest("tar-blobs/1"),
                snap.clone(),
            ]
        );
        assert_eq!(snap.snapshotter(), Some("overlayfs"));
        let before = s.deletion_count();
        s.delete_lease_resource("default", "l", &LeaseResource::content(D1))
            .unwrap();
        // Removing what is not held succeeds.
        s.delete_lease_resource("default", "l", &LeaseResource::content(D1))
            .unwrap();
        assert!(s.deletion_count() > before);
        assert_eq!(s.list_lease_resources("default", "l").unwrap().len(), 3);
        let all = s.all_leases().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, "default");
        assert_eq!(all[0].2.len(), 3);
        // Unknown lease: NotFound for every resource call.
        for err in [
            s.add_lease_resource("default", "nope", &LeaseResource::content(D1))
                .unwrap_err(),
            s.delete_lease_resource("default", "nope", &LeaseResource::content(D1))
                .unwrap_err(),
            s.list_lease_resources("default", "nope").unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        }
    }

    #[test]
    fn bad_resource_types_are_refused() {
        let (_d, s) = store();
        s.create_lease("default", "l", BTreeMap::new()).unwrap();
        let bad = |kind: &str, id: &str| {
            s.add_lease_resource(
                "default",
                "l",
                &LeaseResource {
                    kind: kind.into(),
                    id: id.into(),
                },
            )
            .unwrap_err()
        };
        let err = bad("containers", "c1");
        assert_eq!(err.kind(), ErrorKind::NotImplemented);
        assert_eq!(
            err.to_string(),
            "resource type containers not supported yet"
        );
        assert_eq!(
            bad("content", "sha256:nope").kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(bad("content/x", D1).kind(), ErrorKind::InvalidArgument);
        assert_eq!(bad("ingests/x", "r").kind(), ErrorKind::InvalidArgument);
        assert_eq!(bad("snapshots", "k").kind(), ErrorKind::InvalidArgument);
        assert_eq!(bad("snapshots/a/b", "k").kind(), ErrorKind::InvalidArgument);
        assert!(s.list_lease_resources("default", "l").unwrap().is_empty());
    }

    #[test]
    fn transaction_helpers_need_the_lease() {
        let (_d, s) = store();
        s.create_lease("default", "l", BTreeMap::new()).unwrap();
        let r = LeaseResource::content(D1);
        finish(
            s.leases
                .transaction(|lt| add_resource_tx(lt, "default", "l", &r)),
        )
        .unwrap();
        assert_eq!(
            s.list_lease_resources("default", "l").unwrap(),
            vec![r.clone()]
        );
        let err = finish(
            s.leases
                .transaction(|lt| add_resource_tx(lt, "default", "gone", &r)),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "lease does not exist");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        finish(
            s.leases
                .transaction(|lt| remove_resource_tx(lt, "default", "l", &r)),
        )
        .unwrap();
        finish(
            s.leases
                .transaction(|lt| remove_resource_tx(lt, "default", "gone", &r)),
        )
        .unwrap();
        assert!(s.list_lease_resources("default", "l").unwrap().is_empty());
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let created = {
            let s = MetadataStore::open(dir.path()).unwrap();
            let l = s
                .create_lease("default", "keep", labels(&[("a", "b")]))
                .unwrap();
            s.add_lease_resource("default", "keep", &LeaseResource::ingest("r"))
                .unwrap();
            l
        };
        let s = MetadataStore::open(dir.path()).unwrap();
        assert_eq!(s.get_lease("default", "keep").unwrap(), created);
        assert_eq!(
            s.list_lease_resources("default", "keep").unwrap(),
            [LeaseResource::ingest("r")]
        );
    }
}
