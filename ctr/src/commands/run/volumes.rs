//! Volumes and bind mounts of `berth run` / `containers create`, as Docker's CLI takes them:
//! `-v NAME:/path[:MODE]`, `-v /host/dir:/path[:MODE]`, `-v /path` (an anonymous volume),
//! `--mount type=bind|volume,src=...,dst=...[,ro]` (ctr's own `--mount
//! type=...,src=...,dst=...,options=a:b` keeps its meaning and passes through unchanged),
//! `--volumes-from CONTAINER[:ro|:rw]`, and an anonymous volume for each path of the image
//! config's `Volumes` that nothing else mounts.
//!
//! Everything is parsed and checked before anything is made, so a bad name or path leaves
//! nothing behind. Then, under the volume store's lock held until the container exists, the
//! volumes are created, a volume that is empty gets the image's content at its path (Docker's
//! copy-up, owners and modes kept; `nocopy` / `volume-nocopy` turn it off), and the spec gets
//! one `rbind` mount per entry; the container's labels record them (see
//! [`crate::client::volumes`]). When the container is not created, the volumes and host
//! directories made for it are removed again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use berth_proto::containerd::services::snapshots::v1::MountsRequest;
use serde_json::Value;

use crate::client::volumes::{
    self as vol, MountPoint, StoreLock, VolumeStore, ANONYMOUS_LABEL, ANONYMOUS_VOLUME_LABEL,
    MOUNTS_LABEL,
};
use crate::client::{mount, spec, tasks as task_client, Client};
use crate::error::{Object, RpcResultExt};

/// Docker's volume flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct VolumeFlags {
    /// Mount a volume: NAME:/path[:ro], /host/dir:/path[:ro], or /path (an anonymous volume).
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:MODE]")]
    pub volumes: Vec<String>,
    /// Mount the volumes and bind mounts of another container: CONTAINER[:ro|:rw].
    #[arg(long = "volumes-from", value_name = "CONTAINER[:MODE]")]
    pub volumes_from: Vec<String>,
}

impl VolumeFlags {
    /// Whether any flag is given.
    pub fn any(&self) -> bool {
        !self.volumes.is_empty() || !self.volumes_from.is_empty()
    }
}

/// Where a mount comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// A host path; `create`: make it when missing (`-v`, not `--mount`).
    Bind { path: String, create: bool },
    /// A named volume; `existing`: it must already exist (from `--volumes-from`).
    Named { name: String, existing: bool },
    /// A new anonymous volume.
    Anonymous,
    /// ctr's `--mount`, as given.
    Raw(Value),
}

/// One mount to make.
#[derive(Debug, Clone, PartialEq)]
struct Wanted {
    source: Source,
    destination: String,
    rw: bool,
    mode: String,
    propagation: String,
    copy: bool,
}

/// What the container will mount, checked but not made yet.
#[derive(Debug, Default)]
pub struct Plan {
    wanted: Vec<Wanted>,
}

/// Where copy-up reads the image's content.
#[derive(Debug, Clone)]
pub enum RootSource {
    /// The container's snapshot.
    Snapshot { snapshotter: String, key: String },
    /// A host directory (`--rootfs`).
    Dir(PathBuf),
}

/// The volumes and directories made for a container, and the store lock, held until
/// [`Applied::done`] or undone by [`Applied::rollback`].
#[derive(Debug, Default)]
pub struct Applied {
    store: Option<VolumeStore>,
    _lock: Option<StoreLock>,
    created_volumes: Vec<String>,
    created_dirs: Vec<PathBuf>,
}

impl Applied {
    /// Keeps what was made; releases the lock.
    pub fn done(self) {}

