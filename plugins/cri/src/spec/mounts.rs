//! A container's mounts: the request's, the pod's files (`/etc/hosts`, `/etc/resolv.conf`,
//! `/etc/hostname`, `/dev/shm`), the image's volumes, over the default mounts (containerd
//! `containerMounts`, `volumeMounts`, `opts.WithMounts`).

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_proto::runtime::v1::{Mount as CriMount, MountPropagation};

use super::draft::{Draft, MountEntry};
use super::rootfs::resolve_in_root;
use super::SandboxFiles;
use crate::error::{CriError, Result};

/// `/etc/hostname`.
pub const ETC_HOSTNAME: &str = "/etc/hostname";
/// `/etc/hosts`.
pub const ETC_HOSTS: &str = "/etc/hosts";
/// `/etc/resolv.conf`.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// `/dev/shm`.
pub const DEV_SHM: &str = "/dev/shm";

/// `path` without `.` components, doubled or trailing slashes (Go's `filepath.Clean` for
/// the absolute paths mounts use; `..` is kept, runc resolves it inside the rootfs).
pub fn clean(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let joined = parts.join("/");
    if path.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

/// Whether the request mounts something at `dst`.
pub fn in_cri_mounts(dst: &str, mounts: &[CriMount]) -> bool {
    let dst = clean(dst);
    mounts.iter().any(|m| clean(&m.container_path) == dst)
}

/// The pod's files as mounts, each unless the request mounts the same path: read-only with a
/// read-only rootfs; `/etc/hostname` only when the pod has the file; `/dev/shm` is the pod's
/// shm (the host's with host IPC), always writable.
pub fn pod_file_mounts(
    files: &SandboxFiles,
    requested: &[CriMount],
    readonly: bool,
) -> Vec<CriMount> {
    let mut out = Vec::new();
    let mut add = |dst: &str, src: &Path, ro: bool| {
        if !in_cri_mounts(dst, requested) {
            out.push(CriMount {
                container_path: dst.to_owned(),
                host_path: src.display().to_string(),
                readonly: ro,
                ..CriMount::default()
            });
        }
    };
    if !files.hostname.as_os_str().is_empty() && files.hostname.exists() {
        add(ETC_HOSTNAME, &files.hostname, readonly);
    }
    add(ETC_HOSTS, &files.hosts, readonly);
    add(RESOLV_CONF, &files.resolv_conf, readonly);
    let shm = files.shm.clone().unwrap_or_else(|| PathBuf::from(DEV_SHM));
    add(DEV_SHM, &shm, false);
    out
}

/// The image's volumes as mounts of new directories under `<container_dir>/volumes/`,
/// except where the request mounts something; the directories are created here.
pub fn image_volume_mounts(
    container_dir: &Path,
    volumes: &[String],
    requested: &[CriMount],
) -> Result<Vec<CriMount>> {
    let mut out = Vec::new();
    for (i, dst) in volumes.iter().enumerate() {
        if in_cri_mounts(dst, requested) {
            continue;
        }
        let src = container_dir.join("volumes").join(i.to_string());
        std::fs::create_dir_all(&src).map_err(|e| CriError::io("creating", &src, e))?;
        out.push(CriMount {
            container_path: dst.clone(),
            host_path: src.display().to_string(),
            ..CriMount::default()
        });
    }
    Ok(out)
}

/// Copies what the image has at each volume's path (resolved inside `rootfs`, never out of
/// it) into the volume's new directory, as containerd's `WithVolumes` does.
pub fn copy_image_volume_content(rootfs: &Path, volumes: &[CriMount]) -> Result<()> {
    for v in volumes {
        let src = resolve_in_root(rootfs, Path::new(&v.container_path))?;
        if src.is_dir() {
            copy_tree(&src, Path::new(&v.host_path))?;
        }
    }
    Ok(())
}

/// Copies the tree `src` into the existing directory `dst`: files, directories and symlinks
/// with their modes and owners.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(src).map_err(|e| CriError::io("stat", src, e))?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| CriError::io("chmod", dst, e))?;
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| CriError::io("chown", dst, e))?;
    for entry in std::fs::read_dir(src).map_err(|e| CriError::io("reading", src, e))? {
        let entry = entry.map_err(|e| CriError::io("reading", src, e))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry
            .file_type()
            .map_err(|e| CriError::io("stat", &from, e))?;
        if ft.is_dir() {
            std::fs::create_dir(&to).map_err(|e| CriError::io("creating", &to, e))?;
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            let target =
                std::fs::read_link(&from).map_err(|e| CriError::io("reading link", &from, e))?;
            std::os::unix::fs::symlink(&target, &to)
                .map_err(|e| CriError::io("creating", &to, e))?;
            let m = std::fs::symlink_metadata(&from).map_err(|e| CriError::io("stat", &from, e))?;
            std::os::unix::fs::lchown(&to, Some(m.uid()), Some(m.gid()))
                .map_err(|e| CriError::io("chown", &to, e))?;
        } else if ft.is_file() {
            std::fs::copy(&from, &to).map_err(|e| CriError::io("copying", &from, e))?;
            let m = std::fs::symlink_metadata(&from).map_err(|e| CriError::io("stat", &from, e))?;
            std::os::unix::fs::lchown(&to, Some(m.uid()), Some(m.gid()))
                .map_err(|e| CriError::io("chown", &to, e))?;
        }
    }
    Ok(())
}

