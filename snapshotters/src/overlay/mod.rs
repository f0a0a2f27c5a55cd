//! The overlayfs snapshotter (containerd `snapshots/overlay/overlay.go`).
//!
//! Layout under the root:
//!
//! ```text
//! metadata.db/            the shared metastore
//! snapshots/<id>/fs       the snapshot's upper directory (a committed layer's content)
//! snapshots/<id>/work     overlay's work directory (active snapshots only)
//! snapshots/new-XXXXXX    a snapshot being built
//! ```
//!
//! A new snapshot's directory is built under a temp name, renamed to its reserved id, and only
//! then recorded in the metastore; a crash at any point leaves at most a directory no record
//! names, which [`Snapshotter::cleanup`] removes.

pub mod plugin;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::common::{orphans, parent_id, require_key};
use crate::error::SnapshotError;
use crate::fsutil;
use crate::mount::{mount_one, unmount};
use crate::snapshotter::{Info, Kind, Mount, Snapshotter, Usage};
use crate::storage::{MetaStore, Snapshot};

/// The label carrying a snapshot's upper directory when `upperdir_label` is on.
pub const UPPERDIR_LABEL: &str = "containerd.io/snapshot/overlay.upperdir";

/// Where the kernel exposes overlay's `index` parameter; present means `index=off` is
/// understood (containerd `supportsIndex`).
const INDEX_PARAMETER: &str = "/sys/module/overlay/parameters/index";

/// Options of the overlay snapshotter.
#[derive(Debug, Clone, Default)]
pub struct OverlayOptions {
    /// Report each snapshot's upper directory as the [`UPPERDIR_LABEL`] label.
    pub upperdir_label: bool,
    /// Extra options added to every overlay mount.
    pub mount_options: Vec<String>,
}

/// The overlayfs snapshotter.
#[derive(Debug)]
pub struct OverlaySnapshotter {
    root: PathBuf,
    ms: MetaStore,
    index_off: bool,
    options: OverlayOptions,
}

