//! Unpacking one layer tar onto a directory (containerd `archive/tar.go` `applyNaive` and
//! `createTarFile`, `archive/tar_opts_linux.go` `OverlayConvertWhiteout`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use sha2::{Digest, Sha256};
use tar::EntryType;

use super::path::{clean_name, resolve_in_root};
use super::{
    ApplyError, ApplyOptions, ApplyResult, WhiteoutMode, WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
};

/// The PAX record prefix carrying extended attributes.
const PAX_XATTR: &str = "SCHILY.xattr.";
/// The xattr overlayfs reads to hide a lower directory's entries.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Hashes and counts the bytes as they pass.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Unpacks the uncompressed layer tar read from `reader` onto `root`, an existing directory,
/// and returns the diffID and size of the tar as read (trailing bytes after the end-of-archive
/// marker are read and hashed too, as containerd does).
///
/// Regular files, directories, symlinks, hardlinks, devices and fifos are created with their
/// numeric owner, mode (setuid, setgid, sticky included), `SCHILY.xattr.*` attributes and
/// times; directory times are set last. Whiteouts follow `opts.whiteout`. An entry whose name,
/// hardlink target or whiteout climbs above `root` stops the apply with
/// [`ApplyError::Unsafe`]; symlinks met in parent directories resolve inside `root`.
pub fn apply_layer(
    reader: impl Read,
    root: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyResult, ApplyError> {
    let meta = fs::metadata(root).map_err(|e| ApplyError::io("stat", root, e))?;
    if !meta.is_dir() {
        return Err(ApplyError::io(
            "stat",
            root,
            io::Error::from_raw_os_error(nix::libc::ENOTDIR),
        ));
    }
    let mut hashing = HashingReader {
        inner: reader,
        hasher: Sha256::new(),
        count: 0,
    };
    let mut unpacker = Unpacker {
        root,
        opts,
        unpacked: HashSet::new(),
        dirs: Vec::new(),
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        for entry in archive.entries().map_err(ApplyError::Read)? {
            let entry = entry.map_err(ApplyError::Read)?;
            unpacker.entry(entry)?;
        }
    }
    unpacker.finish()?;
    io::copy(&mut hashing, &mut io::sink()).map_err(ApplyError::Read)?;
    Ok(ApplyResult {
        diff_id: format!("sha256:{}", hex::encode(hashing.hasher.finalize())),
        size: hashing.count,
    })
}

/// Access and modification times of an entry.
#[derive(Debug, Clone, Copy)]
struct Times {
    atime: FileTime,
    mtime: FileTime,
}

/// The state of one apply.
struct Unpacker<'a> {
    root: &'a Path,
    opts: &'a ApplyOptions,
    /// Paths this layer wrote: an opaque marker keeps them (it may come after them).
    unpacked: HashSet<PathBuf>,
    /// Directories whose times are set at the end, when nothing more is created in them.
    dirs: Vec<(Vec<OsString>, Times)>,
}

/// A numeric header field, where an empty field (all NULs or spaces) means 0 as Go's
/// `archive/tar` reads it.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> Result<u64, ApplyError> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        Err(e) => Err(ApplyError::Read(e)),
    }
}

