//! Named volumes: directories kept by the client under the daemon's root, as nerdctl keeps them
//! under its data root (`pkg/mountutil/volumestore`).
//!
//! Where: `<root>/berth/volumes/<namespace>/<name>/` holds `_data/` (what containers mount, mode
//! 0755) and `volume.json` (`{"labels": {...}}`, nerdctl's file); the namespace directory is
//! 0700 and every change to it is made under an exclusive `flock` on it. `<root>` is berthd's
//! (or containerd's) root directory, found through Introspection: the content plugin exports
//! `root` = `<root>/io.containerd.content.v1.content` (containerd sets the same export), so the
//! daemon's `--root` is its parent; when no such export is there, `/var/lib/berth` (berthd's
//! default root). nerdctl puts the same tree under `<data-root>/<address-hash>/`; berth needs no
//! address hash because a daemon's root is its own.
//!
//! What a container mounts is recorded in its labels: [`MOUNTS_LABEL`] (`berth/mounts`) holds a
//! JSON array of Docker `MountPoint`s, the shape nerdctl writes to `nerdctl/mounts`, and
//! [`ANONYMOUS_LABEL`] (`berth/anonymous-volumes`) the names of the anonymous volumes made for
//! it, as `nerdctl/anonymous-volumes`. An anonymous volume carries Docker's
//! `com.docker.volume.anonymous` label. A volume is in use while a container of the namespace
//! names it in its mounts label or has a spec mount whose source lies in the volume's directory
//! (so containers made by ctr with `--mount` on a volume path count too).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use berth_proto::containerd::services::containers::v1::{Container, ListContainersRequest};
use berth_proto::containerd::services::introspection::v1::PluginsRequest;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{spec, Client};
use crate::error::{Object, RpcResultExt};

/// Container label listing what the container mounts (JSON array of [`MountPoint`]).
pub const MOUNTS_LABEL: &str = "berth/mounts";
/// nerdctl's label of the same shape, read when berth's is absent.
pub const NERDCTL_MOUNTS_LABEL: &str = "nerdctl/mounts";
/// Container label naming the anonymous volumes made for it (JSON array of names).
pub const ANONYMOUS_LABEL: &str = "berth/anonymous-volumes";
/// Docker's label on an anonymous volume.
pub const ANONYMOUS_VOLUME_LABEL: &str = "com.docker.volume.anonymous";
/// Root of berthd when the daemon does not say.
pub const DEFAULT_ROOT: &str = "/var/lib/berth";
/// The one volume driver.
pub const DRIVER: &str = "local";

const DATA_DIR: &str = "_data";
const VOLUME_JSON: &str = "volume.json";

/// One mount of a container, as Docker's `types.MountPoint` (and nerdctl's `nerdctl/mounts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPoint {
    /// `volume` or `bind`.
    #[serde(rename = "Type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The volume name (volumes only).
    #[serde(rename = "Name", default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Host path mounted.
    #[serde(rename = "Source", default)]
    pub source: String,
    /// Path in the container.
    #[serde(rename = "Destination", default)]
    pub destination: String,
    /// `local` for volumes.
    #[serde(rename = "Driver", default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// The mode text given (`ro`, `rw`, `z`, ...).
    #[serde(rename = "Mode", default)]
    pub mode: String,
    /// Writable.
    #[serde(rename = "RW", default)]
    pub rw: bool,
    /// Bind propagation (`rprivate`, ...).
    #[serde(rename = "Propagation", default)]
    pub propagation: String,
}

/// The mounts recorded on a container: `berth/mounts`, else `nerdctl/mounts`, else none.
pub fn recorded_mounts(labels: &HashMap<String, String>) -> Option<Vec<MountPoint>> {
    [MOUNTS_LABEL, NERDCTL_MOUNTS_LABEL]
        .iter()
        .find_map(|key| labels.get(*key))
        .and_then(|text| serde_json::from_str(text).ok())
}

/// What a container mounts: its record, else (a container made without one, say by ctr) the
/// bind mounts of its spec.
pub fn container_mounts(c: &Container) -> Vec<MountPoint> {
    if let Some(points) = recorded_mounts(&c.labels) {
        return points;
    }
    let Ok(spec) = spec::from_any(c.spec.as_ref()) else {
        return Vec::new();
    };
    let Some(list) = spec["mounts"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|m| {
            let options = spec::strings(&m["options"]);
            let bind = m["type"] == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
            bind.then(|| MountPoint {
                kind: "bind".to_owned(),
                name: String::new(),
                source: m["source"].as_str().unwrap_or_default().to_owned(),
                destination: m["destination"].as_str().unwrap_or_default().to_owned(),
                driver: String::new(),
                mode: String::new(),
                rw: !options.iter().any(|o| o == "ro"),
                propagation: String::new(),
            })
        })
        .collect()
}

