//! A decoded, wire-ready copy of each namespace's container records, kept until the store's
//! container generation moves.
//!
//! Listing containers is what orchestrators poll. Decoding every record from the database and
//! converting it to its protobuf form on each call cost about 5 µs per container; with this
//! cache a call clones the ready messages (filtered on the stored form) and only the protobuf
//! encoding is left.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use berth_core::{Container as StoredContainer, MetadataError, MetadataStore};
use berth_filters::Filter;
use berth_proto::containerd::services::containers::v1::{Container, ListContainerMessage};
use bytes::{Bytes, BytesMut};
use prost::Message as _;

/// One container in three forms: the stored one for filters, the wire one for streamed
/// answers, and its encoding framed as field 1, which is both a `ListContainerMessage` and one
/// element of a `ListContainersResponse`.
#[derive(Debug)]
struct Entry {
    stored: StoredContainer,
    wire: Container,
    framed: Bytes,
}

/// The entries of one namespace and the generation they were read at.
#[derive(Debug, Clone)]
struct Listing {
    generation: u64,
    entries: Arc<Vec<Entry>>,
    /// Every entry's framed encoding, concatenated: the answer to an unfiltered listing.
    all: Bytes,
}

/// Per-namespace listings, rebuilt on the first call after any container changed.
#[derive(Debug, Default)]
pub struct ContainerListings {
    by_namespace: Mutex<HashMap<String, Listing>>,
}

impl ContainerListings {
    /// The containers of `ns` that match `filter`, in key order. Blocking: call it off the
    /// async runtime.
    pub fn list(
        &self,
        store: &MetadataStore,
        ns: &str,
        filter: &Filter,
        to_wire: impl Fn(StoredContainer) -> Container,
    ) -> Result<Vec<Container>, MetadataError> {
        let entries = self.entries(store, ns, to_wire)?;
        Ok(entries
            .iter()
            .filter(|e| filter.matches(&e.stored))
            .map(|e| e.wire.clone())
            .collect())
    }

    /// The encoded `ListContainersResponse` of the containers of `ns` that match `filter`:
    /// the framed encodings of the matching containers, concatenated. Blocking.
    pub fn list_encoded(
        &self,
        store: &MetadataStore,
        ns: &str,
        filter: &Filter,
        to_wire: impl Fn(StoredContainer) -> Container,
    ) -> Result<Bytes, MetadataError> {
        if filter.is_always() {
            return Ok(self.listing(store, ns, to_wire)?.all);
        }
        let entries = self.entries(store, ns, to_wire)?;
        let matching: Vec<&Entry> = entries
            .iter()
            .filter(|e| filter.matches(&e.stored))
            .collect();
        let mut out = BytesMut::with_capacity(matching.iter().map(|e| e.framed.len()).sum());
        for e in matching {
            out.extend_from_slice(&e.framed);
        }
        Ok(out.freeze())
    }

    /// The encoded unfiltered listing of `ns` when the cache holds it for the store's current
    /// generation: nothing to read or encode, so the caller need not leave the async runtime.
    /// `None` when the listing must be (re)built, or for a namespace without containers.
    pub fn cached_all(&self, store: &MetadataStore, ns: &str) -> Option<Bytes> {
        let generation = store.container_generation();
        self.lock()
            .get(ns)
            .filter(|listing| listing.generation == generation)
            .map(|listing| listing.all.clone())
    }

    fn entries(
        &self,
        store: &MetadataStore,
        ns: &str,
        to_wire: impl Fn(StoredContainer) -> Container,
    ) -> Result<Arc<Vec<Entry>>, MetadataError> {
        Ok(self.listing(store, ns, to_wire)?.entries)
    }

