//! Filesystem helpers the drivers share: temp directories, disk usage (continuity
//! `fs.DiskUsage`, `fs.DiffUsage`) and a metadata-preserving tree copy (continuity
//! `fs.CopyDir`).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag};

use crate::error::SnapshotError;
use crate::snapshotter::Usage;

/// Creates a uniquely named directory `<parent>/<prefix>XXXXXX` with mode 0700.
pub(crate) fn temp_dir_in(parent: &Path, prefix: &str) -> Result<PathBuf, SnapshotError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .map(|d| d.keep())
        .map_err(|e| SnapshotError::io("create temp dir in", parent, e))
}

/// Creates one directory with exactly `mode` (the umask does not apply).
pub(crate) fn mkdir_mode(path: &Path, mode: u32) -> Result<(), SnapshotError> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|e| SnapshotError::io("create", path, e))?;
    set_mode(path, mode)
}

/// Sets a path's permission bits.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), SnapshotError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| SnapshotError::io("chmod", path, e))
}

/// Creates a directory tree whose last component has `mode`, leaving an existing one alone.
pub(crate) fn ensure_dir(path: &Path, mode: u32) -> Result<(), SnapshotError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| SnapshotError::io("create", path, e))
}

/// Removes a tree; a missing tree is fine.
pub(crate) fn remove_tree(path: &Path) -> Result<(), SnapshotError> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(SnapshotError::io("remove", path, e)),
        _ => Ok(()),
    }
}

/// Renames, mapping the error.
pub(crate) fn rename(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    fs::rename(from, to).map_err(|e| SnapshotError::io("rename", from, e))
}

/// Names of the entries of a directory.
pub(crate) fn dir_names(dir: &Path) -> Result<Vec<String>, SnapshotError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| SnapshotError::io("read dir", dir, e))? {
        let entry = entry.map_err(|e| SnapshotError::io("read dir", dir, e))?;
        out.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

/// Blocks and inodes used by the tree at `root`, each inode counted once however many hard
/// links it has (continuity `fs.DiskUsage`).
pub(crate) fn disk_usage(root: &Path) -> Result<Usage, SnapshotError> {
    diff_usage(None, root)
}

/// Blocks and inodes of the entries of `upper` that are new or changed relative to `base`
/// (continuity `fs.DiffUsage`, comparing metadata as its change walk does); with no base,
/// the whole tree.
pub(crate) fn diff_usage(base: Option<&Path>, upper: &Path) -> Result<Usage, SnapshotError> {
    let mut seen = HashSet::new();
    let mut size = 0i64;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = upper.join(&rel);
        let md = fs::symlink_metadata(&path).map_err(|e| SnapshotError::io("stat", &path, e))?;
        let changed = match base {
            None => true,
            Some(base) => match fs::symlink_metadata(base.join(&rel)) {
                Ok(old) => !same_metadata(&old, &md),
                Err(_) => true,
            },
        };
        if changed && seen.insert((md.dev(), md.ino())) {
            size += (md.blocks() as i64) * 512;
        }
        if md.is_dir() {
            for entry in fs::read_dir(&path).map_err(|e| SnapshotError::io("read dir", &path, e))? {
                let entry = entry.map_err(|e| SnapshotError::io("read dir", &path, e))?;
                stack.push(rel.join(entry.file_name()));
            }
        }
    }
    Ok(Usage {
        size,
        inodes: seen.len() as i64,
    })
}

fn same_metadata(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.mode() == b.mode()
        && a.uid() == b.uid()
        && a.gid() == b.gid()
        && a.rdev() == b.rdev()
        && (a.is_dir() || a.size() == b.size())
        && (a.is_dir() || (a.mtime() == b.mtime() && a.mtime_nsec() == b.mtime_nsec()))
}

/// Copies the tree at `src` into the existing directory `dst`, keeping modes, owners,
/// extended attributes, symlinks, hard links, device nodes, fifos and times (continuity
/// `fs.CopyDir`). `dst` itself takes `src`'s metadata.
pub(crate) fn copy_dir(src: &Path, dst: &Path) -> Result<(), SnapshotError> {
    let mut links = HashMap::new();
    copy_entries(src, dst, &mut links)?;
    let md = fs::symlink_metadata(src).map_err(|e| SnapshotError::io("stat", src, e))?;
    copy_metadata(src, dst, &md)
}