/// The anonymous volumes made for a container.
pub fn anonymous_volumes(labels: &HashMap<String, String>) -> Vec<String> {
    labels
        .get(ANONYMOUS_LABEL)
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// Checks a volume name against Docker's rule for local volumes
/// (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`), which also keeps `/` and `..` out of the store's paths.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || name.len() < 2 || name.len() > 255 {
        bail!(
            "invalid volume name {name:?}: only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed (at least two characters); to mount a host directory, use an absolute path"
        );
    }
    Ok(())
}

/// A random 64-hex name, as Docker gives anonymous volumes.
pub fn random_name() -> Result<String> {
    let mut bytes = [0u8; 32];
    let mut urandom = File::open("/dev/urandom").context("cannot open /dev/urandom")?;
    io::Read::read_exact(&mut urandom, &mut bytes).context("cannot read /dev/urandom")?;
    Ok(hex::encode(bytes))
}

/// A volume of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    /// The `_data` directory containers mount.
    pub mountpoint: PathBuf,
    pub labels: BTreeMap<String, String>,
    /// Modification time of the volume's directory (its creation, as nothing rewrites it).
    pub created_secs: i64,
}

impl Volume {
    /// Whether the volume is anonymous (Docker's label).
    pub fn anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_VOLUME_LABEL)
    }

    /// Docker's `volume inspect` object.
    pub fn inspect_json(&self) -> Value {
        serde_json::json!({
            "CreatedAt": crate::timefmt::rfc3339(self.created_secs),
            "Driver": DRIVER,
            "Labels": self.labels,
            "Mountpoint": self.mountpoint.display().to_string(),
            "Name": self.name,
            "Options": null,
            "Scope": "local",
        })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct VolumeFile {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// The volumes of one namespace.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    dir: PathBuf,
}

/// The exclusive lock of a store, held until dropped.
#[derive(Debug)]
pub struct StoreLock {
    _lock: Flock<File>,
}

/// The daemon's root directory (see the module doc).
pub async fn daemon_root(client: &Client) -> Result<PathBuf> {
    let plugins = client
        .introspection()
        .plugins(client.req(PluginsRequest {
            filters: vec!["type==io.containerd.content.v1".to_owned()],
        }))
        .await
        .rpc(client, "list", Object::kind("plugins"))?
        .into_inner()
        .plugins;
    let root = plugins
        .iter()
        .filter(|p| p.r#type == "io.containerd.content.v1" && p.id == "content")
        .find_map(|p| p.exports.get("root"))
        .and_then(|r| Path::new(r).parent().map(Path::to_path_buf));
    Ok(root.unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)))
}

impl VolumeStore {
    /// The store of the client's namespace on the daemon it talks to (created when missing).
    pub async fn open(client: &Client) -> Result<Self> {
        let root = daemon_root(client).await?;
        Self::at(&root, &client.namespace)
    }

