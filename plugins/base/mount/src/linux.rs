//! mount(2) and umount(2) for [`Mount`]s (containerd `core/mount/mount_linux.go`). Every
//! function here blocks; async callers run them through `spawn_blocking`.
//!
//! The kernel copies at most one page of mount data, and overlayfs silently works on whatever
//! prefix arrived: a long `lowerdir=` list fails with EINVAL or ENOENT, or mounts with layers
//! missing (issue 12). As containerd's `compactLowerdirOption` does, a long list is rewritten
//! relative to the lower directories' common parent and mount(2) runs from a short-lived thread
//! whose working directory is that parent; the thread first unshares its filesystem context
//! (`CLONE_FS`), so the process's working directory never changes. Data that still does not fit
//! is refused with [`MountError::OptionsTooLong`] rather than handed to the kernel cut short.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags, MsFlags};

use crate::error::MountError;
use crate::types::Mount;

/// The longest mount data the kernel takes whole: one page (4096 bytes on every Linux
/// architecture's smallest page) less the terminating NUL.
pub const MAX_DATA_LEN: usize = 4095;

/// From this data length on, overlay lowerdirs are compacted (containerd: `pagesize - 512`).
const COMPACT_FROM: usize = 4096 - 512;

/// How often and how far apart a busy unmount is retried (containerd: 50 times, 50 ms).
const BUSY_RETRIES: u32 = 50;
const BUSY_PAUSE: Duration = Duration::from_millis(50);

/// Mounts every mount in order on `target` (plus each mount's own relative `target`), as
/// containerd's `mount.All`. On failure the mounts already made are undone.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), MountError> {
    let mut done: Vec<PathBuf> = Vec::with_capacity(mounts.len());
    for m in mounts {
        let dest = if m.target.is_empty() {
            target.to_path_buf()
        } else {
            target.join(m.target.trim_start_matches('/'))
        };
        if let Err(err) = mount_one(m, &dest) {
            for path in done.iter().rev() {
                if let Err(e) = umount2(path.as_path(), MntFlags::MNT_DETACH) {
                    tracing::warn!(path = %path.display(), error = %e, "undo mount");
                }
            }
            return Err(err);
        }
        done.push(dest);
    }
    Ok(())
}

/// Unmounts everything stacked on `target` (containerd `UnmountAll`): repeats until the path
/// is no longer a mount point, retrying while it is busy. A missing path, or one that is not a
/// mount point, is fine. `flags` go to every umount2(2) (`MNT_DETACH` for a lazy unmount).
pub fn unmount_all(target: &Path, flags: MntFlags) -> Result<(), MountError> {
    loop {
        match unmount_once(target, flags) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(MountError::sys("unmount", target, e)),
        }
    }
}

/// One umount(2), retried while the mount is busy.
fn unmount_once(target: &Path, flags: MntFlags) -> Result<(), Errno> {
    for _ in 1..BUSY_RETRIES {
        match umount2(target, flags) {
            Err(Errno::EBUSY) => std::thread::sleep(BUSY_PAUSE),
            other => return other,
        }
    }
    umount2(target, flags)
}

/// Flags and data parsed from mount options (containerd `parseMountOptions`).
#[derive(Debug, PartialEq, Eq)]
struct ParsedOptions {
    flags: MsFlags,
    propagation: MsFlags,
    data: Vec<String>,
}

/// The flag an option sets, or clears when the first member is true.
fn flag_of(option: &str) -> Option<(bool, MsFlags)> {
    Some(match option {
        "async" => (true, MsFlags::MS_SYNCHRONOUS),
        "atime" => (true, MsFlags::MS_NOATIME),
        "bind" => (false, MsFlags::MS_BIND),
        "defaults" => (false, MsFlags::empty()),
        "dev" => (true, MsFlags::MS_NODEV),
        "diratime" => (true, MsFlags::MS_NODIRATIME),
        "dirsync" => (false, MsFlags::MS_DIRSYNC),
        "exec" => (true, MsFlags::MS_NOEXEC),
        "mand" => (false, MsFlags::MS_MANDLOCK),
        "noatime" => (false, MsFlags::MS_NOATIME),
        "nodev" => (false, MsFlags::MS_NODEV),
        "nodiratime" => (false, MsFlags::MS_NODIRATIME),
        "noexec" => (false, MsFlags::MS_NOEXEC),
        "nomand" => (true, MsFlags::MS_MANDLOCK),
        "norelatime" => (true, MsFlags::MS_RELATIME),
        "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
        "nosuid" => (false, MsFlags::MS_NOSUID),
        "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
        "relatime" => (false, MsFlags::MS_RELATIME),
        "remount" => (false, MsFlags::MS_REMOUNT),
        "ro" => (false, MsFlags::MS_RDONLY),
        "rw" => (true, MsFlags::MS_RDONLY),
        "strictatime" => (false, MsFlags::MS_STRICTATIME),
        "suid" => (true, MsFlags::MS_NOSUID),
        "sync" => (false, MsFlags::MS_SYNCHRONOUS),
        _ => return None,
    })
}

