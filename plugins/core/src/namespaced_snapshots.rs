//! Snapshots as one namespace sees them (containerd `metadata/snapshot.go`): clients name
//! snapshots with their own keys; drivers see `<ns>/<seq>/<key>`, so namespaces never collide.
//! Records (parent, kind, labels) live in the metadata store; only the labels a driver needs
//! (`containerd.io/snapshot/*`, `containerd.io/snapshot.ref`) are passed down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use berth_filters::Filter;
use berth_registry::{Classify, ErrorKind};
use berth_snapshotters::{Kind, Mount, SnapshotError, Snapshotter, Usage};
use berth_wellknown::label;

use crate::gc::{MarkSet, SnapshotRefs, SnapshotSweeper, SweepError};
use crate::metadata::{LeaseResource, MetadataStore, SnapshotRecord};
use crate::MetadataError;

/// Why a namespaced snapshot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NamespacedSnapshotError {
    /// The metadata store refused or failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The driver refused or failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// No snapshotter of that name loaded.
    #[error("snapshotter not loaded: {0}")]
    NotLoaded(String),
    /// The request named no snapshotter.
    #[error("snapshotter argument missing")]
    MissingSnapshotter,
    /// The key is empty.
    #[error("snapshot key must not be empty")]
    EmptyKey,
    /// The parent is not committed.
    #[error("parent snapshot {0:?} is not committed")]
    ParentNotCommitted(String),
    /// The snapshot is not active (commit needs an active one).
    #[error("snapshot {0:?} is not active")]
    NotActive(String),
    /// The parent does not exist.
    #[error("parent snapshot {0} does not exist")]
    ParentNotFound(String),
    /// An update named a field other than labels.
    #[error("cannot update {0:?} field on snapshot")]
    BadFieldPath(String),
}

impl Classify for NamespacedSnapshotError {
    fn kind(&self) -> ErrorKind {
        match self {
            NamespacedSnapshotError::Metadata(e) => e.kind(),
            NamespacedSnapshotError::Snapshot(e) => e.kind(),
            NamespacedSnapshotError::NotLoaded(_)
            | NamespacedSnapshotError::MissingSnapshotter
            | NamespacedSnapshotError::EmptyKey
            | NamespacedSnapshotError::BadFieldPath(_) => ErrorKind::InvalidArgument,
            NamespacedSnapshotError::ParentNotCommitted(_)
            | NamespacedSnapshotError::NotActive(_) => ErrorKind::FailedPrecondition,
            NamespacedSnapshotError::ParentNotFound(_) => ErrorKind::NotFound,
        }
    }
}

type Result<T> = std::result::Result<T, NamespacedSnapshotError>;

