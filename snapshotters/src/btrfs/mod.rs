//! The btrfs snapshotter (containerd `snapshots/btrfs/btrfs.go`): every snapshot is a btrfs
//! subvolume, made by the kernel's copy-on-write snapshot ioctl.
//!
//! Layout under the root, which must be on btrfs:
//!
//! ```text
//! metadata.db/          the shared metastore
//! active/<id>           writable subvolumes of active snapshots
//! view/<id>             read-only snapshots of views
//! snapshots/<id>        read-only snapshots of committed snapshots
//! <dir>/new-<id>        a subvolume being made
//! ```
//!
//! Mounts are `btrfs` mounts of the root's device with `subvolid=<n>` (and `ro` unless active).

mod ioctl;
pub mod plugin;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::{orphans, parent_id, require_key};
use crate::error::SnapshotError;
use crate::fsutil;
use crate::snapshotter::{Info, Kind, Mount, Snapshotter, Usage};
use crate::storage::{MetaStore, Snapshot};

/// The btrfs snapshotter.
#[derive(Debug)]
pub struct BtrfsSnapshotter {
    root: PathBuf,
    device: String,
    ms: MetaStore,
}

fn kind_dir(kind: Kind) -> &'static str {
    match kind {
        Kind::Active => "active",
        Kind::View => "view",
        Kind::Committed => "snapshots",
    }
}

/// Fails unless `root` is on btrfs (statfs magic `0x9123683E`), with the message containerd's plugin skips with.
pub fn check_btrfs(root: &Path) -> Result<(), SnapshotError> {
    let fs = nix::sys::statfs::statfs(root).map_err(|e| SnapshotError::sys("statfs", root, e))?;
    if fs.filesystem_type() != nix::sys::statfs::BTRFS_SUPER_MAGIC {
        return Err(SnapshotError::Unsupported {
            reason: format!(
                "path {} must be a btrfs filesystem to be used with the btrfs snapshotter",
                root.display()
            ),
        });
    }
    Ok(())
}