impl OverlaySnapshotter {
    /// Opens (or creates) an overlay snapshotter rooted at `root`. Does not probe overlay
    /// support; see [`supported`].
    pub fn new(root: &Path, options: OverlayOptions) -> Result<OverlaySnapshotter, SnapshotError> {
        fsutil::ensure_dir(root, 0o700)?;
        let ms = MetaStore::open(&root.join("metadata.db"))?;
        fsutil::ensure_dir(&root.join("snapshots"), 0o700)?;
        Ok(OverlaySnapshotter {
            root: root.to_path_buf(),
            ms,
            index_off: Path::new(INDEX_PARAMETER).exists(),
            options,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    fn upper_path(&self, id: &str) -> PathBuf {
        self.snapshots_dir().join(id).join("fs")
    }

    fn work_path(&self, id: &str) -> PathBuf {
        self.snapshots_dir().join(id).join("work")
    }

    fn with_upperdir_label(&self, mut info: Info) -> Result<Info, SnapshotError> {
        if self.options.upperdir_label {
            let (id, _, _) = self.ms.get_info(&info.name)?;
            info.labels.insert(
                UPPERDIR_LABEL.to_owned(),
                self.upper_path(&id).display().to_string(),
            );
        }
        Ok(info)
    }

    fn mounts_for(&self, s: &Snapshot) -> Vec<Mount> {
        let path = |id: &str| self.upper_path(id).display().to_string();
        if s.parent_ids.is_empty() {
            // Overlay needs a lower directory; a base layer is a plain bind mount.
            let ro = if s.kind == Kind::View { "ro" } else { "rw" };
            return vec![Mount {
                mount_type: "bind".into(),
                source: path(&s.id),
                target: String::new(),
                options: vec![ro.into(), "rbind".into()],
            }];
        }
        if s.kind == Kind::View && s.parent_ids.len() == 1 {
            return vec![Mount {
                mount_type: "bind".into(),
                source: path(&s.parent_ids[0]),
                target: String::new(),
                options: vec!["ro".into(), "rbind".into()],
            }];
        }
        let mut options = Vec::new();
        if self.index_off {
            options.push("index=off".to_owned());
        }
        options.extend(self.options.mount_options.iter().cloned());
        if s.kind == Kind::Active {
            options.push(format!("workdir={}", self.work_path(&s.id).display()));
            options.push(format!("upperdir={}", path(&s.id)));
        }
        let lowers: Vec<String> = s.parent_ids.iter().map(|id| path(id)).collect();
        options.push(format!("lowerdir={}", lowers.join(":")));
        vec![Mount {
            mount_type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options,
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
        let snapshots = self.snapshots_dir();
        let td = fsutil::temp_dir_in(&snapshots, "new-")?;
        let built = self.build(&td, kind, parent_id.as_deref()).and_then(|()| {
            let id = self.ms.next_id()?;
            let path = snapshots.join(id.to_string());
            fsutil::rename(&td, &path)?;
            Ok((id, path))
        });
        let (id, path) = match built {
            Ok(done) => done,
            Err(e) => {
                let _ = fsutil::remove_tree(&td);
                return Err(e);
            }
        };
        match self.ms.create_snapshot(id, kind, key, parent, labels) {
            Ok(s) => Ok(self.mounts_for(&s)),
            Err(e) => {
                if let Err(rm) = fsutil::remove_tree(&path) {
                    tracing::warn!(path = %path.display(), error = %rm, "failed to remove snapshot directory");
                }
                Err(e)
            }
        }
    }

    /// Fills a temp snapshot directory: `fs` (owned like the parent's) and, for active
    /// snapshots, `work`.
    fn build(&self, td: &Path, kind: Kind, parent_id: Option<&str>) -> Result<(), SnapshotError> {
        let fs = td.join("fs");
        fsutil::mkdir_mode(&fs, 0o755)?;
        if kind == Kind::Active {
            fsutil::mkdir_mode(&td.join("work"), 0o711)?;
        }
        if let Some(pid) = parent_id {
            let parent = self.upper_path(pid);
            let st = std::fs::metadata(&parent)
                .map_err(|e| SnapshotError::io("stat parent", &parent, e))?;
            std::os::unix::fs::lchown(&fs, Some(st.uid()), Some(st.gid()))
                .map_err(|e| SnapshotError::io("chown", &fs, e))?;
        }
        Ok(())
    }
}

impl Snapshotter for OverlaySnapshotter {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        let (_, info, _) = self.ms.get_info(key)?;
        self.with_upperdir_label(info)
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info, SnapshotError> {
        let info = self.ms.update_info(info, fieldpaths)?;
        self.with_upperdir_label(info)
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let (id, info, usage) = self.ms.get_info(key)?;
        if info.kind == Kind::Active {
            return fsutil::disk_usage(&self.upper_path(&id));
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
        let usage = fsutil::disk_usage(&self.upper_path(&id))?;
        self.ms.commit_active(key, name, usage, labels)?;
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        let (id, _) = self.ms.remove(key)?;
        // The record is gone; a directory that survives this is an orphan for cleanup.
        let dir = self.snapshots_dir().join(&id);
        if let Err(e) = fsutil::remove_tree(&dir) {
            tracing::warn!(path = %dir.display(), error = %e, "failed to remove snapshot directory");
        }
        Ok(())
    }

    fn walk(&self, filter: &berth_filters::Filter) -> Result<Vec<Info>, SnapshotError> {
        self.ms
            .walk(filter)?
            .into_iter()
            .map(|info| self.with_upperdir_label(info))
            .collect()
    }

    fn cleanup(&self) -> Result<(), SnapshotError> {
        let ids = self.ms.id_map()?;
        for dir in orphans(&self.snapshots_dir(), |name| ids.contains_key(name))? {
            tracing::info!(path = %dir.display(), "removing orphan snapshot directory");
            fsutil::remove_tree(&dir)?;
        }
        Ok(())
    }
}

/// Checks that overlay works at `root` (containerd `overlayutils.Supported`): the root must not
/// itself be on overlayfs, and an overlay with two lower directories must mount there.
pub fn supported(root: &Path) -> Result<(), SnapshotError> {
    fsutil::ensure_dir(root, 0o700)?;
    let fs = nix::sys::statfs::statfs(root).map_err(|e| SnapshotError::sys("statfs", root, e))?;
    if fs.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC {
        return Err(SnapshotError::Unsupported {
            reason: format!(
                "path {} is on overlayfs, which cannot host overlay upper directories",
                root.display()
            ),
        });
    }
    // The check makes directories: on a full disk, the metastore's reserve gives them room.
    crate::space::Reserve::new(&root.join("metadata.db")).make_room();
    let td = fsutil::temp_dir_in(root, "multiple-lowerdir-check")?;
    let result = probe_overlay(&td);
    if let Err(e) = fsutil::remove_tree(&td) {
        tracing::warn!(path = %td.display(), error = %e, "failed to remove overlay check directory");
    }
    result
}

fn probe_overlay(td: &Path) -> Result<(), SnapshotError> {
    for dir in ["lower1", "lower2", "upper", "work", "merged"] {
        fsutil::mkdir_mode(&td.join(dir), 0o755)?;
    }
    let m = Mount {
        mount_type: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options: vec![format!(
            "lowerdir={}:{},upperdir={},workdir={}",
            td.join("lower2").display(),
            td.join("lower1").display(),
            td.join("upper").display(),
            td.join("work").display()
        )],
    };
    let merged = td.join("merged");
    mount_one(&m, &merged).map_err(|e| SnapshotError::Unsupported {
        reason: format!("failed to mount overlay at {}: {e}", td.display()),
    })?;
    unmount(&merged)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn make(root: &Path) -> Arc<dyn Snapshotter> {
        Arc::new(OverlaySnapshotter::new(root, OverlayOptions::default()).expect("open overlay"))
    }

    crate::snapshotter_suite!(make);

    #[test]
    fn supported_refuses_a_root_on_overlayfs() {
        let _serial = crate::testsuite::serial();
        if !berth_testutil::require_root_for("the overlay support probe (mounts)") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        supported(&dir.path().join("root")).expect("overlay works on the temp dir");
        for d in ["lower", "upper", "work", "merged"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let m = Mount {
            mount_type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                format!("lowerdir={}", dir.path().join("lower").display()),
                format!("upperdir={}", dir.path().join("upper").display()),
                format!("workdir={}", dir.path().join("work").display()),
            ],
        };
        let guard = crate::mount::TempMount::new_in(dir.path(), &[m]).unwrap();
        let err = supported(&guard.path().join("root")).unwrap_err();
        assert!(err.to_string().contains("is on overlayfs"), "{err}");
        guard.close().unwrap();
    }

    #[test]
    fn mounts_follow_containerd() {
        let dir = tempfile::tempdir().unwrap();
        let sn = OverlaySnapshotter::new(dir.path(), OverlayOptions::default()).unwrap();
        let m = sn.prepare("base", None, BTreeMap::new()).unwrap();
        assert_eq!(m[0].mount_type, "bind");
        assert_eq!(m[0].options, ["rw", "rbind"]);
        sn.commit("b", "base", BTreeMap::new()).unwrap();
        let v = sn.view("v", Some("b"), BTreeMap::new()).unwrap();
        assert_eq!(v[0].mount_type, "bind");
        assert_eq!(v[0].options, ["ro", "rbind"]);
        let a = sn.prepare("a", Some("b"), BTreeMap::new()).unwrap();
        assert_eq!(a[0].mount_type, "overlay");
        let opts = &a[0].options;
        assert!(opts.iter().any(|o| o.starts_with("workdir=")));
        assert!(opts.iter().any(|o| o.starts_with("upperdir=")));
        assert!(opts.last().unwrap().starts_with("lowerdir="));
        assert_eq!(a, sn.mounts("a").unwrap());
    }
}
