//! A task's bundle (containerd `runtime/v2/bundle.go`):
//!
//! ```text
//! <state>/io.containerd.runtime.v2.task/<ns>/<id>/   0700; with a user namespace, 0710 and
//!                                                    owned by the remapped root's group
//!     config.json      the spec Any's value, byte for byte
//!     rootfs/          the shim mounts the snapshot here
//!     work -> <root>/io.containerd.runtime.v2.task/<ns>/<id>
//!     log              FIFO the shim writes its log to; the daemon reads it
//!     shim-binary-path written (synced) by the daemon before the shim starts; read on restart
//!     address          written by the shim's start action (by the daemon if it did not)
//!     shim.pid         the daemonised shim's pid, written by its start action
//! ```
//!
//! Namespace and id are validated before any path is built. Everything here is synchronous
//! filesystem work; async callers go through [`crate::blocking`].

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_registry::identifiers;
use nix::sys::stat::Mode;
use serde::Deserialize;

use crate::error::RuntimeError;

/// The spec file name.
pub const CONFIG_FILE: &str = "config.json";
/// The rootfs directory name.
pub const ROOTFS: &str = "rootfs";
/// The work-dir symlink name.
pub const WORK: &str = "work";
/// The shim log FIFO name.
pub const LOG_FIFO: &str = "log";
/// The file the shim writes its address to.
pub const ADDRESS_FILE: &str = "address";
/// The file recording the shim binary, read on restart.
pub const SHIM_BINARY_FILE: &str = "shim-binary-path";

/// One task's bundle on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The namespace.
    pub namespace: String,
    /// The task (container) id.
    pub id: String,
    /// `<state>/<ns>/<id>`.
    pub path: PathBuf,
    /// `<root>/<ns>/<id>`.
    pub work: PathBuf,
}

fn bundle_io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Bundle {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn mkdir(path: &Path, mode: u32, recursive: bool) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(recursive)
        .mode(mode)
        .create(path)
}

impl Bundle {
    /// The bundle of `ns`/`id` under the plugin's `state` and `root` dirs; refuses ids that are
    /// not identifiers (so `../x` never becomes a path).
    pub fn locate(state: &Path, root: &Path, ns: &str, id: &str) -> Result<Bundle, RuntimeError> {
        identifiers::validate_namespace(ns).map_err(|source| RuntimeError::InvalidId {
            id: ns.to_owned(),
            source,
        })?;
        identifiers::validate(id).map_err(|source| RuntimeError::InvalidId {
            id: id.to_owned(),
            source,
        })?;
        Ok(Bundle {
            namespace: ns.to_owned(),
            id: id.to_owned(),
            path: state.join(ns).join(id),
            work: root.join(ns).join(id),
        })
    }

