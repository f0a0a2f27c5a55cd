//! The metadata store: one sled database holding every namespaced record (see the key schema in
//! the crate docs).
//!
//! On a full disk it still opens, serves reads and deletes: a reserve file next to the database
//! is released before opening or deleting when the filesystem is nearly full, and writes that
//! add records are refused (ResourceExhausted, naming the database) before sled sees them, since
//! sled fails every call after one of its writes met ENOSPC ([`berth_snapshotters::space`]).

mod blobs;
mod containers;
mod images;
mod leases;
mod namespaces;
pub mod plugin;
mod snapshots;
mod tx;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use berth_snapshotters::space::Reserve;

use crate::error::{storage, MetadataError};

pub use blobs::BlobRecord;
pub use containers::{AnyValue, Container, RuntimeRecord};
pub use images::{Descriptor, Image};
pub use leases::{Lease, LeaseResource};
pub use namespaces::Namespace;
pub use snapshots::SnapshotRecord;

/// Tree names, one per object kind.
pub(crate) mod trees {
    /// Namespace records.
    pub const NAMESPACES: &str = "namespaces";
    /// Image records.
    pub const IMAGES: &str = "images";
    /// Per-namespace content (blob) records.
    pub const CONTENT: &str = "content";
    /// Lease records.
    pub const LEASES: &str = "leases";
    /// Container records.
    pub const CONTAINERS: &str = "containers";
    /// Per-namespace snapshot records.
    pub const SNAPSHOTS: &str = "snapshots";
}

/// Object kinds as the namespace-not-empty error names them.
pub(crate) mod kinds {
    /// Images.
    pub const IMAGES: &str = "images";
    /// Content blobs.
    pub const BLOBS: &str = "blobs";
    /// Containers.
    pub const CONTAINERS: &str = "containers";
}

/// The metadata database.
#[derive(Debug, Clone)]
pub struct MetadataStore {
    db: sled::Db,
    namespaces: sled::Tree,
    images: sled::Tree,
    content: sled::Tree,
    leases: sled::Tree,
    snapshots: sled::Tree,
    containers: sled::Tree,
    /// Room to open and delete on a full disk.
    reserve: Arc<Reserve>,
    /// Bumped by every deletion; the garbage collector runs when it moved.
    deletions: Arc<AtomicU64>,
    /// Bumped after every committed change to a container record, so that readers can keep
    /// a decoded listing until it moves (see [`MetadataStore::container_generation`]).
    container_changes: Arc<AtomicU64>,
    /// Held shared by a content commit (bytes renamed into place, then recorded) and
    /// exclusively by the collector's content sweep, so that it never removes bytes between
    /// the two steps (containerd's `cs.l`).
    content_lock: Arc<RwLock<()>>,
    /// Held shared while a snapshot is created or committed (driver first, then record) and
    /// exclusively for a whole collection, so that neither a new record nor a driver snapshot
    /// awaiting its record is swept.
    snapshot_lock: Arc<RwLock<()>>,
    /// The content sharing policy: `true` for `shared` (the default), `false` for `isolated`;
    /// set by the metadata plugin from its config and read by [`plugin::content_view`].
    content_shared: bool,
}

impl MetadataStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<MetadataStore, MetadataError> {
        let path = dir.join("meta.db");
        let reserve = Arc::new(Reserve::new(&path));
        reserve.make_room();
        let db = sled::Config::new()
            .path(&path)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(storage("open"))?;
        let tree = |name: &str| db.open_tree(name).map_err(storage("open"));
        reserve.replenish();
        Ok(MetadataStore {
            namespaces: tree(trees::NAMESPACES)?,
            images: tree(trees::IMAGES)?,
            content: tree(trees::CONTENT)?,
            leases: tree(trees::LEASES)?,
            snapshots: tree(trees::SNAPSHOTS)?,
            containers: tree(trees::CONTAINERS)?,
            db,
            reserve: reserve.clone(),
            deletions: Arc::new(AtomicU64::new(0)),
            container_changes: Arc::new(AtomicU64::new(0)),
            content_lock: Arc::new(RwLock::new(())),
            snapshot_lock: Arc::new(RwLock::new(())),
            content_shared: true,
        })
    }

    /// Whether a blob committed in one namespace can be claimed by another without its data
    /// (`content_sharing_policy = "shared"`).
    pub fn content_shared(&self) -> bool {
        self.content_shared
    }

    /// Makes every completed transaction durable. Called before a mutating RPC returns, and by
    /// the daemon as it stops.
    pub fn flush(&self) -> Result<(), MetadataError> {
        self.db.flush().map_err(storage("flush"))?;
        self.reserve.replenish();
        Ok(())
    }

    /// Called first by every change that adds or rewrites records: refused, before sled is
    /// touched, when the filesystem is nearly full.
    pub(crate) fn admit_add(&self) -> Result<(), MetadataError> {
        Ok(self.reserve.admit_write()?)
    }

    /// Called first by every change that only removes records: gives the reserve back if the
    /// filesystem is nearly full, so that the removal has room.
    pub(crate) fn make_room(&self) {
        self.reserve.make_room();
    }

    /// How many deletions happened since start; the GC compares it with its last run.
    pub fn deletion_count(&self) -> u64 {
        self.deletions.load(Ordering::Relaxed)
    }

    /// Changes whenever a container record of any namespace was created, updated or deleted.
    /// Read it before listing: a listing made after reading generation `g` holds every change
    /// up to `g` (a change is committed before the generation moves).
    pub fn container_generation(&self) -> u64 {
        self.container_changes.load(Ordering::Acquire)
    }

    /// Called after a container change committed.
    pub(crate) fn note_container_change(&self) {
        self.container_changes.fetch_add(1, Ordering::Release);
    }

    /// Taken by a content commit for its whole length.
    pub fn content_commit_guard(&self) -> RwLockReadGuard<'_, ()> {
        self.content_lock
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Taken by the collector while it decides which bytes to remove and removes them.
    pub(crate) fn content_sweep_guard(&self) -> RwLockWriteGuard<'_, ()> {
        self.content_lock
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Taken by a snapshot create or commit for its whole length.
    pub fn snapshot_create_guard(&self) -> RwLockReadGuard<'_, ()> {
        self.snapshot_lock
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Taken by the collector for the whole of a collection.
    pub(crate) fn snapshot_sweep_guard(&self) -> RwLockWriteGuard<'_, ()> {
        self.snapshot_lock
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn note_deletion(&self) {
        self.deletions.fetch_add(1, Ordering::Relaxed);
    }
}

/// Joins key parts with the 0x00 separator the schema uses.
pub(crate) fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

/// The prefix of every key of a namespace in a namespaced tree.
pub(crate) fn ns_prefix(ns: &str) -> Vec<u8> {
    let mut p = ns.as_bytes().to_vec();
    p.push(0);
    p
}

/// Splits a namespaced key into its namespace and the rest.
pub(crate) fn split_key(k: &[u8]) -> Option<(String, String)> {
    let s = std::str::from_utf8(k).ok()?;
    let (ns, rest) = s.split_once('\0')?;
    Some((ns.to_owned(), rest.to_owned()))
}