    /// The store of namespace `ns` under the daemon root `root`.
    pub fn at(root: &Path, ns: &str) -> Result<Self> {
        if ns.is_empty() || ns.contains('/') || ns == "." || ns == ".." {
            bail!("invalid namespace {ns:?} for volumes");
        }
        let dir = root.join("berth").join("volumes").join(ns);
        fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the volume store {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// Takes the store's exclusive lock (blocking).
    pub fn lock(&self) -> Result<StoreLock> {
        let file = File::open(&self.dir)
            .with_context(|| format!("cannot open the volume store {}", self.dir.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| {
            anyhow::anyhow!("cannot lock the volume store {}: {e}", self.dir.display())
        })?;
        Ok(StoreLock { _lock: lock })
    }

    /// The volume whose directory holds `path` (a mount source), if any.
    pub fn volume_of_path(&self, path: &str) -> Option<String> {
        let rest = Path::new(path).strip_prefix(&self.dir).ok()?;
        match rest.components().next() {
            Some(Component::Normal(name)) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        }
    }

    /// Volume `name`; `Ok(None)` when there is none. The caller holds the lock.
    pub fn get(&self, name: &str) -> Result<Option<Volume>> {
        validate_name(name)?;
        let dir = self.dir.join(name);
        let data = dir.join(DATA_DIR);
        let meta = match fs::metadata(&dir) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", dir.display())),
        };
        if !data.is_dir() {
            return Ok(None);
        }
        let file: VolumeFile = match fs::read(dir.join(VOLUME_JSON)) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => VolumeFile::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read volume {name:?}")),
        };
        Ok(Some(Volume {
            name: name.to_owned(),
            mountpoint: data,
            labels: file.labels.unwrap_or_default(),
            created_secs: meta.mtime(),
        }))
    }

    /// Creates volume `name` with `labels` unless it exists; returns it and whether it is new.
    /// The caller holds the lock. A half-made volume is removed again.
    pub fn create(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<(Volume, bool)> {
        validate_name(name)?;
        if let Some(v) = self.get(name)? {
            return Ok((v, false));
        }
        let dir = self.dir.join(name);
        let made = (|| -> Result<()> {
            fs::create_dir(&dir)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
            let data = dir.join(DATA_DIR);
            fs::create_dir(&data)?;
            fs::set_permissions(&data, fs::Permissions::from_mode(0o755))?;
            let file = VolumeFile {
                labels: (!labels.is_empty()).then(|| labels.clone()),
            };
            let tmp = dir.join(format!(".{VOLUME_JSON}.tmp"));
            fs::write(&tmp, serde_json::to_vec_pretty(&file)?)?;
            fs::rename(&tmp, dir.join(VOLUME_JSON))?;
            Ok(())
        })();
        if let Err(err) = made {
            let _ = fs::remove_dir_all(&dir);
            return Err(err.context(format!("cannot create volume {name:?}")));
        }
        let volume = self
            .get(name)?
            .with_context(|| format!("volume {name:?} vanished while being created"))?;
        Ok((volume, true))
    }

    /// Every volume, by name (finishing removals a crash cut short). The caller holds the lock.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list {}", self.dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".removing-") {
                // A removal cut short (see `remove`): finish it.
                let _ = fs::remove_dir_all(entry.path());
                continue;
            }
            if validate_name(&name).is_err() {
                continue;
            }
            if let Some(v) = self.get(&name)? {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes volume `name` and its data. The caller holds the lock and checked it is unused.
    pub fn remove(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let dir = self.dir.join(name);
        // Rename first so that a crash mid-way leaves no half volume under its name.
        let doomed = self.dir.join(format!(".removing-{name}"));
        fs::rename(&dir, &doomed).with_context(|| format!("cannot remove volume {name:?}"))?;
        fs::remove_dir_all(&doomed).with_context(|| format!("cannot remove volume {name:?}"))
    }
}

/// Every container of the namespace (Containers.List, one call).
pub async fn list_containers(client: &Client) -> Result<Vec<Container>> {
    Ok(client
        .containers()
        .list(client.req(ListContainersRequest { filters: vec![] }))
        .await
        .rpc(client, "list", Object::kind("containers"))?
        .into_inner()
        .containers)
}

/// The volumes each container uses: volume name → container ids.
pub fn usage(store: &VolumeStore, containers: &[Container]) -> BTreeMap<String, Vec<String>> {
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in containers {
        let mut names: Vec<String> = recorded_mounts(&c.labels)
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.kind == "volume" && !m.name.is_empty())
            .map(|m| m.name)
            .collect();
        if let Ok(spec) = spec::from_any(c.spec.as_ref()) {
            if let Some(mounts) = spec["mounts"].as_array() {
                for m in mounts {
                    if let Some(name) = m["source"].as_str().and_then(|s| store.volume_of_path(s)) {
                        names.push(name);
                    }
                }
            }
        }
        names.extend(anonymous_volumes(&c.labels));
        names.sort();
        names.dedup();
        for name in names {
            used.entry(name).or_default().push(c.id.clone());
        }
    }
    used
}

/// `path` resolved inside `root` the way a container would see it: `..` stops at the root and
/// symlinks are followed relative to the root (as securejoin does). `None` when a component is
/// missing.
pub fn resolve_in_root(root: &Path, path: &str) -> Option<PathBuf> {
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .rev()
        .map(str::to_owned)
        .collect();
    let mut parts: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            parts.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&parts);
        candidate.push(&part);
        let meta = fs::symlink_metadata(&candidate).ok()?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > 40 {
                return None;
            }
            let target = fs::read_link(&candidate).ok()?;
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                parts.clear();
            }
            pending.extend(
                target
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .rev()
                    .map(str::to_owned),
            );
            continue;
        }
        parts.push(part);
    }
    let mut out = root.to_path_buf();
    out.extend(&parts);
    Some(out)
}