    /// Creates the bundle with `spec` as `config.json`. An existing bundle directory means the
    /// task exists (AlreadyExists); on any other failure what was made is removed again.
    pub fn create(
        state: &Path,
        root: &Path,
        ns: &str,
        id: &str,
        spec: &[u8],
    ) -> Result<Bundle, RuntimeError> {
        let b = Bundle::locate(state, root, ns, id)?;
        let parent = state.join(ns);
        mkdir(&parent, 0o711, true).map_err(bundle_io("create state dir", &parent))?;
        let remapped = remapped_gid(id, spec)?;
        match mkdir(&b.path, 0o700, false) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::TaskExists(id.to_owned()))
            }
            Err(e) => return Err(bundle_io("create bundle", &b.path)(e)),
        }
        if let Err(e) = b.open_to(remapped).and_then(|()| b.populate(root, spec)) {
            let _ = std::fs::remove_dir_all(&b.path);
            let _ = std::fs::remove_dir_all(&b.work);
            return Err(e);
        }
        Ok(b)
    }

    /// Opens the bundle to a user namespace's remapped root: group `gid`, mode 0710, so that
    /// runc's init, running as that root, reaches `rootfs` (containerd `bundle_linux.go`
    /// `prepareBundleDirectoryPermissions`). Nothing to do without a remapping.
    fn open_to(&self, gid: Option<u32>) -> Result<(), RuntimeError> {
        let Some(gid) = gid else {
            return Ok(());
        };
        std::os::unix::fs::chown(&self.path, None, Some(gid))
            .and_then(|()| {
                std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o710))
            })
            .map_err(bundle_io("open bundle to the remapped root", &self.path))
    }

    fn populate(&self, root: &Path, spec: &[u8]) -> Result<(), RuntimeError> {
        let rootfs = self.path.join(ROOTFS);
        mkdir(&rootfs, 0o711, false).map_err(bundle_io("create rootfs dir", &rootfs))?;
        let work_parent = root.join(&self.namespace);
        mkdir(&work_parent, 0o711, true).map_err(bundle_io("create work dir", &work_parent))?;
        if let Err(e) = mkdir(&self.work, 0o711, false) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(bundle_io("create work dir", &self.work)(e));
            }
            // A stale work dir from an earlier task of the same id: start clean.
            std::fs::remove_dir_all(&self.work)
                .map_err(bundle_io("remove work dir", &self.work))?;
            mkdir(&self.work, 0o711, false).map_err(bundle_io("create work dir", &self.work))?;
        }
        let link = self.path.join(WORK);
        std::os::unix::fs::symlink(&self.work, &link).map_err(bundle_io("link work dir", &link))?;
        let config = self.path.join(CONFIG_FILE);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&config)
            .and_then(|mut f| io::Write::write_all(&mut f, spec))
            .map_err(bundle_io("write spec", &config))?;
        let log = self.log_path();
        nix::unistd::mkfifo(&log, Mode::from_bits_truncate(0o700))
            .map_err(|e| bundle_io("create log fifo", &log)(io::Error::from(e)))?;
        Ok(())
    }

    /// The shim log FIFO.
    pub fn log_path(&self) -> PathBuf {
        self.path.join(LOG_FIFO)
    }

    /// The rootfs directory.
    pub fn rootfs(&self) -> PathBuf {
        self.path.join(ROOTFS)
    }

    /// True when the bundle directory has no entries (or is gone).
    pub fn is_empty(&self) -> bool {
        std::fs::read_dir(&self.path)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    }

    /// Writes a small file in the bundle (mode 0600) through a temporary file renamed over it,
    /// so that a daemon killed at any point leaves the whole file or none. Nothing is fsynced
    /// (containerd does not sync the bundle's files either): a killed process loses nothing
    /// the kernel already has, and after a host crash no shim or container a bundle describes
    /// is alive, so a file the crash emptied reads as absent ([`Bundle::read_file`]) and the
    /// bundle is cleaned up as one whose shim never started. Measured: the two syncs cost
    /// ~2.7 ms of every Tasks.Create with the state dir on ext4 (docs/PERFORMANCE.md).
    pub fn write_file(&self, name: &str, data: &[u8]) -> Result<(), RuntimeError> {
        let p = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| io::Write::write_all(&mut f, data))
            .and_then(|()| std::fs::rename(&tmp, &p))
            .map_err(bundle_io("write", &p))
    }

    /// Reads a bundle file as trimmed text; `None` when it does not exist or is empty (a host
    /// crash can leave a written file empty, see [`Bundle::write_file`]).
    pub fn read_file(&self, name: &str) -> Result<Option<String>, RuntimeError> {
        let p = self.path.join(name);
        match std::fs::read_to_string(&p) {
            Ok(s) if s.trim().is_empty() => Ok(None),
            Ok(s) => Ok(Some(s.trim().to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(bundle_io("read", &p)(e)),
        }
    }

    /// Removes the bundle and its work dir: unmounts whatever is left on `rootfs`, then renames
    /// each tree to a hidden name before removing it, so a crash never leaves half a bundle
    /// under its real name.
    pub fn delete(&self) -> Result<(), RuntimeError> {
        let rootfs = self.rootfs();
        unmount_all(&rootfs).map_err(bundle_io("unmount rootfs", &rootfs))?;
        match std::fs::remove_dir(&rootfs) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(bundle_io("remove rootfs", &rootfs)(e)),
        }
        let bundle = atomic_delete(&self.path).map_err(bundle_io("remove bundle", &self.path));
        let work = atomic_delete(&self.work).map_err(bundle_io("remove work dir", &self.work));
        bundle.and(work)
    }
}