/// Parses a PAX time (`seconds[.fraction]`, maybe negative) into a file time.
fn pax_time(value: &[u8]) -> Option<FileTime> {
    let s = std::str::from_utf8(value).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let mut nanos: u32 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    for _ in digits.len()..9 {
        nanos *= 10;
    }
    Some(FileTime::from_unix_time(secs, nanos))
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ApplyError> {
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            tracing::debug!(entry = %name, "PAX global extended header ignored");
            return Ok(());
        }
        let comps = clean_name(&raw).map_err(|r| ApplyError::unsafe_entry(&name, r))?;
        let Some((base, parents)) = comps.split_last() else {
            tracing::debug!(entry = %name, "entry resolves to the root: ignored");
            return Ok(());
        };
        let parent_rel: PathBuf = parents.iter().collect();
        let parent = resolve_in_root(self.root, &parent_rel)
            .map_err(|e| ApplyError::io("resolve", self.root.join(&parent_rel), e))?;
        self.mkparent(&parent)?;

        let header = entry.header();
        let old = header.as_old();
        let uid = numeric(header.uid(), &old.uid)?;
        let gid = numeric(header.gid(), &old.gid)?;
        let mode = numeric(header.mode().map(u64::from), &old.mode)? as u32 & 0o7777;
        let base_bytes = base.as_bytes();
        if base_bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(&name, &parent, base_bytes, uid, gid);
        }
        let path = parent.join(base);

        // Replace what is there, except that a directory over a directory merges.
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() && kind == EntryType::Directory => {}
            Ok(m) => remove_path(&path, m.is_dir())?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ApplyError::io("lstat", &path, e)),
        }

        let mut xattrs: Vec<(OsString, Vec<u8>)> = Vec::new();
        let mut pax_mtime = None;
        let mut pax_atime = None;
        if let Some(exts) = entry.pax_extensions().map_err(ApplyError::Read)? {
            for ext in exts {
                let ext = ext.map_err(ApplyError::Read)?;
                let key = ext.key_bytes();
                if let Some(attr) = key.strip_prefix(PAX_XATTR.as_bytes()) {
                    xattrs.push((
                        std::ffi::OsStr::from_bytes(attr).to_owned(),
                        ext.value_bytes().to_vec(),
                    ));
                } else if key == b"mtime" {
                    pax_mtime = pax_time(ext.value_bytes());
                } else if key == b"atime" {
                    pax_atime = pax_time(ext.value_bytes());
                }
            }
        }
        let header = entry.header();
        let header_mtime = numeric(header.mtime(), &header.as_old().mtime)?;
        let mtime = pax_mtime.unwrap_or_else(|| {
            FileTime::from_unix_time(i64::try_from(header_mtime).unwrap_or(0), 0)
        });
        // containerd uses the later of atime and mtime as atime.
        let atime = pax_atime.map_or(mtime, |a| a.max(mtime));
        let times = Times { atime, mtime };

        match kind {
            EntryType::Directory => {
                if !path.is_dir() {
                    fs::DirBuilder::new()
                        .mode(mode)
                        .create(&path)
                        .map_err(|e| ApplyError::io("mkdir", &path, e))?;
                }
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| ApplyError::io("create", &path, e))?;
                io::copy(&mut entry, &mut file).map_err(ApplyError::Read)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ApplyError::unsafe_entry(&name, "symlink without a target"))?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &path)
                    .map_err(|e| ApplyError::io("symlink", &path, e))?;
            }
            EntryType::Link => {
                let target = self.hardlink_target(&name, entry.link_name_bytes().as_deref())?;
                fs::hard_link(&target, &path).map_err(|e| ApplyError::io("link", &path, e))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let (major, minor) = match header.as_ustar() {
                    Some(u) => (
                        numeric(
                            header.device_major().map(|d| d.unwrap_or(0).into()),
                            &u.dev_major,
                        )?,
                        numeric(
                            header.device_minor().map(|d| d.unwrap_or(0).into()),
                            &u.dev_minor,
                        )?,
                    ),
                    None => match header.as_gnu() {
                        Some(g) => (
                            numeric(
                                header.device_major().map(|d| d.unwrap_or(0).into()),
                                &g.dev_major,
                            )?,
                            numeric(
                                header.device_minor().map(|d| d.unwrap_or(0).into()),
                                &g.dev_minor,
                            )?,
                        ),
                        None => (0, 0),
                    },
                };
                mknod(
                    &path,
                    sflag,
                    Mode::from_bits_truncate(mode),
                    makedev(major, minor),
                )
                .map_err(|e| ApplyError::io("mknod", &path, e.into()))?;
            }
            other => {
                return Err(ApplyError::UnsupportedEntry {
                    entry: name,
                    kind: other.as_byte(),
                })
            }
        }

        std::os::unix::fs::lchown(&path, Some(uid as u32), Some(gid as u32))
            .map_err(|e| ApplyError::io("lchown", &path, e))?;
        for (key, value) in &xattrs {
            set_xattr(&path, key, value)?;
        }
        // After lchown, which clears setuid and setgid. chmod(2) follows symlinks, and a
        // hardlink may name a symlink's inode (whose target may be a host path): symlinks have
        // no mode of their own, so they are skipped whatever the entry type.
        let is_symlink = fs::symlink_metadata(&path)
            .map_err(|e| ApplyError::io("lstat", &path, e))?
            .file_type()
            .is_symlink();
        if !is_symlink {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(|e| ApplyError::io("chmod", &path, e))?;
        }
        if kind == EntryType::Directory {
            self.dirs.push((comps, times));
        } else {
            filetime::set_symlink_file_times(&path, times.atime, times.mtime)
                .map_err(|e| ApplyError::io("utimes", &path, e))?;
        }
        self.unpacked.insert(path);
        Ok(())
    }

    /// Where a hardlink's target lives: its parent resolved inside the root, its last
    /// component not followed (link(2) does not follow it either).
    fn hardlink_target(&self, name: &str, link: Option<&[u8]>) -> Result<PathBuf, ApplyError> {
        let link =
            link.ok_or_else(|| ApplyError::unsafe_entry(name, "hardlink without a target"))?;
        let comps = clean_name(link)
            .map_err(|r| ApplyError::unsafe_entry(name, format!("hardlink target: {r}")))?;
        let Some((base, parents)) = comps.split_last() else {
            return Err(ApplyError::unsafe_entry(
                name,
                "hardlink target is the root",
            ));
        };
        let rel: PathBuf = parents.iter().collect();
        let parent = resolve_in_root(self.root, &rel)
            .map_err(|e| ApplyError::io("resolve", self.root.join(&rel), e))?;
        Ok(parent.join(base))
    }

    /// Carries out a whiteout entry `.wh.<name>` or `.wh..wh..opq` in `parent`.
    fn whiteout(
        &mut self,
        entry: &str,
        parent: &Path,
        base: &[u8],
        uid: u64,
        gid: u64,
    ) -> Result<(), ApplyError> {
        if base == WHITEOUT_OPAQUE.as_bytes() {
            return match self.opts.whiteout {
                WhiteoutMode::Remove => self.clear_opaque(parent),
                WhiteoutMode::Overlay => set_xattr(parent, OVERLAY_OPAQUE_XATTR.as_ref(), b"y"),
            };
        }
        if base.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
            tracing::debug!(entry, "aufs metadata entry ignored");
            return Ok(());
        }
        let target = &base[WHITEOUT_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(ApplyError::unsafe_entry(
                entry,
                "whiteout names no entry of its directory",
            ));
        }
        let path = parent.join(std::ffi::OsStr::from_bytes(target));
        let existing = match fs::symlink_metadata(&path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(ApplyError::io("lstat", &path, e)),
        };
        match self.opts.whiteout {
            WhiteoutMode::Remove => {
                if let Some(m) = existing {
                    remove_path(&path, m.is_dir())?;
                }
            }
            WhiteoutMode::Overlay => {
                if let Some(m) = existing {
                    remove_path(&path, m.is_dir())?;
                }
                mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                    .map_err(|e| ApplyError::io("mknod", &path, e.into()))?;
                std::os::unix::fs::lchown(&path, Some(uid as u32), Some(gid as u32))
                    .map_err(|e| ApplyError::io("lchown", &path, e))?;
            }
        }
        Ok(())
    }

    /// Removes from `dir`, recursively, everything this layer did not write.
    fn clear_opaque(&self, dir: &Path) -> Result<(), ApplyError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ApplyError::io("readdir", dir, e)),
        };
        for child in entries {
            let child = child.map_err(|e| ApplyError::io("readdir", dir, e))?;
            let path = child.path();
            let is_dir = child
                .file_type()
                .map_err(|e| ApplyError::io("lstat", &path, e))?
                .is_dir();
            if !self.unpacked.contains(&path) {
                remove_path(&path, is_dir)?;
            } else if is_dir {
                self.clear_opaque(&path)?;
            }
        }
        Ok(())
    }

    /// Creates the missing directories from the root down to `dir` (already resolved inside
    /// the root), 0755 or copied from the first lower that has them (containerd `mkparent`).
    fn mkparent(&self, dir: &Path) -> Result<(), ApplyError> {
        let rel = dir.strip_prefix(self.root).unwrap_or(Path::new(""));
        let mut current = self.root.to_path_buf();
        for comp in rel.components() {
            current.push(comp);
            match fs::symlink_metadata(&current) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) => {
                    return Err(ApplyError::io(
                        "mkdir",
                        &current,
                        io::Error::from_raw_os_error(nix::libc::ENOTDIR),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ApplyError::io("lstat", &current, e)),
            }
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&current)
                .map_err(|e| ApplyError::io("mkdir", &current, e))?;
            // The umask may have narrowed the mode.
            fs::set_permissions(&current, fs::Permissions::from_mode(0o755))
                .map_err(|e| ApplyError::io("chmod", &current, e))?;
            let sub = current.strip_prefix(self.root).unwrap_or(Path::new(""));
            self.copy_parent_info(&current, sub)?;
        }
        Ok(())
    }

    /// Copies owner, mode, times and non-trusted xattrs of `sub` in the first lower that has
    /// it onto `dst`.
    fn copy_parent_info(&self, dst: &Path, sub: &Path) -> Result<(), ApplyError> {
        for lower in &self.opts.parents {
            let src =
                resolve_in_root(lower, sub).map_err(|e| ApplyError::io("resolve", lower, e))?;
            let meta = match fs::symlink_metadata(&src) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ApplyError::io("lstat", &src, e)),
            };
            if !meta.is_dir() {
                // Replaced by a non-directory in that lower: nothing to copy.
                return Ok(());
            }
            std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
                .map_err(|e| ApplyError::io("lchown", dst, e))?;
            fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(|e| ApplyError::io("chmod", dst, e))?;
            if let Ok(names) = xattr::list(&src) {
                for key in names {
                    if key.as_bytes().starts_with(b"trusted.") {
                        continue;
                    }
                    if let Ok(Some(value)) = xattr::get(&src, &key) {
                        set_xattr(dst, &key, &value)?;
                    }
                }
            }
            filetime::set_symlink_file_times(
                dst,
                FileTime::from_last_access_time(&meta),
                FileTime::from_last_modification_time(&meta),
            )
            .map_err(|e| ApplyError::io("utimes", dst, e))?;
            return Ok(());
        }
        Ok(())
    }

    /// Sets directory times last, so that creating their entries did not change them.
    fn finish(&mut self) -> Result<(), ApplyError> {
        for (comps, times) in std::mem::take(&mut self.dirs) {
            // Resolved again: a later entry may have replaced a parent with a symlink. The
            // last component is not followed.
            let Some((base, parents)) = comps.split_last() else {
                continue;
            };
            let rel: PathBuf = parents.iter().collect();
            let path = resolve_in_root(self.root, &rel)
                .map_err(|e| ApplyError::io("resolve", self.root.join(&rel), e))?
                .join(base);
            match filetime::set_symlink_file_times(&path, times.atime, times.mtime) {
                Ok(()) => {}
                // A later entry of the layer removed it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ApplyError::io("utimes", &path, e)),
            }
        }
        Ok(())
    }
}

/// Removes a file, symlink or whole directory tree without following symlinks.
fn remove_path(path: &Path, is_dir: bool) -> Result<(), ApplyError> {
    let res = if is_dir {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ApplyError::io("remove", path, e)),
    }
}

/// Sets an xattr on `path` itself (never a symlink's target). Unsupported attributes are
/// skipped with a warning, as containerd does, and so are `user.*` ones on special files.
fn set_xattr(path: &Path, key: &std::ffi::OsStr, value: &[u8]) -> Result<(), ApplyError> {
    match xattr::set(path, key, value) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => {
            tracing::warn!(path = %path.display(), key = ?key, "xattr not supported: ignored");
            Ok(())
        }
        Err(e)
            if e.raw_os_error() == Some(nix::libc::EPERM)
                && key.as_bytes().starts_with(b"user.")
                && fs::symlink_metadata(path)
                    .map(|m| !m.is_file() && !m.is_dir())
                    .unwrap_or(false) =>
        {
            tracing::warn!(path = %path.display(), key = ?key, "user xattr on a special file: ignored");
            Ok(())
        }
        Err(e) => Err(ApplyError::io("setxattr", path, e)),
    }
}