fn copy_entries(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), SnapshotError> {
    for entry in fs::read_dir(src).map_err(|e| SnapshotError::io("read dir", src, e))? {
        let entry = entry.map_err(|e| SnapshotError::io("read dir", src, e))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let md = fs::symlink_metadata(&from).map_err(|e| SnapshotError::io("stat", &from, e))?;
        let ft = md.file_type();
        if ft.is_dir() {
            fs::create_dir(&to).map_err(|e| SnapshotError::io("create", &to, e))?;
            copy_entries(&from, &to, links)?;
            copy_metadata(&from, &to, &md)?;
            continue;
        }
        if md.nlink() > 1 {
            if let Some(first) = links.get(&(md.dev(), md.ino())) {
                fs::hard_link(first, &to).map_err(|e| SnapshotError::io("link", &to, e))?;
                continue;
            }
            links.insert((md.dev(), md.ino()), to.clone());
        }
        if ft.is_file() {
            fs::copy(&from, &to).map_err(|e| SnapshotError::io("copy", &from, e))?;
        } else if ft.is_symlink() {
            let link = fs::read_link(&from).map_err(|e| SnapshotError::io("readlink", &from, e))?;
            std::os::unix::fs::symlink(&link, &to)
                .map_err(|e| SnapshotError::io("symlink", &to, e))?;
        } else {
            // Device nodes, fifos and sockets.
            let kind = SFlag::from_bits_truncate(md.mode() & SFlag::S_IFMT.bits());
            let perm = Mode::from_bits_truncate(md.mode() & 0o7777);
            nix::sys::stat::mknod(&to, kind, perm, md.rdev())
                .map_err(|e| SnapshotError::sys("mknod", &to, e))?;
        }
        copy_metadata(&from, &to, &md)?;
    }
    Ok(())
}

fn copy_metadata(src: &Path, dst: &Path, md: &fs::Metadata) -> Result<(), SnapshotError> {
    let symlink = md.file_type().is_symlink();
    std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid()))
        .map_err(|e| SnapshotError::io("chown", dst, e))?;
    // After the chown, which clears set-id bits.
    if !symlink {
        set_mode(dst, md.mode() & 0o7777)?;
    }
    copy_xattrs(src, dst, symlink)?;
    let atime = filetime::FileTime::from_last_access_time(md);
    let mtime = filetime::FileTime::from_last_modification_time(md);
    filetime::set_symlink_file_times(dst, atime, mtime)
        .map_err(|e| SnapshotError::io("set times on", dst, e))
}

fn copy_xattrs(src: &Path, dst: &Path, symlink: bool) -> Result<(), SnapshotError> {
    let names = match xattr::list(src) {
        Ok(names) => names,
        Err(e) if unsupported(&e) => return Ok(()),
        Err(e) => return Err(SnapshotError::io("list xattrs of", src, e)),
    };
    for name in names {
        let value = match xattr::get(src, &name) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) if unsupported(&e) => continue,
            Err(e) => return Err(SnapshotError::io("get xattr of", src, e)),
        };
        match xattr::set(dst, &name, &value) {
            Ok(()) => {}
            // user.* attributes cannot be set on symlinks.
            Err(e) if unsupported(&e) || (symlink && e.raw_os_error() == Some(libc_eperm())) => {}
            Err(e) => return Err(SnapshotError::io("set xattr on", dst, e)),
        }
    }
    Ok(())
}

fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::errno::Errno::EOPNOTSUPP as i32)
}

fn libc_eperm() -> i32 {
    nix::errno::Errno::EPERM as i32
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn usage_counts_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let empty = disk_usage(dir.path()).unwrap();
        assert_eq!(empty.inodes, 1);
        fs::write(dir.path().join("a"), vec![7u8; 64 * 1024]).unwrap();
        fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        let usage = disk_usage(dir.path()).unwrap();
        assert_eq!(usage.inodes, 2);
        assert!(usage.size >= 64 * 1024, "{usage:?}");
        assert!(usage.size < 2 * 64 * 1024 + empty.size, "{usage:?}");
    }

    #[test]
    fn copy_keeps_links_modes_and_times() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = src.path();
        fs::create_dir(s.join("d")).unwrap();
        fs::write(s.join("d/f"), b"data").unwrap();
        set_mode(&s.join("d/f"), 0o640).unwrap();
        fs::hard_link(s.join("d/f"), s.join("h")).unwrap();
        symlink("d/f", s.join("l")).unwrap();
        filetime::set_file_mtime(s.join("d/f"), filetime::FileTime::from_unix_time(1000, 0))
            .unwrap();
        set_mode(&s.join("d"), 0o750).unwrap();
        copy_dir(s, dst.path()).unwrap();
        let d = dst.path();
        assert_eq!(fs::read(d.join("d/f")).unwrap(), b"data");
        let f = fs::metadata(d.join("d/f")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o640);
        assert_eq!(f.mtime(), 1000);
        assert_eq!(fs::metadata(d.join("d")).unwrap().mode() & 0o7777, 0o750);
        assert_eq!(fs::metadata(d.join("h")).unwrap().ino(), f.ino());
        assert_eq!(fs::read_link(d.join("l")).unwrap(), Path::new("d/f"));
    }

    #[test]
    fn diff_usage_skips_unchanged_entries() {
        let base = tempfile::tempdir().unwrap();
        fs::write(base.path().join("same"), vec![1u8; 8192]).unwrap();
        let upper = tempfile::tempdir().unwrap();
        copy_dir(base.path(), upper.path()).unwrap();
        let before = diff_usage(Some(base.path()), upper.path()).unwrap();
        assert_eq!(before.size, 0, "{before:?}");
        fs::write(upper.path().join("new"), vec![2u8; 8192]).unwrap();
        let after = diff_usage(Some(base.path()), upper.path()).unwrap();
        assert!(after.size >= 8192, "{after:?}");
    }
}