/// The part of an OCI spec that says where a user namespace maps group 0.
#[derive(Debug, Default, Deserialize)]
struct SpecUserNs {
    #[serde(default)]
    linux: Option<LinuxUserNs>,
}

#[derive(Debug, Default, Deserialize)]
struct LinuxUserNs {
    #[serde(default, rename = "gidMappings")]
    gid_mappings: Option<Vec<IdMapping>>,
}

#[derive(Debug, Deserialize)]
struct IdMapping {
    #[serde(rename = "containerID")]
    container_id: u32,
    #[serde(rename = "hostID")]
    host_id: u32,
}

/// The host group that the container's group 0 maps to, when the spec maps it to one other
/// than 0 (containerd `remappedGID`). A spec that is not JSON is refused; an empty one (a
/// container without a spec) has no mapping.
fn remapped_gid(id: &str, spec: &[u8]) -> Result<Option<u32>, RuntimeError> {
    if spec.is_empty() {
        return Ok(None);
    }
    let spec: SpecUserNs =
        serde_json::from_slice(spec).map_err(|source| RuntimeError::InvalidSpec {
            id: id.to_owned(),
            source,
        })?;
    Ok(spec
        .linux
        .and_then(|l| l.gid_mappings)
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.container_id == 0)
        .map(|m| m.host_id)
        .filter(|gid| *gid != 0))
}

/// Lazily unmounts everything stacked on `path` through the mount library (containerd
/// `UnmountAll` with `MNT_DETACH`). Not a mount point, missing, or EPERM (unprivileged, so
/// nothing of ours can be mounted there) is fine.
fn unmount_all(path: &Path) -> io::Result<()> {
    use berth_mount::MountError;
    use nix::{errno::Errno, mount::MntFlags};
    match berth_mount::unmount_all(path, MntFlags::MNT_DETACH) {
        Ok(())
        | Err(MountError::Sys {
            source: Errno::EPERM,
            ..
        }) => Ok(()),
        Err(MountError::Sys { source, .. }) => Err(io::Error::from(source)),
        Err(e) => Err(io::Error::other(e)),
    }
}

/// Renames `path` to `.<name>` next to it, then removes that. A `.<name>` left by an earlier
/// delete that was killed midway goes first (a rename cannot replace a non-empty directory).
fn atomic_delete(path: &Path) -> io::Result<()> {
    let Some(name) = path.file_name() else {
        return Ok(());
    };
    let mut hidden = std::ffi::OsString::from(".");
    hidden.push(name);
    let hidden = path.with_file_name(hidden);
    remove_interrupted(&hidden)?;
    match std::fs::rename(path, &hidden) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    std::fs::remove_dir_all(&hidden)
}

