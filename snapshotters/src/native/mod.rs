//! The native snapshotter (containerd `snapshots/native/native.go`): every active snapshot is
//! a full copy of its parent, every mount a bind mount. Works on any filesystem.
//!
//! Layout under the root:
//!
//! ```text
//! metadata.db/            the shared metastore
//! snapshots/<id>          the snapshot's tree (views of a parent have none: they bind the parent)
//! snapshots/new-XXXXXX    a snapshot being built
//! ```

pub mod plugin;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::{orphans, parent_id, require_key};
use crate::error::SnapshotError;
use crate::fsutil;
use crate::snapshotter::{Info, Kind, Mount, Snapshotter, Usage};
use crate::storage::{MetaStore, Snapshot};

/// The native snapshotter.
#[derive(Debug)]
pub struct NativeSnapshotter {
    root: PathBuf,
    ms: MetaStore,
}

impl NativeSnapshotter {
    /// Opens (or creates) a native snapshotter rooted at `root`.
    pub fn new(root: &Path) -> Result<NativeSnapshotter, SnapshotError> {
        fsutil::ensure_dir(root, 0o700)?;
        let ms = MetaStore::open(&root.join("metadata.db"))?;
        fsutil::ensure_dir(&root.join("snapshots"), 0o700)?;
        Ok(NativeSnapshotter {
            root: root.to_path_buf(),
            ms,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.root.join("snapshots").join(id)
    }

    fn mounts_for(&self, s: &Snapshot) -> Vec<Mount> {
        let ro = if s.kind == Kind::View { "ro" } else { "rw" };
        let source = match s.parent_ids.first() {
            Some(parent) if s.kind != Kind::Active => self.snapshot_dir(parent),
            _ => self.snapshot_dir(&s.id),
        };
        vec![Mount {
            mount_type: "bind".into(),
            source: source.display().to_string(),
            target: String::new(),
            options: vec!["rbind".into(), ro.into()],
        }]
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        require_key(key)?;
        let parent_id = parent_id(&self.ms, parent)?;
        // A view of a parent reads the parent's tree directly; nothing to build.
        let needs_dir = kind == Kind::Active || parent_id.is_none();
        let mut built = None;
        let id = if needs_dir {
            let td = fsutil::temp_dir_in(&self.root.join("snapshots"), "new-")?;
            let placed = self.fill(&td, parent_id.as_deref()).and_then(|()| {
                let id = self.ms.next_id()?;
                let path = self.snapshot_dir(&id.to_string());
                fsutil::rename(&td, &path)?;
                Ok((id, path))
            });
            match placed {
                Ok((id, path)) => {
                    built = Some(path);
                    id
                }
                Err(e) => {
                    let _ = fsutil::remove_tree(&td);
                    return Err(e);
                }
            }
        } else {
            self.ms.next_id()?
        };
        match self.ms.create_snapshot(id, kind, key, parent, labels) {
            Ok(s) => Ok(self.mounts_for(&s)),
            Err(e) => {
                if let Some(path) = built {
                    if let Err(rm) = fsutil::remove_tree(&path) {
                        tracing::warn!(path = %path.display(), error = %rm, "failed to remove snapshot directory");
                    }
                }
                Err(e)
            }
        }
    }

    fn fill(&self, td: &Path, parent_id: Option<&str>) -> Result<(), SnapshotError> {
        match parent_id {
            Some(pid) => fsutil::copy_dir(&self.snapshot_dir(pid), td),
            None => fsutil::set_mode(td, 0o755),
        }
    }
}

impl Snapshotter for NativeSnapshotter {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        Ok(self.ms.get_info(key)?.1)
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info, SnapshotError> {
        self.ms.update_info(info, fieldpaths)
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let (id, info, usage) = self.ms.get_info(key)?;
        if info.kind == Kind::Active {
            return fsutil::disk_usage(&self.snapshot_dir(&id));
        }
        Ok(usage)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let s = self.ms.get_snapshot(key)?;
        Ok(self.mounts_for(&s))
    }

    fn prepare(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.create(Kind::Active, key, parent, labels)
    }

    fn view(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.create(Kind::View, key, parent, labels)
    }

    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError> {
        let id = self.ms.active_id(key)?;
        let usage = fsutil::disk_usage(&self.snapshot_dir(&id))?;
        self.ms.commit_active(key, name, usage, labels)?;
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        let (id, _) = self.ms.remove(key)?;
        let dir = self.snapshot_dir(&id);
        if let Err(e) = fsutil::remove_tree(&dir) {
            tracing::warn!(path = %dir.display(), error = %e, "failed to remove snapshot directory");
        }
        Ok(())
    }

    fn walk(&self, filter: &berth_filters::Filter) -> Result<Vec<Info>, SnapshotError> {
        self.ms.walk(filter)
    }

    fn cleanup(&self) -> Result<(), SnapshotError> {
        let ids = self.ms.id_map()?;
        for dir in orphans(&self.root.join("snapshots"), |name| ids.contains_key(name))? {
            tracing::info!(path = %dir.display(), "removing orphan snapshot directory");
            fsutil::remove_tree(&dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn make(root: &Path) -> Arc<dyn Snapshotter> {
        Arc::new(NativeSnapshotter::new(root).expect("open native"))
    }

    crate::snapshotter_suite!(make);

    #[test]
    fn views_bind_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let sn = NativeSnapshotter::new(dir.path()).unwrap();
        sn.prepare("k", None, BTreeMap::new()).unwrap();
        std::fs::write(sn.snapshot_dir("1").join("f"), b"x").unwrap();
        sn.commit("c", "k", BTreeMap::new()).unwrap();
        let v = sn.view("v", Some("c"), BTreeMap::new()).unwrap();
        assert_eq!(v[0].options, ["rbind", "ro"]);
        assert_eq!(v[0].source, sn.snapshot_dir("1").display().to_string());
        let a = sn.prepare("a", Some("c"), BTreeMap::new()).unwrap();
        assert_ne!(a[0].source, v[0].source);
        assert_eq!(
            std::fs::read(Path::new(&a[0].source).join("f")).unwrap(),
            b"x"
        );
    }
}