/// Docker's copy-up: copies the tree under `src` into the (empty) volume directory `dst`,
/// keeping owners, modes, timestamps, symlinks and device nodes, then gives `dst` the owner and
/// mode of `src`.
pub fn copy_up(src: &Path, dst: &Path) -> Result<()> {
    copy_dir(src, dst).with_context(|| {
        format!(
            "cannot copy the image's {} into the volume {}",
            src.display(),
            dst.display()
        )
    })
}

fn copy_dir(src: &Path, dst: &Path) -> io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            fs::create_dir(&to)?;
            copy_dir(&from, &to)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if kind.is_file() {
            fs::copy(&from, &to)?;
        } else {
            use nix::sys::stat::{mknod, Mode, SFlag};
            let flags = SFlag::from_bits_truncate(meta.mode()) & SFlag::S_IFMT;
            mknod(
                &to,
                flags,
                Mode::from_bits_truncate(meta.mode() & 0o7777),
                meta.rdev(),
            )
            .map_err(io::Error::from)?;
        }
        copy_attrs(&to, &meta)?;
    }
    let meta = fs::symlink_metadata(src)?;
    copy_attrs(dst, &meta)
}

/// Owner, then mode (chown clears set-id bits), then times of `meta` onto `path`.
fn copy_attrs(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Whether directory `path` has no entries.
pub fn is_empty_dir(path: &Path) -> Result<bool> {
    Ok(fs::read_dir(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .next()
        .is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker() {
        for good in ["data", "a1", "my_vol.2-x", "0abc"] {
            validate_name(good).unwrap();
        }
        for bad in ["a/b", "..", "../x", ".x", "a", "", "x y", "-x", "a\0b"] {
            let err = validate_name(bad).unwrap_err().to_string();
            assert!(err.contains("invalid volume name"), "{bad}: {err}");
        }
        let name = random_name().unwrap();
        assert_eq!(name.len(), 64);
        validate_name(&name).unwrap();
    }

    #[test]
    fn store_creates_lists_and_removes() {
        let root = tempfile::tempdir().unwrap();
        let store = VolumeStore::at(root.path(), "ns").unwrap();
        let _lock = store.lock().unwrap();
        let labels = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
        let (v, new) = store.create("data", &labels).unwrap();
        assert!(new);
        assert_eq!(
            v.mountpoint,
            root.path().join("berth/volumes/ns/data/_data")
        );
        assert_eq!(v.labels, labels);
        let (again, new) = store.create("data", &BTreeMap::new()).unwrap();
        assert!(!new);
        assert_eq!(again.labels, labels);
        let json: Value = serde_json::from_slice(
            &fs::read(root.path().join("berth/volumes/ns/data/volume.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["labels"]["k"], "v");
        assert_eq!(
            store.volume_of_path(&v.mountpoint.join("x").display().to_string()),
            Some("data".to_owned())
        );
        assert_eq!(store.list().unwrap().len(), 1);
        store.remove("data").unwrap();
        assert!(store.list().unwrap().is_empty());
        fs::create_dir_all(root.path().join("berth/volumes/ns/.removing-old/_data")).unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(!root.path().join("berth/volumes/ns/.removing-old").exists());
        assert!(store.create("../x", &BTreeMap::new()).is_err());
        assert!(!root.path().join("berth/volumes/x").exists());
    }

    #[test]
    fn resolution_stays_in_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("/real", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", r.join("real/up")).unwrap();
        assert_eq!(resolve_in_root(r, "/abs/sub"), Some(r.join("real/sub")));
        assert_eq!(resolve_in_root(r, "/real/up/real"), Some(r.join("real")));
        assert_eq!(resolve_in_root(r, "/missing"), None);
    }

    #[test]
    fn copy_up_keeps_modes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("d/f"), b"x").unwrap();
        fs::set_permissions(src.join("d/f"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("d/f", src.join("l")).unwrap();
        fs::create_dir(&dst).unwrap();
        copy_up(&src, &dst).unwrap();
        assert_eq!(fs::read(dst.join("d/f")).unwrap(), b"x");
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dst.join("d/f")), 0o600);
        assert_eq!(mode(&dst), 0o750);
        assert_eq!(fs::read_link(dst.join("l")).unwrap(), Path::new("d/f"));
    }
}