/// Removes a `.<name>` directory a killed [`atomic_delete`] left, unmounting a rootfs still
/// under it first; absent is fine.
fn remove_interrupted(hidden: &Path) -> io::Result<()> {
    if hidden.symlink_metadata().is_err() {
        return Ok(());
    }
    unmount_all(&hidden.join(ROOTFS))?;
    match std::fs::remove_dir_all(hidden) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Finishes the deletes a crash interrupted in `dir` (a namespace's bundle or work directory):
/// every `.<id>` directory goes. Returns how many did.
pub(crate) fn finish_interrupted_deletes(dir: &Path) -> io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_prefix('.')) else {
            continue;
        };
        if identifiers::validate(id).is_err() || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        remove_interrupted(&entry.path())?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    use berth_registry::{Classify, ErrorKind};

    use super::*;

    #[test]
    fn a_delete_finishes_over_one_a_crash_cut_short() {
        let d = tempfile::tempdir().unwrap();
        let (state, root) = (d.path().join("state"), d.path().join("root"));
        // A first life of the bundle was renamed to `.c1` and then the daemon died.
        let first = Bundle::create(&state, &root, "default", "c1", b"{}").unwrap();
        std::fs::rename(&first.path, state.join("default/.c1")).unwrap();
        std::fs::rename(&first.work, root.join("default/.c1")).unwrap();
        // The id is used again; its delete must not trip over the leftover.
        let again = Bundle::create(&state, &root, "default", "c1", b"{}").unwrap();
        again.delete().unwrap();
        let left: Vec<_> = std::fs::read_dir(state.join("default"))
            .unwrap()
            .chain(std::fs::read_dir(root.join("default")).unwrap())
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn refuses_ids_that_are_not_identifiers() {
        let d = tempfile::tempdir().unwrap();
        for (ns, id) in [
            ("default", "../x"),
            ("default", "a/b"),
            ("..", "x"),
            ("", "x"),
            ("default", ""),
        ] {
            let err = Bundle::create(d.path(), d.path(), ns, id, b"{}").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{ns:?}/{id:?}");
        }
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_remapped_root_gets_the_bundle_group() {
        use std::os::unix::fs::MetadataExt;

        let d = tempfile::tempdir().unwrap();
        let (state, root) = (d.path().join("state"), d.path().join("root"));
        let spec = br#"{"linux":{"uidMappings":[{"containerID":0,"hostID":100000,"size":65536}],
            "gidMappings":[{"containerID":1,"hostID":7,"size":1},
                           {"containerID":0,"hostID":100000,"size":65536}]}}"#;
        assert_eq!(remapped_gid("u1", spec).unwrap(), Some(100000));
        // Giving a directory to another group takes root; the end-to-end test covers it too.
        if nix::unistd::geteuid().is_root() {
            let b = Bundle::create(&state, &root, "ns1", "u1", spec).unwrap();
            let meta = std::fs::metadata(&b.path).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o710);
            assert_eq!(meta.gid(), 100000);
        }

        for plain in [&b"{}"[..], b"", br#"{"linux":{"gidMappings":[]}}"#] {
            assert_eq!(remapped_gid("x", plain).unwrap(), None);
        }
        let err = Bundle::create(&state, &root, "ns1", "bad", b"not json").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(!state.join("ns1/bad").exists());
    }

    #[test]
    fn creates_the_layout_and_deletes_it() {
        let d = tempfile::tempdir().unwrap();
        let (state, root) = (d.path().join("state"), d.path().join("root"));
        let b = Bundle::create(&state, &root, "ns1", "c1", b"{\"ociVersion\":\"1\"}").unwrap();
        assert_eq!(b.path, state.join("ns1/c1"));
        let mode = std::fs::metadata(&b.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(
            std::fs::read(b.path.join(CONFIG_FILE)).unwrap(),
            b"{\"ociVersion\":\"1\"}"
        );
        assert!(b.rootfs().is_dir());
        assert_eq!(
            std::fs::read_link(b.path.join(WORK)).unwrap(),
            root.join("ns1/c1")
        );
        assert!(root.join("ns1/c1").is_dir());
        assert!(std::fs::metadata(b.log_path())
            .unwrap()
            .file_type()
            .is_fifo());

        let again = Bundle::create(&state, &root, "ns1", "c1", b"{}").unwrap_err();
        assert_eq!(again.kind(), ErrorKind::AlreadyExists);

        b.write_file(SHIM_BINARY_FILE, b"/usr/bin/x").unwrap();
        assert_eq!(
            b.read_file(SHIM_BINARY_FILE).unwrap().as_deref(),
            Some("/usr/bin/x")
        );
        assert_eq!(b.read_file(ADDRESS_FILE).unwrap(), None);
        // What a host crash can leave of a file written without fsync: read as absent.
        std::fs::write(b.path.join(ADDRESS_FILE), b"\n").unwrap();
        assert_eq!(b.read_file(ADDRESS_FILE).unwrap(), None);

        b.delete().unwrap();
        assert!(!b.path.exists());
        assert!(!root.join("ns1/c1").exists());
        assert_eq!(std::fs::read_dir(state.join("ns1")).unwrap().count(), 0);
        // Deleting twice is fine.
        b.delete().unwrap();
    }
}