/// What the host's mount table says about the mount holding a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// The mount point.
    pub mount_point: String,
    /// The optional fields (`shared:N`, `master:N`, ...).
    pub optional: Vec<String>,
}

/// The mount of `/proc/self/mountinfo` text holding `path` (the longest mount point that is
/// a prefix of it; the last such line wins, as it is mounted on top).
pub fn mount_info_in(text: &str, path: &Path) -> Option<MountInfo> {
    let mut best: Option<MountInfo> = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(mp) = fields.get(4) else { continue };
        let mp = unescape(mp);
        if !path.starts_with(&mp) {
            continue;
        }
        let optional: Vec<String> = fields
            .iter()
            .skip(6)
            .take_while(|f| **f != "-")
            .map(|f| (*f).to_owned())
            .collect();
        if best
            .as_ref()
            .is_none_or(|b| mp.len() >= b.mount_point.len())
        {
            best = Some(MountInfo {
                mount_point: mp,
                optional,
            });
        }
    }
    best
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let code = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok());
            if let Some(v) = code {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn host_mount_info(path: &Path) -> Result<MountInfo> {
    let file = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(file).map_err(|e| CriError::io("reading", file, e))?;
    mount_info_in(&text, path)
        .ok_or_else(|| CriError::Internal(format!("no mount holds {}", path.display())))
}

/// Checks that the mount holding `path` propagates as `propagation` needs: shared for
/// BIDIRECTIONAL, shared or slave for HOST_TO_CONTAINER.
pub fn check_propagation(
    info: &MountInfo,
    path: &Path,
    propagation: MountPropagation,
    field: &str,
) -> Result<()> {
    let shared = info.optional.iter().any(|o| o.starts_with("shared:"));
    let slave = info.optional.iter().any(|o| o.starts_with("master:"));
    let ok = match propagation {
        MountPropagation::PropagationPrivate => true,
        MountPropagation::PropagationBidirectional => shared,
        MountPropagation::PropagationHostToContainer => shared || slave,
    };
    if ok {
        return Ok(());
    }
    let needs = if propagation == MountPropagation::PropagationBidirectional {
        "a shared mount"
    } else {
        "a shared or slave mount"
    };
    Err(CriError::invalid(
        field,
        format!(
            "path {} is mounted on {} but it is not {needs}",
            path.display(),
            info.mount_point
        ),
    ))
}

/// Puts the request's mounts plus `extra` (the pod's files and image volumes, where the
/// request has nothing at the same path) into the draft, over the default mounts: a default
/// mount at a requested path goes (all of `/dev/*` when `/dev` is requested); a read-only
/// cgroup mount at `/sys/fs/cgroup` is added; host paths that do not exist are created as
/// directories; binds are `rbind` with the requested propagation and `ro` or `rw`.
pub fn apply(draft: &mut Draft, requested: &[CriMount], extra: Vec<CriMount>) -> Result<()> {
    let mut mounts: Vec<(String, CriMount)> = requested
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("config.mounts[{i}]"), m.clone()))
        .collect();
    for e in extra {
        if !in_cri_mounts(&e.container_path, requested) {
            mounts.push(("config.mounts".to_owned(), e));
        }
    }
    // Parents before children (containerd orders by the number of path separators).
    mounts.sort_by_key(|(_, m)| clean(&m.container_path).matches('/').count());

    draft.mounts.push(MountEntry::new(
        "/sys/fs/cgroup",
        "cgroup",
        "cgroup",
        &["nosuid", "noexec", "nodev", "relatime", "ro"],
    ));
    let destinations: BTreeSet<String> = mounts
        .iter()
        .map(|(_, m)| clean(&m.container_path))
        .collect();
    let mount_dev = destinations.contains("/dev");
    draft.mounts.retain(|m| {
        let dst = clean(&m.destination);
        let under_dev = mount_dev && dst.starts_with("/dev/");
        !(destinations.contains(&dst) || under_dev)
    });

    for (field, m) in mounts {
        if m.container_path.is_empty() || !m.container_path.starts_with('/') {
            return Err(CriError::invalid(
                format!("{field}.container_path"),
                format!("{:?} is not an absolute path", m.container_path),
            ));
        }
        if m.host_path.is_empty() {
            return Err(CriError::invalid(
                format!("{field}.host_path"),
                "empty host path",
            ));
        }
        let src = Path::new(&m.host_path);
        if std::fs::symlink_metadata(src).is_err() {
            std::fs::create_dir_all(src).map_err(|e| CriError::io("creating", src, e))?;
        }
        let src = std::fs::canonicalize(src).map_err(|e| CriError::io("resolving", src, e))?;
        let propagation = MountPropagation::try_from(m.propagation).map_err(|_| {
            CriError::invalid(
                format!("{field}.propagation"),
                format!("unknown propagation {}", m.propagation),
            )
        })?;
        let mut options = vec!["rbind".to_owned()];
        match propagation {
            MountPropagation::PropagationPrivate => options.push("rprivate".to_owned()),
            MountPropagation::PropagationBidirectional => {
                check_propagation(
                    &host_mount_info(&src)?,
                    &src,
                    propagation,
                    &format!("{field}.propagation"),
                )?;
                options.push("rshared".to_owned());
                draft.rootfs_propagation = Some("rshared".to_owned());
            }
            MountPropagation::PropagationHostToContainer => {
                check_propagation(
                    &host_mount_info(&src)?,
                    &src,
                    propagation,
                    &format!("{field}.propagation"),
                )?;
                options.push("rslave".to_owned());
                if !matches!(
                    draft.rootfs_propagation.as_deref(),
                    Some("rshared") | Some("rslave")
                ) {
                    draft.rootfs_propagation = Some("rslave".to_owned());
                }
            }
        }
        options.push(if m.readonly { "ro" } else { "rw" }.to_owned());
        // selinux_relabel: no SELinux on Berth's hosts; nothing to relabel.
        draft.mounts.push(MountEntry {
            destination: m.container_path.clone(),
            typ: "bind".to_owned(),
            source: src.display().to_string(),
            options,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(dst: &str, src: &str) -> CriMount {
        CriMount {
            container_path: dst.into(),
            host_path: src.into(),
            ..CriMount::default()
        }
    }

    #[test]
    fn paths_clean() {
        assert_eq!(clean("/etc//hosts/"), "/etc/hosts");
        assert_eq!(clean("/./dev/shm"), "/dev/shm");
        assert_eq!(clean("/"), "/");
        assert!(in_cri_mounts("/etc/hosts", &[m("/etc/hosts/", "/x")]));
    }

    #[test]
    fn pod_files_unless_requested() {
        let t = tempfile::tempdir().unwrap();
        let hostname = t.path().join("hostname");
        std::fs::write(&hostname, "pod\n").unwrap();
        let files = SandboxFiles {
            hostname: hostname.clone(),
            hosts: t.path().join("hosts"),
            resolv_conf: t.path().join("resolv.conf"),
            shm: Some(t.path().join("shm")),
        };
        let out = pod_file_mounts(&files, &[m("/etc/hosts", "/mine")], true);
        let dsts: Vec<&str> = out.iter().map(|m| m.container_path.as_str()).collect();
        assert_eq!(dsts, vec![ETC_HOSTNAME, RESOLV_CONF, DEV_SHM]);
        assert!(out[0].readonly && out[1].readonly && !out[2].readonly);
        assert_eq!(out[2].host_path, t.path().join("shm").display().to_string());

        let host_ipc = SandboxFiles {
            shm: None,
            hostname: t.path().join("missing"),
            ..files
        };
        let out = pod_file_mounts(&host_ipc, &[], false);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].host_path, DEV_SHM);
    }

    #[test]
    fn requested_mounts_replace_defaults_and_sort() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("missing/b");
        let mut d = super::super::defaults::default_draft("x").unwrap();
        let mut ro = m("/data/sub", a.to_str().unwrap());
        ro.readonly = true;
        std::fs::create_dir(&a).unwrap();
        apply(
            &mut d,
            &[ro, m("/dev", b.to_str().unwrap())],
            vec![m("/dev/shm", "/dev/shm")],
        )
        .unwrap();
        assert!(b.is_dir(), "a missing host path is created");
        let dsts: Vec<&str> = d.mounts.iter().map(|m| m.destination.as_str()).collect();
        assert_eq!(
            dsts,
            vec![
                "/proc",
                "/sys",
                "/sys/fs/cgroup",
                "/dev",
                "/data/sub",
                "/dev/shm"
            ]
        );
        let data = &d.mounts[4];
        assert_eq!(data.options, vec!["rbind", "rprivate", "ro"]);
        assert_eq!(data.typ, "bind");
        assert!(d.rootfs_propagation.is_none());
    }

    #[test]
    fn relative_container_paths_are_refused() {
        let mut d = Draft::default();
        let err = apply(&mut d, &[m("data", "/tmp")], vec![]).unwrap_err();
        assert!(
            err.to_string().contains("config.mounts[0].container_path"),
            "{err}"
        );
    }

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:25 / /mnt/shared rw shared:7 - tmpfs tmpfs rw
31 22 0:26 / /mnt/slave rw master:7 - tmpfs tmpfs rw
32 22 0:27 / /mnt/private rw - tmpfs tmpfs rw
33 22 0:28 / /mnt/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn propagation_needs_a_matching_host_mount() {
        let f = "config.mounts[0].propagation";
        let info = |p: &str| mount_info_in(MOUNTINFO, Path::new(p)).unwrap();
        assert_eq!(info("/mnt/private/x").mount_point, "/mnt/private");
        assert_eq!(info("/var/x").mount_point, "/");
        assert_eq!(info("/mnt/with space/y").mount_point, "/mnt/with space");
        let bi = MountPropagation::PropagationBidirectional;
        let h2c = MountPropagation::PropagationHostToContainer;
        let p = Path::new("/x");
        assert!(check_propagation(&info("/mnt/shared/a"), p, bi, f).is_ok());
        assert!(check_propagation(&info("/mnt/slave/a"), p, bi, f).is_err());
        assert!(check_propagation(&info("/mnt/slave/a"), p, h2c, f).is_ok());
        let err = check_propagation(&info("/mnt/private/a"), p, h2c, f).unwrap_err();
        assert!(err.to_string().contains(f), "{err}");
    }

    #[test]
    fn propagation_sets_rootfs_propagation() {
        // The root of this host's mount tree is usually shared (systemd); use whatever the
        // mount holding a temp dir is, and check only what the options say.
        let t = tempfile::tempdir().unwrap();
        let info = host_mount_info(t.path()).unwrap();
        let shared = info.optional.iter().any(|o| o.starts_with("shared:"));
        let mut d = Draft::default();
        let mut bi = m("/shared", t.path().to_str().unwrap());
        bi.propagation = MountPropagation::PropagationBidirectional as i32;
        let r = apply(&mut d, &[bi], vec![]);
        if shared {
            r.unwrap();
            assert_eq!(d.rootfs_propagation.as_deref(), Some("rshared"));
            assert!(d
                .mounts
                .last()
                .unwrap()
                .options
                .contains(&"rshared".to_owned()));
        } else {
            assert!(r.is_err());
        }
    }

    #[test]
    fn image_volumes_get_directories_and_content() {
        let t = tempfile::tempdir().unwrap();
        let rootfs = t.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("data/sub")).unwrap();
        std::fs::write(rootfs.join("data/sub/f"), "x").unwrap();
        std::os::unix::fs::symlink("/data", rootfs.join("link")).unwrap();
        let dir = t.path().join("ctr");
        let vols = image_volume_mounts(
            &dir,
            &[
                "/link".to_owned(),
                "/requested".to_owned(),
                "/empty".to_owned(),
            ],
            &[m("/requested", "/tmp")],
        )
        .unwrap();
        assert_eq!(vols.len(), 2);
        copy_image_volume_content(&rootfs, &vols).unwrap();
        let v0 = Path::new(&vols[0].host_path);
        assert!(v0.starts_with(dir.join("volumes")));
        assert_eq!(std::fs::read_to_string(v0.join("sub/f")).unwrap(), "x");
        assert!(Path::new(&vols[1].host_path).is_dir());
    }
}