    /// Removes the volumes and host directories made (the container was not created).
    pub fn rollback(self) {
        if let Some(store) = &self.store {
            for name in &self.created_volumes {
                if let Err(err) = store.remove(name) {
                    eprintln!("berth: {}", crate::error::render(&err));
                }
            }
        }
        for dir in self.created_dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A mount destination made canonical: absolute, no `.`, `..` or empty components, not `/`.
fn clean_destination(dst: &str, what: &str) -> Result<String> {
    if !dst.starts_with('/') {
        bail!("invalid {what} {dst:?}: the mount destination must be an absolute path");
    }
    let mut parts = Vec::new();
    for part in dst.split('/') {
        match part {
            "" | "." => {}
            ".." => bail!("invalid {what} {dst:?}: \"..\" is not allowed in a mount destination"),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        bail!("invalid {what} {dst:?}: the mount destination cannot be \"/\"");
    }
    Ok(format!("/{}", parts.join("/")))
}

/// A host path for a bind mount: absolute, made canonical lexically (Go's `filepath.Clean`).
fn clean_host_path(src: &str, what: &str) -> Result<String> {
    if !src.starts_with('/') {
        bail!("invalid {what} {src:?}: a host path must be absolute");
    }
    Ok(format!("/{}", berth_transfer::types::clean_path(src)))
}

const PROPAGATIONS: [&str; 6] = [
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// `-v SRC:DST[:MODE]` or `-v DST`.
fn parse_volume_flag(text: &str) -> Result<Wanted> {
    let what = "volume";
    let parts: Vec<&str> = text.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [dst] => (None, *dst, ""),
        [src, dst] => (Some(*src), *dst, ""),
        [src, dst, mode] => (Some(*src), *dst, *mode),
        _ => bail!("invalid volume {text:?}: want SRC:DST[:MODE] or DST"),
    };
    let destination = clean_destination(dst, what)?;
    let source = match src {
        None => Source::Anonymous,
        Some("") => bail!("invalid volume {text:?}: empty source"),
        Some(s) if s.starts_with('/') => Source::Bind {
            path: clean_host_path(s, what)?,
            create: true,
        },
        Some(s) => {
            vol::validate_name(s)?;
            Source::Named {
                name: s.to_owned(),
                existing: false,
            }
        }
    };
    let mut w = Wanted {
        source,
        destination,
        rw: true,
        mode: mode.to_owned(),
        propagation: String::new(),
        copy: true,
    };
    let bind = matches!(w.source, Source::Bind { .. });
    for opt in mode.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => w.rw = false,
            "rw" => w.rw = true,
            "z" | "Z" => {}
            "nocopy" if !bind => w.copy = false,
            p if bind && PROPAGATIONS.contains(&p) => w.propagation = p.to_owned(),
            other => bail!("invalid mode {other:?} in volume {text:?}"),
        }
    }
    Ok(w)
}

/// Whether a `--mount` value is ctr's form (passed through unchanged).
fn is_ctr_mount(text: &str) -> bool {
    let mut kind = "";
    for field in text.split(',') {
        let Some((key, value)) = field.split_once('=') else {
            return false;
        };
        match key {
            "type" => kind = value,
            "source" | "src" | "destination" | "dst" | "options" => {}
            _ => return false,
        }
    }
    kind != "volume"
}

fn parse_bool(value: Option<&str>, key: &str, text: &str) -> Result<bool> {
    match value {
        None | Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(v) => bail!("invalid value {v:?} of {key} in mount {text:?}"),
    }
}

/// Docker's `--mount type=bind|volume,source=...,target=...[,readonly][,...]`.
fn parse_docker_mount(text: &str) -> Result<Wanted> {
    let mut kind = None;
    let mut src = None;
    let mut dst = None;
    let mut rw = true;
    let mut propagation = String::new();
    let mut copy = true;
    for field in text.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        match key {
            "type" => kind = value,
            "source" | "src" => src = value,
            "target" | "destination" | "dst" => dst = value,
            "readonly" | "ro" => rw = !parse_bool(value, key, text)?,
            "bind-propagation" => {
                let p = value.unwrap_or_default();
                if !PROPAGATIONS.contains(&p) {
                    bail!("invalid bind-propagation {p:?} in mount {text:?}");
                }
                propagation = p.to_owned();
            }
            "volume-nocopy" => copy = !parse_bool(value, key, text)?,
            "consistency" => {}
            other => bail!("mount option {other:?} not supported in mount {text:?}"),
        }
    }
    let what = "mount";
    let destination = clean_destination(
        dst.with_context(|| format!("invalid mount {text:?}: target is required"))?,
        what,
    )?;
    let source = match (kind, src) {
        (Some("bind"), Some(s)) if !s.is_empty() => {
            let path = clean_host_path(s, what)?;
            if !Path::new(&path).exists() {
                bail!("invalid mount {text:?}: bind source path does not exist: {path}");
            }
            Source::Bind {
                path,
                create: false,
            }
        }
        (Some("bind"), _) => bail!("invalid mount {text:?}: a bind mount needs a source"),
        (Some("volume"), None | Some("")) => Source::Anonymous,
        (Some("volume"), Some(name)) => {
            vol::validate_name(name)?;
            Source::Named {
                name: name.to_owned(),
                existing: false,
            }
        }
        (Some(other), _) => bail!("invalid mount {text:?}: type {other:?} is not bind or volume"),
        (None, _) => bail!("invalid mount {text:?}: type is required"),
    };
    if matches!(source, Source::Bind { .. }) && !copy {
        bail!("invalid mount {text:?}: volume-nocopy applies to volumes only");
    }
    Ok(Wanted {
        source,
        destination,
        rw,
        mode: if rw { String::new() } else { "ro".to_owned() },
        propagation,
        copy,
    })
}