/// The propagation type an option asks for.
fn propagation_of(option: &str) -> Option<MsFlags> {
    Some(match option {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

fn parse_options(options: &[String]) -> Result<ParsedOptions, MountError> {
    let mut parsed = ParsedOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
    };
    for opt in options {
        if let Some((clear, flag)) = flag_of(opt) {
            if clear {
                parsed.flags.remove(flag);
            } else {
                parsed.flags.insert(flag);
            }
        } else if let Some(p) = propagation_of(opt) {
            parsed.propagation.insert(p);
        } else if opt == "loop" {
            // Loop devices are devmapper/erofs territory; no Berth snapshotter returns them.
            return Err(MountError::Unsupported {
                what: "option loop".into(),
            });
        } else {
            parsed.data.push(opt.clone());
        }
    }
    Ok(parsed)
}

/// Rewrites `lowerdir=` relative to the directory holding the lower directories' common
/// prefix (containerd `compactLowerdirOption`); returns that directory and the new options, or
/// `None` when nothing can be compacted.
fn compact_lowerdir(options: &[String]) -> Option<(PathBuf, Vec<String>)> {
    let idx = options.iter().position(|o| o.starts_with("lowerdir="))?;
    let dirs: Vec<&str> = options[idx]["lowerdir=".len()..].split(':').collect();
    if dirs.len() < 2 {
        return None;
    }
    let common = longest_common_prefix(&dirs);
    // Snapshot ids are numbers: cut back to the last `/` so that the base is a whole directory
    // (`<root>/snapshots/`), never `<root>/snapshots/1` (Go's `path.Dir` in containerd).
    let base = &common[..common.rfind('/')?];
    if base.is_empty() {
        return None;
    }
    let prefix = format!("{base}/");
    let relative: Vec<&str> = dirs
        .iter()
        .map(|d| d.strip_prefix(prefix.as_str()).filter(|r| !r.is_empty()))
        .collect::<Option<_>>()?;
    let mut out: Vec<String> = options.to_vec();
    out[idx] = format!("lowerdir={}", relative.join(":"));
    Some((PathBuf::from(base), out))
}

fn longest_common_prefix<'a>(strs: &[&'a str]) -> &'a str {
    let Some(first) = strs.first() else {
        return "";
    };
    let mut len = first.len();
    for s in &strs[1..] {
        len = first
            .bytes()
            .zip(s.bytes())
            .take(len)
            .take_while(|(a, b)| a == b)
            .count();
    }
    // Stay on a char boundary; paths here are ASCII in practice.
    while !first.is_char_boundary(len) {
        len -= 1;
    }
    &first[..len]
}

/// Mounts one mount at `target`, ignoring its own `target` field (containerd `Mount.Mount`).
pub fn mount_one(m: &Mount, target: &Path) -> Result<(), MountError> {
    let mut parsed = parse_options(&m.options)?;
    let mut chdir = None;
    if m.mount_type == "overlay" && parsed.data.join(",").len() >= COMPACT_FROM {
        if let Some((dir, compacted)) = compact_lowerdir(&parsed.data) {
            chdir = Some(dir);
            parsed.data = compacted;
        }
    }
    let data = parsed.data.join(",");
    if data.len() > MAX_DATA_LEN {
        return Err(MountError::OptionsTooLong {
            target: target.to_path_buf(),
            len: data.len(),
            limit: MAX_DATA_LEN,
        });
    }
    let mut flags = parsed.flags;
    if m.mount_type == "bind" {
        flags.insert(MsFlags::MS_BIND);
    }
    if !flags.contains(MsFlags::MS_REMOUNT) || !data.is_empty() {
        mount_at(chdir.as_deref(), m, target, flags, &data)?;
    }
    if !parsed.propagation.is_empty() {
        let pflags = parsed.propagation | MsFlags::MS_SILENT;
        nix::mount::mount(None::<&str>, target, None::<&str>, pflags, None::<&str>)
            .map_err(|e| MountError::sys("set mount propagation on", target, e))?;
    }
    // A new bind mount ignores MS_RDONLY; read-only takes a remount.
    if flags.contains(MsFlags::MS_BIND | MsFlags::MS_RDONLY) {
        nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            flags | MsFlags::MS_REMOUNT,
            None::<&str>,
        )
        .map_err(|e| MountError::sys("remount read-only", target, e))?;
    }
    Ok(())
}

