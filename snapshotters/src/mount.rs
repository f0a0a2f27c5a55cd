//! Mounting the mounts a snapshotter returns (containerd `mount/mount_linux.go`), and a guard
//! that mounts into a temporary directory and unmounts on drop.
//!
//! Overlay mounts whose options come near the kernel's one-page limit on mount data (a long
//! chain of lower directories) are mounted the way containerd does it: the lower directories
//! are rewritten relative to their common parent and the mount(2) call is made from a thread
//! whose working directory is that parent. The thread first unshares its filesystem context
//! (`CLONE_FS`), so the process's working directory never changes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags, MsFlags};

use crate::error::SnapshotError;
use crate::snapshotter::Mount;

/// The mount data limit; containerd compacts from `pagesize - 512` on.
const PAGE_SIZE: usize = 4096;

/// Mounts every mount in order onto `target` (plus each mount's own relative `target`).
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), SnapshotError> {
    for m in mounts {
        let dest = if m.target.is_empty() {
            target.to_path_buf()
        } else {
            target.join(m.target.trim_start_matches('/'))
        };
        mount_one(m, &dest)?;
    }
    Ok(())
}

/// Unmounts everything stacked on `target` (containerd `UnmountAll`): repeats until the path
/// is no longer a mount point. A missing path or a path that is not a mount point is fine.
pub fn unmount(target: &Path) -> Result<(), SnapshotError> {
    loop {
        match unmount_once(target) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(SnapshotError::sys("unmount", target, e)),
        }
    }
}

/// One umount(2), retried while the mount is busy (containerd retries 50 times, 50 ms apart).
fn unmount_once(target: &Path) -> Result<(), Errno> {
    let mut last = Errno::EBUSY;
    for _ in 0..50 {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(Errno::EBUSY) => {
                last = Errno::EBUSY;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Flags and data parsed from mount options (containerd `parseMountOptions`).
#[derive(Debug, PartialEq, Eq)]
struct ParsedOptions {
    flags: MsFlags,
    propagation: MsFlags,
    data: Vec<String>,
}

fn parse_options(options: &[String]) -> Result<ParsedOptions, SnapshotError> {
    let mut parsed = ParsedOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
    };
    for opt in options {
        // (clear, flag): `clear` means the option removes the flag.
        let flag = match opt.as_str() {
            "async" => Some((true, MsFlags::MS_SYNCHRONOUS)),
            "atime" => Some((true, MsFlags::MS_NOATIME)),
            "bind" => Some((false, MsFlags::MS_BIND)),
            "defaults" => Some((false, MsFlags::empty())),
            "dev" => Some((true, MsFlags::MS_NODEV)),
            "diratime" => Some((true, MsFlags::MS_NODIRATIME)),
            "dirsync" => Some((false, MsFlags::MS_DIRSYNC)),
            "exec" => Some((true, MsFlags::MS_NOEXEC)),
            "mand" => Some((false, MsFlags::MS_MANDLOCK)),
            "noatime" => Some((false, MsFlags::MS_NOATIME)),
            "nodev" => Some((false, MsFlags::MS_NODEV)),
            "nodiratime" => Some((false, MsFlags::MS_NODIRATIME)),
            "noexec" => Some((false, MsFlags::MS_NOEXEC)),
            "nomand" => Some((true, MsFlags::MS_MANDLOCK)),
            "norelatime" => Some((true, MsFlags::MS_RELATIME)),
            "nostrictatime" => Some((true, MsFlags::MS_STRICTATIME)),
            "nosuid" => Some((false, MsFlags::MS_NOSUID)),
            "rbind" => Some((false, MsFlags::MS_BIND | MsFlags::MS_REC)),
            "relatime" => Some((false, MsFlags::MS_RELATIME)),
            "remount" => Some((false, MsFlags::MS_REMOUNT)),
            "ro" => Some((false, MsFlags::MS_RDONLY)),
            "rw" => Some((true, MsFlags::MS_RDONLY)),
            "strictatime" => Some((false, MsFlags::MS_STRICTATIME)),
            "suid" => Some((true, MsFlags::MS_NOSUID)),
            "sync" => Some((false, MsFlags::MS_SYNCHRONOUS)),
            _ => None,
        };
        if let Some((clear, flag)) = flag {
            if clear {
                parsed.flags.remove(flag);
            } else {
                parsed.flags.insert(flag);
            }
            continue;
        }
        let propagation = match opt.as_str() {
            "private" => Some(MsFlags::MS_PRIVATE),
            "rprivate" => Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            "shared" => Some(MsFlags::MS_SHARED),
            "rshared" => Some(MsFlags::MS_SHARED | MsFlags::MS_REC),
            "slave" => Some(MsFlags::MS_SLAVE),
            "rslave" => Some(MsFlags::MS_SLAVE | MsFlags::MS_REC),
            "unbindable" => Some(MsFlags::MS_UNBINDABLE),
            "runbindable" => Some(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
            _ => None,
        };
        if let Some(p) = propagation {
            parsed.propagation.insert(p);
            continue;
        }
        if opt == "loop" {
            // Loop devices are devmapper/erofs territory; no local driver returns them.
            return Err(SnapshotError::UnsupportedMount {
                what: "option loop".into(),
            });
        }
        parsed.data.push(opt.clone());
    }
    Ok(parsed)
}

/// Rewrites `lowerdir=` relative to the parent of the lower directories' common prefix
/// (containerd `compactLowerdirOption`); returns that directory and the new options, or
/// `None` when nothing can be compacted.
fn compact_lowerdir(options: &[String]) -> Option<(PathBuf, Vec<String>)> {
    let idx = options.iter().position(|o| o.starts_with("lowerdir="))?;
    let dirs: Vec<&str> = options[idx]["lowerdir=".len()..].split(':').collect();
    if dirs.len() < 2 {
        return None;
    }
    let common = longest_common_prefix(&dirs);
    // Snapshot ids are digits: step back to the parent so the prefix is a whole directory
    // (`<root>/snapshots/`) rather than `<root>/snapshots/1`.
    let common = Path::new(common).parent()?;
    if common == Path::new("/") || common.as_os_str().is_empty() {
        return None;
    }
    let prefix = format!("{}/", common.display());
    let relative: Vec<&str> = dirs
        .iter()
        .map(|d| d.strip_prefix(prefix.as_str()))
        .collect::<Option<_>>()?;
    let mut out: Vec<String> = options.to_vec();
    out.remove(idx);
    out.push(format!("lowerdir={}", relative.join(":")));
    Some((common.to_path_buf(), out))
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

/// Mounts one mount at `target` (containerd `Mount.Mount`).
pub fn mount_one(m: &Mount, target: &Path) -> Result<(), SnapshotError> {
    let mut options = m.options.clone();
    let mut chdir = None;
    let size: usize = options.iter().map(String::len).sum();
    if m.mount_type == "overlay" && size >= PAGE_SIZE - 512 {
        if let Some((dir, compacted)) = compact_lowerdir(&options) {
            chdir = Some(dir);
            options = compacted;
        }
    }
    let parsed = parse_options(&options)?;
    let data = parsed.data.join(",");
    if data.len() > PAGE_SIZE {
        return Err(SnapshotError::OptionsTooLong {
            target: target.to_path_buf(),
            len: data.len(),
        });
    }
    let flags = parsed.flags;
    if !flags.contains(MsFlags::MS_REMOUNT) || !data.is_empty() {
        mount_at(
            chdir.as_deref(),
            &m.source,
            target,
            &m.mount_type,
            flags,
            &data,
        )?;
    }
    if !parsed.propagation.is_empty() {
        let pflags = parsed.propagation | MsFlags::MS_SILENT;
        nix::mount::mount(None::<&str>, target, None::<&str>, pflags, None::<&str>)
            .map_err(|e| SnapshotError::sys("set mount propagation on", target, e))?;
    }
    // A bind mount ignores MS_RDONLY on the first call; read-only takes a remount.
    if flags.contains(MsFlags::MS_BIND | MsFlags::MS_RDONLY) {
        nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            flags | MsFlags::MS_REMOUNT,
            None::<&str>,
        )
        .map_err(|e| SnapshotError::sys("remount read-only", target, e))?;
    }
    Ok(())
}

fn mount_at(
    chdir: Option<&Path>,
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: &str,
) -> Result<(), SnapshotError> {
    let op = || format!("mount {fstype} {source} on");
    let data_arg = (!data.is_empty()).then_some(data);
    let call = || nix::mount::mount(Some(source), target, Some(fstype), flags, data_arg);
    let Some(dir) = chdir else {
        return call().map_err(|e| SnapshotError::sys(op(), target, e));
    };
    // The relative lowerdirs resolve against the calling thread's working directory: give a
    // short-lived thread its own fs context, move it into `dir`, mount from there.
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<(), SnapshotError> {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
                    .map_err(|e| SnapshotError::sys("unshare CLONE_FS for mount", dir, e))?;
                nix::unistd::chdir(dir)
                    .map_err(|e| SnapshotError::sys("chdir for mount", dir, e))?;
                call().map_err(|e| SnapshotError::sys(op(), target, e))
            })
            .join()
            .unwrap_or_else(|_| Err(SnapshotError::sys(op(), target, Errno::EINTR)))
    })
}