/// Labels a driver is allowed to see.
fn backend_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| {
            k.starts_with(label::SNAPSHOT_INHERITED_PREFIX) || k.as_str() == label::SNAPSHOT_REF
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Every loaded snapshotter, seen through namespaces.
#[derive(Debug, Clone)]
pub struct NamespacedSnapshots {
    meta: Arc<MetadataStore>,
    backends: BTreeMap<String, Arc<dyn Snapshotter>>,
}

impl NamespacedSnapshots {
    /// Joins the metadata store and the drivers, keyed by snapshotter name.
    pub fn new(meta: Arc<MetadataStore>, backends: BTreeMap<String, Arc<dyn Snapshotter>>) -> Self {
        NamespacedSnapshots { meta, backends }
    }

    /// The names of the loaded snapshotters.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.backends.keys().map(String::as_str)
    }

    fn backend(&self, name: &str) -> Result<&Arc<dyn Snapshotter>> {
        if name.is_empty() {
            return Err(NamespacedSnapshotError::MissingSnapshotter);
        }
        self.backends
            .get(name)
            .ok_or_else(|| NamespacedSnapshotError::NotLoaded(name.to_owned()))
    }

    fn backend_key(&self, ns: &str, key: &str) -> Result<String> {
        Ok(format!("{ns}/{}/{key}", self.meta.next_snapshot_seq()?))
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        ns: &str,
        sn: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
        lease: Option<&str>,
        view: bool,
    ) -> Result<Vec<Mount>> {
        let backend = self.backend(sn)?;
        if key.is_empty() {
            return Err(NamespacedSnapshotError::EmptyKey);
        }
        // The driver's snapshot exists before its record; the collector must not see it
        // in between and take it for an orphan.
        let _create = self.meta.snapshot_create_guard();
        match self.meta.get_snapshot(ns, sn, key) {
            Ok(_) => return Err(MetadataError::SnapshotExists(key.to_owned()).into()),
            Err(MetadataError::SnapshotNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let parent_rec = match parent {
            None => None,
            Some(p) => match self.meta.get_snapshot(ns, sn, p) {
                Ok(rec) if rec.kind == Kind::Committed => Some(rec),
                Ok(_) => return Err(NamespacedSnapshotError::ParentNotCommitted(p.to_owned())),
                Err(MetadataError::SnapshotNotFound(_)) => {
                    return Err(NamespacedSnapshotError::ParentNotFound(p.to_owned()))
                }
                Err(e) => return Err(e.into()),
            },
        };
        if let Some(lease) = lease {
            self.meta
                .add_lease_resource(ns, lease, &LeaseResource::snapshot(sn, key))?;
        }
        let bkey = self.backend_key(ns, key)?;
        let bparent = parent_rec.as_ref().map(|r| r.backend_key.as_str());
        let mounts = if view {
            backend.view(&bkey, bparent, backend_labels(&labels))?
        } else {
            backend.prepare(&bkey, bparent, backend_labels(&labels))?
        };
        let now = SystemTime::now();
        let rec = SnapshotRecord {
            snapshotter: sn.to_owned(),
            key: key.to_owned(),
            backend_key: bkey.clone(),
            parent: parent.map(str::to_owned),
            kind: if view { Kind::View } else { Kind::Active },
            labels,
            created_at: now,
            updated_at: now,
        };
        if let Err(e) = self.meta.insert_snapshot(ns, &rec) {
            // Undo the driver's work so nothing is left without a record.
            if let Err(undo) = backend.remove(&bkey) {
                tracing::warn!(key = %bkey, error = %undo, "remove snapshot after failed insert");
            }
            return Err(e.into());
        }
        Ok(mounts)
    }

    /// Creates an active snapshot on top of `parent`.
    pub fn prepare(
        &self,
        ns: &str,
        sn: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
        lease: Option<&str>,
    ) -> Result<Vec<Mount>> {
        self.create(ns, sn, key, parent, labels, lease, false)
    }

    /// Creates a read-only view of `parent`.
    pub fn view(
        &self,
        ns: &str,
        sn: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
        lease: Option<&str>,
    ) -> Result<Vec<Mount>> {
        self.create(ns, sn, key, parent, labels, lease, true)
    }

    /// The mounts of an active snapshot or view.
    pub fn mounts(&self, ns: &str, sn: &str, key: &str) -> Result<Vec<Mount>> {
        let backend = self.backend(sn)?;
        let rec = self.meta.get_snapshot(ns, sn, key)?;
        Ok(backend.mounts(&rec.backend_key)?)
    }

    /// Commits the active snapshot `key` as `name`.
    pub fn commit(
        &self,
        ns: &str,
        sn: &str,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
        lease: Option<&str>,
    ) -> Result<()> {
        let backend = self.backend(sn)?;
        if name.is_empty() {
            return Err(NamespacedSnapshotError::EmptyKey);
        }
        let _create = self.meta.snapshot_create_guard();
        let rec = self.meta.get_snapshot(ns, sn, key)?;
        if rec.kind != Kind::Active {
            return Err(NamespacedSnapshotError::NotActive(key.to_owned()));
        }
        match self.meta.get_snapshot(ns, sn, name) {
            Ok(_) => return Err(MetadataError::SnapshotExists(name.to_owned()).into()),
            Err(MetadataError::SnapshotNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(lease) = lease {
            self.meta
                .add_lease_resource(ns, lease, &LeaseResource::snapshot(sn, name))?;
        }
        let bname = self.backend_key(ns, name)?;
        let mut merged = rec.labels.clone();
        merged.extend(labels);
        merged.retain(|_, v| !v.is_empty());
        backend.commit(&bname, &rec.backend_key, backend_labels(&merged))?;
        let now = SystemTime::now();
        let committed = SnapshotRecord {
            snapshotter: sn.to_owned(),
            key: name.to_owned(),
            backend_key: bname,
            parent: rec.parent.clone(),
            kind: Kind::Committed,
            labels: merged,
            created_at: now,
            updated_at: now,
        };
        self.meta.commit_snapshot_record(ns, key, &committed)?;
        Ok(())
    }

    /// Removes a snapshot that has no children.
    pub fn remove(&self, ns: &str, sn: &str, key: &str) -> Result<()> {
        let backend = self.backend(sn)?;
        let rec = self.meta.delete_snapshot_record(ns, sn, key)?;
        // The record is gone: the snapshot no longer exists for clients. If the driver fails
        // now, the next collection removes the orphan.
        if let Err(e) = backend.remove(&rec.backend_key) {
            tracing::warn!(key = %rec.backend_key, error = %e, "driver remove failed; left for gc");
        }
        Ok(())
    }

    /// The record of a snapshot.
    pub fn stat(&self, ns: &str, sn: &str, key: &str) -> Result<SnapshotRecord> {
        self.backend(sn)?;
        Ok(self.meta.get_snapshot(ns, sn, key)?)
    }

    /// Updates labels (`labels`, `labels.<k>`; no paths = replace all).
    pub fn update(
        &self,
        ns: &str,
        sn: &str,
        key: &str,
        labels: BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<SnapshotRecord> {
        let backend = self.backend(sn)?;
        let mut rec = self.meta.get_snapshot(ns, sn, key)?;
        if paths.is_empty() {
            rec.labels = labels.clone();
        }
        for path in paths {
            if let Some(k) = path.strip_prefix("labels.") {
                match labels.get(k) {
                    Some(v) if !v.is_empty() => {
                        rec.labels.insert(k.to_owned(), v.clone());
                    }
                    _ => {
                        rec.labels.remove(k);
                    }
                }
            } else if path == "labels" {
                rec.labels = labels.clone();
            } else {
                return Err(NamespacedSnapshotError::BadFieldPath(path.clone()));
            }
        }
        rec.labels.retain(|_, v| !v.is_empty());
        rec.updated_at = SystemTime::now();
        // Keep the driver's copy of the labels it may read in step.
        let mut info = backend.stat(&rec.backend_key)?;
        info.labels = backend_labels(&rec.labels);
        backend.update(info, &["labels".to_owned()])?;
        self.meta.update_snapshot_record(ns, &rec)?;
        Ok(rec)
    }

    /// The namespace's snapshots of `sn` matching `filter`.
    pub fn list(&self, ns: &str, sn: &str, filter: &Filter) -> Result<Vec<SnapshotRecord>> {
        self.backend(sn)?;
        Ok(self
            .meta
            .list_snapshots(ns, sn)?
            .into_iter()
            .filter(|r| filter.matches(r))
            .collect())
    }

    /// Disk usage of a snapshot.
    pub fn usage(&self, ns: &str, sn: &str, key: &str) -> Result<Usage> {
        let backend = self.backend(sn)?;
        let rec = self.meta.get_snapshot(ns, sn, key)?;
        Ok(backend.usage(&rec.backend_key)?)
    }

    /// Asks the driver to remove leftovers.
    pub fn cleanup(&self, sn: &str) -> Result<()> {
        Ok(self.backend(sn)?.cleanup()?)
    }

    /// One garbage-collection participant per snapshotter.
    pub fn sweepers(&self) -> Vec<Arc<dyn SnapshotSweeper>> {
        self.backends
            .iter()
            .map(|(name, backend)| {
                Arc::new(Sweeper {
                    name: name.clone(),
                    meta: self.meta.clone(),
                    backend: backend.clone(),
                }) as Arc<dyn SnapshotSweeper>
            })
            .collect()
    }
}

/// Garbage collection of one snapshotter's snapshots.
#[derive(Debug)]
struct Sweeper {
    name: String,
    meta: Arc<MetadataStore>,
    backend: Arc<dyn Snapshotter>,
}

fn sweep_error(e: impl std::error::Error + Send + Sync + 'static) -> SweepError {
    Box::new(e)
}

impl SnapshotSweeper for Sweeper {
    fn snapshotter(&self) -> &str {
        &self.name
    }

    fn roots(&self) -> std::result::Result<Vec<(String, String)>, SweepError> {
        Ok(self
            .meta
            .all_snapshots(&self.name)
            .map_err(sweep_error)?
            .into_iter()
            .filter(|(_, r)| r.labels.contains_key(label::GC_ROOT))
            .map(|(ns, r)| (ns, r.key))
            .collect())
    }

    fn references(
        &self,
        ns: &str,
        key: &str,
    ) -> std::result::Result<Option<SnapshotRefs>, SweepError> {
        match self.meta.get_snapshot(ns, &self.name, key) {
            Ok(r) => Ok(Some(SnapshotRefs {
                parent: r.parent,
                labels: r.labels,
            })),
            Err(MetadataError::SnapshotNotFound(_)) => Ok(None),
            Err(e) => Err(sweep_error(e)),
        }
    }

    fn sweep(&self, marked: &MarkSet) -> std::result::Result<usize, SweepError> {
        let mut removed = 0;
        // Remove unmarked records children first: repeat while something went.
        loop {
            let mut progress = false;
            let records = self.meta.all_snapshots(&self.name).map_err(sweep_error)?;
            for (ns, rec) in &records {
                if marked.has_snapshot(ns, &self.name, &rec.key) {
                    continue;
                }
                match self.meta.delete_snapshot_record(ns, &self.name, &rec.key) {
                    Ok(_) => {
                        if let Err(e) = self.backend.remove(&rec.backend_key) {
                            tracing::warn!(key = %rec.backend_key, error = %e, "gc: driver remove");
                        }
                        removed += 1;
                        progress = true;
                    }
                    Err(MetadataError::SnapshotHasChildren(_)) => {}
                    Err(e) => return Err(sweep_error(e)),
                }
            }
            if !progress {
                break;
            }
        }
        // Driver snapshots with no record anywhere (a crash between driver and metadata).
        let known: std::collections::HashSet<String> = self
            .meta
            .all_snapshots(&self.name)
            .map_err(sweep_error)?
            .into_iter()
            .map(|(_, r)| r.backend_key)
            .collect();
        let mut orphans: Vec<_> = self
            .backend
            .walk(&Filter::always())
            .map_err(sweep_error)?
            .into_iter()
            .filter(|i| !known.contains(&i.name))
            .collect();
        // Children before parents: longer chains first is not known, so retry until stable.
        loop {
            let before = orphans.len();
            orphans.retain(|i| self.backend.remove(&i.name).is_err());
            removed += before - orphans.len();
            if orphans.is_empty() || orphans.len() == before {
                break;
            }
        }
        Ok(removed)
    }
}

/// Every loaded snapshotter plugin, by id (each instance is an `Arc<dyn Snapshotter>`).
pub fn loaded_snapshotters(
    ctx: &berth_registry::InitContext<'_>,
) -> BTreeMap<String, Arc<dyn Snapshotter>> {
    snapshotters_of(ctx.get_all(berth_registry::types::SNAPSHOTTER))
}

/// The snapshotters among loaded plugin instances, by id.
pub fn snapshotters_of(
    instances: Vec<(String, berth_registry::Instance)>,
) -> BTreeMap<String, Arc<dyn Snapshotter>> {
    instances
        .into_iter()
        .filter_map(|(id, instance)| {
            instance
                .downcast::<Arc<dyn Snapshotter>>()
                .ok()
                .map(|s| (id, (*s).clone()))
        })
        .collect()
}