impl BtrfsSnapshotter {
    /// Opens (or creates) a btrfs snapshotter rooted at `root`, which must be on btrfs.
    pub fn new(root: &Path) -> Result<BtrfsSnapshotter, SnapshotError> {
        fsutil::ensure_dir(root, 0o700)?;
        check_btrfs(root)?;
        let device = mount_source(root)?;
        for kind in [Kind::Active, Kind::View, Kind::Committed] {
            fsutil::ensure_dir(&root.join(kind_dir(kind)), 0o700)?;
        }
        let ms = MetaStore::open(&root.join("metadata.db"))?;
        Ok(BtrfsSnapshotter {
            root: root.to_path_buf(),
            device,
            ms,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The block device the root is on, the source of every mount.
    pub fn device(&self) -> &str {
        &self.device
    }

    fn path(&self, kind: Kind, id: &str) -> PathBuf {
        self.root.join(kind_dir(kind)).join(id)
    }

    fn mounts_for(&self, s: &Snapshot) -> Result<Vec<Mount>, SnapshotError> {
        let sid = ioctl::subvol_id(&self.path(s.kind, &s.id))?;
        let mut options = vec![format!("subvolid={sid}")];
        if s.kind != Kind::Active {
            options.push("ro".into());
        }
        Ok(vec![Mount {
            mount_type: "btrfs".into(),
            source: self.device.clone(),
            target: String::new(),
            options,
        }])
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
        let id = self.ms.next_id()?.to_string();
        let tmp = self.root.join(kind_dir(kind)).join(format!("new-{id}"));
        match &parent_id {
            Some(pid) => {
                ioctl::subvol_snapshot(&tmp, &self.path(Kind::Committed, pid), kind == Kind::View)?
            }
            None => ioctl::subvol_create(&tmp)?,
        }
        let path = self.path(kind, &id);
        if let Err(e) = fsutil::rename(&tmp, &path) {
            delete_quietly(&tmp);
            return Err(e);
        }
        let numeric: u64 = id.parse().expect("ids are decimal numbers");
        let created = self
            .ms
            .create_snapshot(numeric, kind, key, parent, labels)
            .and_then(|s| self.mounts_for(&s));
        if created.is_err() {
            delete_quietly(&path);
        }
        created
    }
}

/// Deletes a subvolume (or a plain directory left by a crash), logging failures: the caller
/// is already returning an error or the record is gone, and cleanup retries.
fn delete_quietly(path: &Path) {
    if let Err(e) = delete(path) {
        tracing::warn!(path = %path.display(), error = %e, "failed to delete btrfs subvolume");
    }
}

fn delete(path: &Path) -> Result<(), SnapshotError> {
    if ioctl::is_subvolume(path) {
        ioctl::subvol_delete(path)
    } else {
        fsutil::remove_tree(path)
    }
}

/// The source of the mount holding `path`, from `/proc/self/mountinfo` (the last, longest
/// matching mount point wins, as it shadows the others).
fn mount_source(path: &Path) -> Result<String, SnapshotError> {
    let path = std::fs::canonicalize(path).map_err(|e| SnapshotError::io("resolve", path, e))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| SnapshotError::io("read", "/proc/self/mountinfo", e))?;
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount_point), Some(source)) = (fields.get(4), fields.get(sep + 2)) else {
            continue;
        };
        let mount_point = unescape(mount_point);
        if path.starts_with(&mount_point) {
            let len = mount_point.len();
            if best.as_ref().is_none_or(|(l, _)| len >= *l) {
                best = Some((len, unescape(source)));
            }
        }
    }
    best.map(|(_, source)| source)
        .ok_or_else(|| SnapshotError::Unsupported {
            reason: format!("no mount holds {}", path.display()),
        })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Snapshotter for BtrfsSnapshotter {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        Ok(self.ms.get_info(key)?.1)
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info, SnapshotError> {
        self.ms.update_info(info, fieldpaths)
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let (id, info, usage) = self.ms.get_info(key)?;
        if info.kind != Kind::Active {
            return Ok(usage);
        }
        // Shared extents make a plain walk count the parent's data too; count what differs
        // from the parent, as containerd's fs.DiffUsage does.
        let parent = match &info.parent {
            Some(p) => Some(self.path(Kind::Committed, &self.ms.get_info(p)?.0)),
            None => None,
        };
        fsutil::diff_usage(parent.as_deref(), &self.path(Kind::Active, &id))
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let s = self.ms.get_snapshot(key)?;
        self.mounts_for(&s)
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
        let usage = self.usage(key)?;
        let source = self.path(Kind::Active, &id);
        let tmp = self
            .root
            .join(kind_dir(Kind::Committed))
            .join(format!("new-{id}"));
        ioctl::subvol_snapshot(&tmp, &source, true)?;
        let target = self.path(Kind::Committed, &id);
        if let Err(e) = fsutil::rename(&tmp, &target) {
            delete_quietly(&tmp);
            return Err(e);
        }
        if let Err(e) = self.ms.commit_active(key, name, usage, labels) {
            delete_quietly(&target);
            return Err(e);
        }
        // Committed: the writable subvolume is now an orphan; cleanup retries if this fails.
        delete_quietly(&source);
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        let (id, kind) = self.ms.remove(key)?;
        delete_quietly(&self.path(kind, &id));
        Ok(())
    }

    fn walk(&self, filter: &berth_filters::Filter) -> Result<Vec<Info>, SnapshotError> {
        self.ms.walk(filter)
    }

    fn cleanup(&self) -> Result<(), SnapshotError> {
        let ids = self.ms.id_map()?;
        for kind in [Kind::Active, Kind::View, Kind::Committed] {
            let dir = self.root.join(kind_dir(kind));
            for orphan in orphans(&dir, |name| ids.get(name) == Some(&kind))? {
                tracing::info!(path = %orphan.display(), "removing orphan btrfs subvolume");
                delete(&orphan)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;
    use std::sync::Arc;

    use super::*;
    use crate::mount::unmount;

    /// A sparse file on a loop device formatted as btrfs and mounted at the snapshotter root;
    /// drop unmounts and detaches (containerd `btrfs_test.go`).
    #[derive(Debug)]
    struct LoopBtrfs {
        device: String,
        mount_point: PathBuf,
        _image_dir: tempfile::TempDir,
    }

    impl LoopBtrfs {
        fn new(mount_point: &Path) -> Result<LoopBtrfs, String> {
            for tool in ["mkfs.btrfs", "losetup"] {
                if !berth_testutil::on_path(tool) {
                    return Err(format!(
                        "{tool} is not installed (apt-get install btrfs-progs)"
                    ));
                }
            }
            let image_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let image = image_dir.path().join("btrfs.img");
            let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
            file.set_len(512 << 20).map_err(|e| e.to_string())?;
            drop(file);
            let out = Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&image)
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!("losetup: {}", String::from_utf8_lossy(&out.stderr)));
            }
            let device = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let guard = LoopBtrfs {
                device: device.clone(),
                mount_point: mount_point.to_path_buf(),
                _image_dir: image_dir,
            };
            let out = Command::new("mkfs.btrfs")
                .args(["-f", "-q", &device])
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "mkfs.btrfs: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let m = Mount {
                mount_type: "btrfs".into(),
                source: device,
                target: String::new(),
                options: Vec::new(),
            };
            crate::mount::mount_all(&[m], mount_point).map_err(|e| e.to_string())?;
            Ok(guard)
        }
    }

    impl Drop for LoopBtrfs {
        fn drop(&mut self) {
            if let Err(e) = unmount(&self.mount_point) {
                eprintln!("unmount {}: {e}", self.mount_point.display());
            }
            let _ = Command::new("losetup").args(["-d", &self.device]).status();
        }
    }

    fn setup(root: &Path) -> Result<Option<Box<dyn std::any::Any>>, String> {
        LoopBtrfs::new(root).map(|g| Some(Box::new(g) as Box<dyn std::any::Any>))
    }

    fn make(root: &Path) -> Arc<dyn Snapshotter> {
        Arc::new(BtrfsSnapshotter::new(root).expect("open btrfs"))
    }

    crate::snapshotter_suite!(make, setup);

    #[test]
    fn refuses_a_root_that_is_not_btrfs() {
        let dir = tempfile::tempdir().unwrap();
        if nix::sys::statfs::statfs(dir.path())
            .unwrap()
            .filesystem_type()
            == nix::sys::statfs::BTRFS_SUPER_MAGIC
        {
            println!("skipped: the temp dir is on btrfs");
            return;
        }
        let err = BtrfsSnapshotter::new(dir.path()).unwrap_err();
        assert!(err
            .to_string()
            .contains("must be a btrfs filesystem to be used with the btrfs snapshotter"));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/x\"), r"/x\");
    }
}
