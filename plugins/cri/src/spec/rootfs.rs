//! Reading a container's image rootfs before the container exists: paths resolved inside the
//! rootfs without escaping it, and a read-only temporary mount of the rootfs snapshot
//! (containerd `mount.WithTempMount` with `tryReadonlyMounts`, `fs.RootPath`).

use std::path::{Path, PathBuf};

use berth_mount::Mount;
use nix::mount::MntFlags;

use crate::error::{CriError, Result};

/// `path` (absolute or not, as seen inside the container) resolved under `root`: `..` never
/// climbs above `root` and symlinks, absolute or relative, are followed as if `root` were
/// `/`. Missing components are kept as they are (the snapshot applier's
/// [`berth_snapshotters::apply::resolve_in_root`]).
pub fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf> {
    berth_snapshotters::apply::resolve_in_root(root, path).map_err(|e| {
        let inside = path.strip_prefix("/").unwrap_or(path);
        CriError::io("resolving", root.join(inside), e)
    })
}

/// The rootfs mounts made read-only: an overlay's upper directory becomes its top lower
/// layer (no work dir needed), every other mount gets `ro`.
pub fn readonly_mounts(mounts: &[Mount]) -> Vec<Mount> {
    mounts
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if m.mount_type == "overlay" {
                let upper = m
                    .options
                    .iter()
                    .find_map(|o| o.strip_prefix("upperdir="))
                    .map(str::to_owned);
                m.options.retain(|o| {
                    !o.starts_with("upperdir=") && !o.starts_with("workdir=") && o != "rw"
                });
                if let Some(upper) = upper {
                    for o in m.options.iter_mut() {
                        if let Some(lower) = o.strip_prefix("lowerdir=") {
                            *o = format!("lowerdir={upper}:{lower}");
                        }
                    }
                }
            } else {
                m.options.retain(|o| o != "rw");
            }
            if !m.options.iter().any(|o| o == "ro") {
                m.options.push("ro".to_owned());
            }
            m
        })
        .collect()
}

/// Runs `f` on the rootfs `mounts` describe: a plain bind of a directory is read in place,
/// anything else is mounted read-only on a temporary directory for the call.
pub fn with_rootfs<T>(mounts: &[Mount], f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if let [m] = mounts {
        if m.mount_type == "bind" && Path::new(&m.source).is_dir() {
            return f(Path::new(&m.source));
        }
    }
    if mounts.is_empty() {
        return Err(CriError::Internal(
            "the container has no rootfs mounts".to_owned(),
        ));
    }
    let dir = std::env::temp_dir().join(format!("berth-cri-rootfs-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&dir).map_err(|e| CriError::io("creating", &dir, e))?;
    let mounted = berth_mount::mount_all(&readonly_mounts(mounts), &dir)
        .map_err(|e| CriError::Internal(format!("mounting the rootfs read-only: {e}")));
    let out = match mounted {
        Ok(()) => {
            let out = f(&dir);
            if let Err(e) = berth_mount::unmount_all(&dir, MntFlags::MNT_DETACH) {
                tracing::warn!(path = %dir.display(), error = %e, "unmount temporary rootfs");
            }
            out
        }
        Err(e) => Err(e),
    };
    if let Err(e) = std::fs::remove_dir(&dir) {
        tracing::warn!(path = %dir.display(), error = %e, "remove temporary rootfs dir");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn paths_stay_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("real")).unwrap();
        symlink("/real", root.join("abs")).unwrap();
        symlink("../../../../real", root.join("etc/rel")).unwrap();
        symlink("/etc/loop2", root.join("etc/loop1")).unwrap();
        symlink("/etc/loop1", root.join("etc/loop2")).unwrap();
        let r = |p: &str| resolve_in_root(root, Path::new(p));
        assert_eq!(r("/etc/passwd").unwrap(), root.join("etc/passwd"));
        assert_eq!(r("../../etc/passwd").unwrap(), root.join("etc/passwd"));
        assert_eq!(r("/abs/x").unwrap(), root.join("real/x"));
        assert_eq!(r("/etc/rel/y").unwrap(), root.join("real/y"));
        assert_eq!(r("/a/../../b").unwrap(), root.join("b"));
        assert!(r("/etc/loop1").is_err());
    }

    #[test]
    fn overlay_becomes_read_only_lowers() {
        let m = Mount {
            mount_type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                "index=off".into(),
                "workdir=/s/2/work".into(),
                "upperdir=/s/2/fs".into(),
                "lowerdir=/s/1/fs".into(),
            ],
        };
        let ro = readonly_mounts(&[m]);
        assert_eq!(
            ro[0].options,
            vec!["index=off", "lowerdir=/s/2/fs:/s/1/fs", "ro"]
        );
        let b = Mount {
            mount_type: "bind".into(),
            source: "/x".into(),
            target: String::new(),
            options: vec!["rbind".into(), "rw".into()],
        };
        assert_eq!(readonly_mounts(&[b])[0].options, vec!["rbind", "ro"]);
    }

    #[test]
    fn an_overlay_rootfs_is_mounted_read_only_for_the_call() {
        if !berth_testutil::require_root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (lower, upper, work) = (t.path().join("l"), t.path().join("u"), t.path().join("w"));
        for d in [&lower, &upper, &work] {
            std::fs::create_dir_all(d.join("etc")).unwrap();
        }
        std::fs::write(lower.join("etc/passwd"), "lower\n").unwrap();
        std::fs::write(lower.join("etc/group"), "lower\n").unwrap();
        std::fs::write(upper.join("etc/passwd"), "upper\n").unwrap();
        let m = Mount {
            mount_type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                format!("workdir={}", work.display()),
                format!("upperdir={}", upper.display()),
                format!("lowerdir={}", lower.display()),
            ],
        };
        let (seen, root) = with_rootfs(&[m], |root| {
            let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
            let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
            let write = std::fs::write(root.join("etc/new"), "x");
            assert!(write.is_err(), "the temporary rootfs is writable");
            Ok(((passwd, group), root.to_path_buf()))
        })
        .unwrap();
        assert_eq!(seen, ("upper\n".to_owned(), "lower\n".to_owned()));
        assert!(!root.exists(), "the temporary mount point is removed");
        assert!(!upper.join("etc/new").exists());
    }

    #[test]
    fn a_bound_directory_is_read_in_place() {
        let t = tempfile::tempdir().unwrap();
        let m = Mount {
            mount_type: "bind".into(),
            source: t.path().display().to_string(),
            target: String::new(),
            options: vec!["rbind".into(), "rw".into()],
        };
        let seen = with_rootfs(&[m], |p| Ok(p.to_path_buf())).unwrap();
        assert_eq!(seen, t.path());
    }
}