/// Mounts a snapshot's mounts on a fresh temporary directory and unmounts them on drop
/// (containerd `mount.WithTempMount`). If the unmount fails the directory is left in place
/// rather than deleting through a live mount.
#[derive(Debug)]
pub struct TempMount {
    dir: PathBuf,
    mounted: bool,
}

impl TempMount {
    /// Mounts `mounts` on a new directory under the system temp dir.
    pub fn new(mounts: &[Mount]) -> Result<TempMount, SnapshotError> {
        Self::new_in(&std::env::temp_dir(), mounts)
    }

    /// Mounts `mounts` on a new directory under `parent`.
    pub fn new_in(parent: &Path, mounts: &[Mount]) -> Result<TempMount, SnapshotError> {
        let dir = tempfile::Builder::new()
            .prefix("berth-mount-")
            .tempdir_in(parent)
            .map_err(|e| SnapshotError::io("create temp mount dir in", parent, e))?
            .keep();
        let guard = TempMount { dir, mounted: true };
        // On failure, drop unmounts whatever part of the stack did mount and removes the dir.
        mount_all(mounts, &guard.dir)?;
        Ok(guard)
    }

    /// Where the mounts are.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Unmounts and removes the directory, reporting failures that drop would only log.
    pub fn close(mut self) -> Result<(), SnapshotError> {
        self.release()
    }

    fn release(&mut self) -> Result<(), SnapshotError> {
        if !self.mounted {
            return Ok(());
        }
        unmount(&self.dir)?;
        self.mounted = false;
        // remove_dir, never remove_dir_all: if anything is still mounted it fails safely.
        std::fs::remove_dir(&self.dir).map_err(|e| SnapshotError::io("remove", &self.dir, e))
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!(path = %self.dir.display(), error = %e, "failed to release temp mount");
        }
    }
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
    fn lowerdirs_compact_to_their_common_parent() {
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
}