/// ctr's `--mount`, kept as it was given.
fn parse_ctr_mount(text: &str) -> Result<Wanted> {
    let raw = spec::parse_mount_flag(text)?;
    let destination = raw["destination"].as_str().unwrap_or_default().to_owned();
    let rw = !spec::strings(&raw["options"]).iter().any(|o| o == "ro");
    Ok(Wanted {
        source: Source::Raw(raw),
        destination,
        rw,
        mode: String::new(),
        propagation: String::new(),
        copy: false,
    })
}

impl Plan {
    /// Parses and checks `-v`, `--mount` and `--volumes-from` (which reads the other
    /// containers); nothing is made.
    pub async fn new(client: &Client, flags: &VolumeFlags, mount_flags: &[String]) -> Result<Self> {
        let mut user = Vec::new();
        for text in &flags.volumes {
            user.push(parse_volume_flag(text)?);
        }
        for text in mount_flags {
            user.push(if is_ctr_mount(text) {
                parse_ctr_mount(text)?
            } else {
                parse_docker_mount(text)?
            });
        }
        for (i, w) in user.iter().enumerate() {
            let raw = matches!(w.source, Source::Raw(_));
            if !raw && user[..i].iter().any(|o| o.destination == w.destination) {
                bail!("duplicate mount point: {}", w.destination);
            }
        }
        let mut wanted = Vec::new();
        for text in &flags.volumes_from {
            for w in volumes_from(client, text).await? {
                let taken = user
                    .iter()
                    .chain(&wanted)
                    .any(|o: &Wanted| o.destination == w.destination);
                if !taken {
                    wanted.push(w);
                }
            }
        }
        wanted.extend(user);
        Ok(Self { wanted })
    }

    /// Adds an anonymous volume for each path of the image config's `Volumes` that nothing
    /// mounts yet; a path with `..` or not absolute is an error.
    pub fn add_image_volumes(&mut self, config: &Value) -> Result<()> {
        let Some(paths) = config["config"]["Volumes"].as_object() else {
            return Ok(());
        };
        let mut paths: Vec<&String> = paths.keys().collect();
        paths.sort();
        for path in paths {
            let destination = clean_destination(path, "image volume")?;
            if self.wanted.iter().any(|w| w.destination == destination) {
                continue;
            }
            self.wanted.push(Wanted {
                source: Source::Anonymous,
                destination,
                rw: true,
                mode: String::new(),
                propagation: String::new(),
                copy: true,
            });
        }
        Ok(())
    }