fn mount_at(
    chdir: Option<&Path>,
    m: &Mount,
    target: &Path,
    flags: MsFlags,
    data: &str,
) -> Result<(), MountError> {
    let op = || format!("mount {} {} on", m.mount_type, m.source);
    let fstype = (!m.mount_type.is_empty()).then_some(m.mount_type.as_str());
    let data_arg = (!data.is_empty()).then_some(data);
    let call = || nix::mount::mount(Some(m.source.as_str()), target, fstype, flags, data_arg);
    let Some(dir) = chdir else {
        return call().map_err(|e| MountError::sys(op(), target, e));
    };
    // The relative lowerdirs resolve against the calling thread's working directory.
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<(), MountError> {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
                    .map_err(|e| MountError::sys("unshare CLONE_FS for mount on", target, e))?;
                nix::unistd::chdir(dir).map_err(|e| {
                    MountError::sys(format!("chdir {} for mount on", dir.display()), target, e)
                })?;
                call().map_err(|e| MountError::sys(op(), target, e))
            })
            .join()
            .unwrap_or_else(|_| Err(MountError::sys(op(), target, Errno::EINTR)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let p = parse_options(&opts(&["ro", "rbind", "index=off", "rprivate"])).unwrap();
        assert_eq!(
            p.flags,
            MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC
        );
        assert_eq!(p.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(p.data, ["index=off"]);
        let p = parse_options(&opts(&["ro", "rw", "nosuid", "suid"])).unwrap();
        assert_eq!(p.flags, MsFlags::empty());
        assert!(parse_options(&opts(&["loop"])).is_err());
    }

    #[test]
    fn lowerdirs_compact_to_their_common_directory() {
        let options = opts(&[
            "index=off",
            "workdir=/r/snapshots/13/work",
            "upperdir=/r/snapshots/13/fs",
            "lowerdir=/r/snapshots/12/fs:/r/snapshots/11/fs:/r/snapshots/1/fs",
        ]);
        let (dir, out) = compact_lowerdir(&options).unwrap();
        assert_eq!(dir, Path::new("/r/snapshots"));
        assert_eq!(
            out,
            opts(&[
                "index=off",
                "workdir=/r/snapshots/13/work",
                "upperdir=/r/snapshots/13/fs",
                "lowerdir=12/fs:11/fs:1/fs",
            ])
        );
        // A common prefix ending in `/` is a directory already.
        let (dir, out) = compact_lowerdir(&opts(&["lowerdir=/r/s/2/fs:/r/s/3/fs"])).unwrap();
        assert_eq!(dir, Path::new("/r/s"));
        assert_eq!(out, opts(&["lowerdir=2/fs:3/fs"]));
        assert!(compact_lowerdir(&opts(&["lowerdir=/a/b"])).is_none());
        assert!(compact_lowerdir(&opts(&["lowerdir=/a:/b"])).is_none());
        assert!(compact_lowerdir(&opts(&["upperdir=/a"])).is_none());
    }

    #[test]
    fn common_prefix() {
        assert_eq!(longest_common_prefix(&["/a/b1", "/a/b2", "/a/c"]), "/a/");
        assert_eq!(longest_common_prefix(&["/x"]), "/x");
        assert_eq!(longest_common_prefix(&[]), "");
    }

    #[test]
    fn data_over_a_page_is_refused_before_the_kernel_sees_it() {
        // 500 lower directories with nothing in common but `/`: no compaction helps.
        let lower: Vec<String> = (0..500).map(|i| format!("/l{i:04}/fs")).collect();
        let m = Mount {
            mount_type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![format!("lowerdir={}", lower.join(":"))],
        };
        let err = mount_one(&m, Path::new("/nonexistent-berth-target")).unwrap_err();
        assert!(
            matches!(err, MountError::OptionsTooLong { len, .. } if len > MAX_DATA_LEN),
            "{err}"
        );
        assert!(err.to_string().contains("too long"), "{err}");
    }
}