    fn listing(
        &self,
        store: &MetadataStore,
        ns: &str,
        to_wire: impl Fn(StoredContainer) -> Container,
    ) -> Result<Listing, MetadataError> {
        // Read before listing: a change racing the scan moves the generation past the one
        // recorded, so the next call rebuilds (at worst once too often, never stale).
        let generation = store.container_generation();
        if let Some(listing) = self.lock().get(ns) {
            if listing.generation == generation {
                return Ok(listing.clone());
            }
        }
        let entries: Vec<Entry> = store
            .list_containers(ns, &Filter::default())?
            .into_iter()
            .map(|stored| {
                let wire = to_wire(stored.clone());
                let framed = ListContainerMessage {
                    container: Some(wire.clone()),
                }
                .encode_to_vec()
                .into();
                Entry {
                    stored,
                    wire,
                    framed,
                }
            })
            .collect();
        let mut all = BytesMut::with_capacity(entries.iter().map(|e| e.framed.len()).sum());
        for e in &entries {
            all.extend_from_slice(&e.framed);
        }
        let listing = Listing {
            generation,
            entries: Arc::new(entries),
            all: all.freeze(),
        };
        let mut cache = self.lock();
        // Namespaces without containers are not kept: deleted namespaces leave nothing behind.
        if listing.entries.is_empty() {
            cache.remove(ns);
        } else {
            cache.insert(ns.to_owned(), listing.clone());
        }
        Ok(listing)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Listing>> {
        self.by_namespace
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    use berth_core::metadata::{AnyValue, RuntimeRecord};
    use berth_proto::containerd::services::containers::v1::ListContainersResponse;

    use super::*;

    fn record(id: &str, label: &str) -> StoredContainer {
        StoredContainer {
            id: id.into(),
            labels: BTreeMap::from([("team".to_owned(), label.to_owned())]),
            image: "img".into(),
            runtime: RuntimeRecord {
                name: "io.containerd.runc.v2".into(),
                options: None,
            },
            spec: Some(AnyValue {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                value: b"{}".to_vec(),
            }),
            snapshotter: String::new(),
            snapshot_key: String::new(),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
            extensions: BTreeMap::new(),
        }
    }

    fn wire(c: StoredContainer) -> Container {
        Container {
            id: c.id,
            image: c.image,
            ..Container::default()
        }
    }

    fn ids(list: &[Container]) -> Vec<&str> {
        list.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn follows_creates_updates_and_deletes_and_applies_filters() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(dir.path()).unwrap();
        let listings = ContainerListings::default();
        let all = Filter::default();
        assert!(listings.list(&store, "ns", &all, wire).unwrap().is_empty());

        store.create_container("ns", record("a", "red")).unwrap();
        store.create_container("ns", record("b", "blue")).unwrap();
        store.create_container("other", record("c", "red")).unwrap();
        assert_eq!(
            ids(&listings.list(&store, "ns", &all, wire).unwrap()),
            ["a", "b"]
        );

        let red = berth_filters::parse_any(&["labels.team==red".to_owned()]).unwrap();
        assert_eq!(
            ids(&listings.list(&store, "ns", &red, wire).unwrap()),
            ["a"]
        );

        let mut b = record("b", "red");
        b.image = "img2".into();
        store.update_container("ns", b, &[]).unwrap();
        let listed = listings.list(&store, "ns", &red, wire).unwrap();
        assert_eq!(ids(&listed), ["a", "b"]);
        assert_eq!(listed[1].image, "img2");

        // The unfiltered answer is kept whole, and given without a store read while current.
        let everything = listings.list_encoded(&store, "ns", &all, wire).unwrap();
        let expected = ListContainersResponse {
            containers: listings.list(&store, "ns", &all, wire).unwrap(),
        };
        assert_eq!(everything, expected.encode_to_vec());
        assert_eq!(listings.cached_all(&store, "ns"), Some(everything));
        assert_eq!(listings.cached_all(&store, "nowhere"), None);

        let encoded = listings.list_encoded(&store, "ns", &red, wire).unwrap();
        let expected = ListContainersResponse {
            containers: listings.list(&store, "ns", &red, wire).unwrap(),
        };
        assert_eq!(encoded, expected.encode_to_vec());
        assert_eq!(ListContainersResponse::decode(encoded).unwrap(), expected);

        store.delete_container("ns", "a").unwrap();
        // A change makes the kept answer stale: it is not given until rebuilt.
        assert_eq!(listings.cached_all(&store, "ns"), None);
        assert_eq!(
            ids(&listings.list(&store, "ns", &all, wire).unwrap()),
            ["b"]
        );
        assert_eq!(
            ids(&listings.list(&store, "other", &all, wire).unwrap()),
            ["c"]
        );
    }
}