    /// Makes the volumes (and missing `-v` host directories), copies image content into empty
    /// volumes, and adds the mounts to `spec` and their record to `labels`. On error, whatever
    /// was made is removed again.
    pub async fn apply(
        self,
        client: &Client,
        spec: &mut Value,
        labels: &mut HashMap<String, String>,
        root: Option<RootSource>,
    ) -> Result<Applied> {
        let mut applied = Applied::default();
        if self.wanted.is_empty() {
            return Ok(applied);
        }
        let made = make(client, self, spec, labels, root, &mut applied).await;
        match made {
            Ok(()) => Ok(applied),
            Err(err) => {
                applied.rollback();
                Err(err)
            }
        }
    }
}

async fn make(
    client: &Client,
    plan: Plan,
    spec: &mut Value,
    labels: &mut HashMap<String, String>,
    root: Option<RootSource>,
    applied: &mut Applied,
) -> Result<()> {
    let needs_store = plan
        .wanted
        .iter()
        .any(|w| matches!(w.source, Source::Named { .. } | Source::Anonymous));
    if needs_store {
        let store = VolumeStore::open(client).await?;
        let locking = store.clone();
        let lock = tokio::task::spawn_blocking(move || locking.lock()).await??;
        applied.store = Some(store);
        applied._lock = Some(lock);
    }
    let mut points = Vec::new();
    let mut anonymous = Vec::new();
    let mut copies: Vec<(String, PathBuf)> = Vec::new();
    let mut spec_mounts = Vec::new();
    for w in plan.wanted {
        let (kind, name, source) = match &w.source {
            Source::Raw(raw) => {
                if raw["type"] == "bind" {
                    points.push(MountPoint {
                        kind: "bind".to_owned(),
                        name: String::new(),
                        source: raw["source"].as_str().unwrap_or_default().to_owned(),
                        destination: w.destination.clone(),
                        driver: String::new(),
                        mode: w.mode.clone(),
                        rw: w.rw,
                        propagation: String::new(),
                    });
                }
                spec_mounts.push((w.destination.clone(), raw.clone()));
                continue;
            }
            Source::Bind { path, create } => {
                if *create && !Path::new(path).exists() {
                    create_host_dir(Path::new(path), &mut applied.created_dirs)?;
                }
                ("bind", String::new(), path.clone())
            }
            Source::Named { name, existing } => {
                let store = applied.store.as_ref().context("volume store not open")?;
                let volume = if *existing {
                    store
                        .get(name)?
                        .with_context(|| format!("volume {name:?} not found"))?
                } else {
                    let (volume, new) = store.create(name, &BTreeMap::new())?;
                    if new {
                        applied.created_volumes.push(name.clone());
                    }
                    volume
                };
                if w.copy && vol::is_empty_dir(&volume.mountpoint)? {
                    copies.push((w.destination.clone(), volume.mountpoint.clone()));
                }
                (
                    "volume",
                    name.clone(),
                    volume.mountpoint.display().to_string(),
                )
            }
            Source::Anonymous => {
                let store = applied.store.as_ref().context("volume store not open")?;
                let name = vol::random_name()?;
                let anon = BTreeMap::from([(ANONYMOUS_VOLUME_LABEL.to_owned(), String::new())]);
                let (volume, _) = store.create(&name, &anon)?;
                applied.created_volumes.push(name.clone());
                anonymous.push(name.clone());
                if w.copy {
                    copies.push((w.destination.clone(), volume.mountpoint.clone()));
                }
                ("volume", name, volume.mountpoint.display().to_string())
            }
        };
        let propagation = if w.propagation.is_empty() {
            "rprivate".to_owned()
        } else {
            w.propagation.clone()
        };
        let access = if w.rw { "rw" } else { "ro" };
        spec_mounts.push((
            w.destination.clone(),
            spec::mount(
                &w.destination,
                "bind",
                &source,
                &["rbind", &propagation, access],
            ),
        ));
        points.push(MountPoint {
            kind: kind.to_owned(),
            driver: if kind == "volume" {
                vol::DRIVER.to_owned()
            } else {
                String::new()
            },
            name,
            source,
            destination: w.destination,
            mode: w.mode,
            rw: w.rw,
            propagation,
        });
    }
    if !copies.is_empty() {
        if let Some(root) = root {
            copy_up(client, root, copies).await?;
        }
    }
    // Parents before children, so `/data` does not hide `/data/sub` (a stable sort keeps the
    // order of equal depths).
    spec_mounts.sort_by_key(|(dst, _)| dst.matches('/').count());
    for (_, m) in spec_mounts {
        spec::add_mount(spec, m);
    }
    if !points.is_empty() {
        let record = serde_json::to_string(&points)?;
        // containerd refuses a label whose key and value pass 4096 bytes.
        if MOUNTS_LABEL.len() + record.len() > 4096 {
            bail!(
                "too many mounts ({}): their record does not fit in the container label {MOUNTS_LABEL} (4096 bytes)",
                points.len()
            );
        }
        labels.insert(MOUNTS_LABEL.to_owned(), record);
    }
    if !anonymous.is_empty() {
        labels.insert(
            ANONYMOUS_LABEL.to_owned(),
            serde_json::to_string(&anonymous)?,
        );
    }
    Ok(())
}

/// `mkdir -p` of a `-v` host directory, recording each directory it made.
fn create_host_dir(path: &Path, made: &mut Vec<PathBuf>) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(path);
    while let Some(p) = cur {
        if p.exists() {
            break;
        }
        missing.push(p.to_path_buf());
        cur = p.parent();
    }
    for dir in missing.into_iter().rev() {
        std::fs::create_dir(&dir)
            .with_context(|| format!("cannot create the host directory {}", dir.display()))?;
        made.push(dir);
    }
    Ok(())
}

/// Copies the image's content at each destination into its (empty) volume.
async fn copy_up(client: &Client, root: RootSource, copies: Vec<(String, PathBuf)>) -> Result<()> {
    match root {
        RootSource::Dir(dir) => {
            tokio::task::spawn_blocking(move || copy_each(&dir, &copies)).await?
        }
        RootSource::Snapshot { snapshotter, key } => {
            let mounts = client
                .snapshots()
                .mounts(client.req(MountsRequest {
                    snapshotter: snapshotter.clone(),
                    key: key.clone(),
                }))
                .await
                .rpc(
                    client,
                    "get mounts of",
                    Object::snapshot(&snapshotter, &key),
                )?
                .into_inner()
                .mounts;
            let mounts = super::container::readonly_mounts(mounts);
            tokio::task::spawn_blocking(move || -> Result<()> {
                let dir =
                    std::env::temp_dir().join(format!("berth-copyup-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir(&dir)
                    .with_context(|| format!("cannot create temp mount {}", dir.display()))?;
                let result =
                    mount::mount_all(&mounts, &dir).and_then(|()| copy_each(&dir, &copies));
                let unmounted = mount::unmount_all(&dir);
                let _ = std::fs::remove_dir(&dir);
                result?;
                unmounted
            })
            .await?
        }
    }
}

fn copy_each(root: &Path, copies: &[(String, PathBuf)]) -> Result<()> {
    for (destination, volume) in copies {
        if let Some(src) = vol::resolve_in_root(root, destination) {
            if src.is_dir() {
                vol::copy_up(&src, volume)?;
            }
        }
    }
    Ok(())
}

/// `--volumes-from CONTAINER[:ro|:rw]`: the other container's volumes and bind mounts.
async fn volumes_from(client: &Client, text: &str) -> Result<Vec<Wanted>> {
    let (id, mode) = match text.rsplit_once(':') {
        Some((id, m @ ("ro" | "rw"))) => (id, Some(m)),
        Some((_, m)) => bail!("invalid mode {m:?} in --volumes-from {text:?}: want ro or rw"),
        None => (text, None),
    };
    let c = task_client::container(client, id).await?;
    let points = vol::container_mounts(&c);
    let mut out = Vec::new();
    for p in points {
        let rw = match mode {
            Some("ro") => false,
            Some(_) => true,
            None => p.rw,
        };
        let source = if p.kind == "volume" {
            Source::Named {
                name: p.name.clone(),
                existing: true,
            }
        } else {
            Source::Bind {
                path: p.source.clone(),
                create: false,
            }
        };
        out.push(Wanted {
            source,
            destination: clean_destination(&p.destination, "mount of --volumes-from")?,
            rw,
            mode: mode.map_or(p.mode.clone(), str::to_owned),
            propagation: p.propagation.clone(),
            copy: false,
        });
    }
    Ok(out)
}

/// After `--rm`: removes the container's anonymous volumes that no other container uses.
pub async fn remove_anonymous(client: &Client, labels: &HashMap<String, String>) -> Result<()> {
    let names = vol::anonymous_volumes(labels);
    if names.is_empty() {
        return Ok(());
    }
    let store = VolumeStore::open(client).await?;
    let locking = store.clone();
    let _lock = tokio::task::spawn_blocking(move || locking.lock()).await??;
    let used = vol::usage(&store, &vol::list_containers(client).await?);
    for name in names {
        if let Some(users) = used.get(&name) {
            eprintln!(
                "berth: keeping anonymous volume {name:?}: in use by container(s) {}",
                users.join(", ")
            );
            continue;
        }
        if store.get(&name)?.is_some() {
            store.remove(&name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn volume_flags_parse_like_docker() {
        let w = parse_volume_flag("data:/srv/data:ro").unwrap();
        assert_eq!(
            w.source,
            Source::Named {
                name: "data".into(),
                existing: false
            }
        );
        assert_eq!(w.destination, "/srv/data");
        assert!(!w.rw);
        let w = parse_volume_flag("/tmp/x/:/x/").unwrap();
        assert_eq!(
            w.source,
            Source::Bind {
                path: "/tmp/x".into(),
                create: true
            }
        );
        assert_eq!(w.destination, "/x");
        assert!(w.rw);
        assert_eq!(
            parse_volume_flag("/data").unwrap().source,
            Source::Anonymous
        );
        for bad in [
            "a/b:/x",
            "..:/x",
            "../x:/x",
            "data:relative",
            "data:/a/../b",
            "data:/",
            "d:/x:bogus",
        ] {
            assert!(parse_volume_flag(bad).is_err(), "{bad}");
        }
        let err = parse_volume_flag("a/b:/x").unwrap_err().to_string();
        assert!(err.contains("invalid volume name \"a/b\""), "{err}");
    }

    #[test]
    fn mount_flags_keep_ctr_form() {
        assert!(is_ctr_mount("type=bind,src=/a,dst=/b,options=rbind:ro"));
        assert!(is_ctr_mount("type=tmpfs,dst=/t"));
        assert!(!is_ctr_mount("type=volume,src=v,dst=/b"));
        assert!(!is_ctr_mount("type=bind,src=/tmp,dst=/b,ro"));
        let w = parse_docker_mount("type=volume,src=v1,target=/v,readonly").unwrap();
        assert!(!w.rw);
        assert_eq!(w.destination, "/v");
        let w = parse_docker_mount("type=volume,dst=/v").unwrap();
        assert_eq!(w.source, Source::Anonymous);
        assert!(parse_docker_mount("type=volume,src=../x,dst=/v").is_err());
        assert!(parse_docker_mount("type=bind,src=/no/such/dir/x,dst=/v").is_err());
        let w = parse_ctr_mount("type=bind,src=/a,dst=/b,options=rbind:ro").unwrap();
        assert!(!w.rw);
        assert!(matches!(w.source, Source::Raw(_)));
    }

    #[test]
    fn image_volume_paths_are_checked() {
        let mut plan = Plan::default();
        plan.add_image_volumes(&json!({"config": {"Volumes": {"/data": {}, "/x/": {}}}}))
            .unwrap();
        let dsts: Vec<&str> = plan.wanted.iter().map(|w| w.destination.as_str()).collect();
        assert_eq!(dsts, ["/data", "/x"]);
        let mut plan = Plan::default();
        let err = plan
            .add_image_volumes(&json!({"config": {"Volumes": {"/a/../../etc": {}}}}))
            .unwrap_err();
        assert!(err.to_string().contains("\"..\""), "{err}");
        assert!(plan.wanted.is_empty());
    }
}
