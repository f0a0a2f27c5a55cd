//! Computing the layer between two directory trees (containerd `diff/walking`, continuity
//! `fs.Changes` and `archive.WriteDiff`): a double walk of `lower` and `upper` that writes every
//! added or changed entry, a `.wh.<name>` whiteout for every deleted one, and the unchanged
//! parent directories of what it writes, in a deterministic order (depth first, names sorted
//! bytewise).

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::{ApplyError, WHITEOUT_PREFIX};

/// What [`write_diff`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffResult {
    /// `sha256:<hex>` of the uncompressed tar written: the layer's diffID.
    pub diff_id: String,
    /// Bytes of the uncompressed tar written.
    pub size: u64,
}

/// Hashes and counts the bytes as they pass.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes to `out` an uncompressed OCI layer tar holding the changes from `lower` to `upper`
/// (both plain directory trees, e.g. mounted read-only views), and returns its diffID and size.
/// Sockets are skipped, as containerd skips them; files hardlinked together within the layer
/// are written once and linked after.
pub fn write_diff(lower: &Path, upper: &Path, out: impl Write) -> Result<DiffResult, ApplyError> {
    let hashing = HashingWriter {
        inner: out,
        hasher: Sha256::new(),
        count: 0,
    };
    let mut builder = tar::Builder::new(hashing);
    builder.follow_symlinks(false);
    let mut walker = Walker {
        builder: &mut builder,
        pending: Vec::new(),
        links: HashMap::new(),
    };
    walker.compare_dir(lower, upper, Path::new(""))?;
    builder.finish().map_err(ApplyError::Write)?;
    let mut hashing = builder.into_inner().map_err(ApplyError::Write)?;
    hashing.flush().map_err(ApplyError::Write)?;
    Ok(DiffResult {
        diff_id: format!("sha256:{}", hex::encode(hashing.hasher.finalize())),
        size: hashing.count,
    })
}

/// A directory not written yet because nothing under it has changed so far.
struct Pending {
    rel: PathBuf,
    abs: PathBuf,
    written: bool,
}

struct Walker<'b, W: Write> {
    builder: &'b mut tar::Builder<W>,
    /// The ancestors of the directory being walked, outermost first.
    pending: Vec<Pending>,
    /// Regular files with several links already written, by (device, inode).
    links: HashMap<(u64, u64), PathBuf>,
}

fn lstat(path: &Path) -> Result<Option<Metadata>, ApplyError> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ApplyError::io("lstat", path, e)),
    }
}

fn sorted_names(dir: &Path) -> Result<BTreeSet<OsString>, ApplyError> {
    let mut names = BTreeSet::new();
    for e in fs::read_dir(dir).map_err(|e| ApplyError::io("readdir", dir, e))? {
        names.insert(
            e.map_err(|e| ApplyError::io("readdir", dir, e))?
                .file_name(),
        );
    }
    Ok(names)
}

/// Extended attributes of a path itself, sorted.
fn xattrs(path: &Path) -> Result<Vec<(OsString, Vec<u8>)>, ApplyError> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(ApplyError::io("listxattr", path, e)),
    };
    let mut out = Vec::new();
    for name in names {
        match xattr::get(path, &name) {
            Ok(Some(v)) => out.push((name, v)),
            Ok(None) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODATA) => {}
            Err(e) => return Err(ApplyError::io("getxattr", path, e)),
        }
    }
    out.sort();
    Ok(out)
}

fn same_contents(a: &Path, b: &Path) -> Result<bool, ApplyError> {
    let mut fa = fs::File::open(a).map_err(|e| ApplyError::io("open", a, e))?;
    let mut fb = fs::File::open(b).map_err(|e| ApplyError::io("open", b, e))?;
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| ApplyError::io("read", a, e))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| ApplyError::io("read", b, e))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether `upper` differs from `lower` (same path in both trees), after continuity's
/// `sameFile`: type, mode, owner, device, xattrs; symlink targets; for files size and mtime,
/// and the bytes when mtimes carry no nanoseconds (a coarse copy may keep them equal).
/// Directory times are ignored: creating an entry changes them.
fn changed(lower: &Path, lm: &Metadata, upper: &Path, um: &Metadata) -> Result<bool, ApplyError> {
    if lm.mode() != um.mode()
        || lm.uid() != um.uid()
        || lm.gid() != um.gid()
        || lm.rdev() != um.rdev()
    {
        return Ok(true);
    }
    if xattrs(lower)? != xattrs(upper)? {
        return Ok(true);
    }
    let ft = um.file_type();
    if ft.is_dir() {
        return Ok(false);
    }
    if ft.is_symlink() {
        let lt = fs::read_link(lower).map_err(|e| ApplyError::io("readlink", lower, e))?;
        let ut = fs::read_link(upper).map_err(|e| ApplyError::io("readlink", upper, e))?;
        if lt != ut {
            return Ok(true);
        }
    }
    if lm.size() != um.size() || lm.mtime() != um.mtime() || lm.mtime_nsec() != um.mtime_nsec() {
        return Ok(true);
    }
    if ft.is_file() && um.mtime_nsec() == 0 {
        return Ok(!same_contents(lower, upper)?);
    }
    Ok(false)
}

impl<W: Write> Walker<'_, W> {
    /// Compares the directory `rel` of both trees (both are directories there).
    fn compare_dir(&mut self, lower: &Path, upper: &Path, rel: &Path) -> Result<(), ApplyError> {
        let ldir = lower.join(rel);
        let udir = upper.join(rel);
        let lnames = sorted_names(&ldir)?;
        let unames = sorted_names(&udir)?;
        let all: BTreeSet<&OsString> = lnames.iter().chain(unames.iter()).collect();
        for name in all {
            let crel = rel.join(name);
            let lpath = ldir.join(name);
            let upath = udir.join(name);
            let lm = if lnames.contains(name) {
                lstat(&lpath)?
            } else {
                None
            };
            let um = if unames.contains(name) {
                lstat(&upath)?
            } else {
                None
            };
            match (lm, um) {
                (Some(_), None) => self.write_whiteout(&crel)?,
                (None, Some(um)) => self.add_tree(&upath, &um, &crel)?,
                (Some(lm), Some(um)) => {
                    let both_dirs = lm.is_dir() && um.is_dir();
                    if both_dirs {
                        let dir_changed = changed(&lpath, &lm, &upath, &um)?;
                        self.pending.push(Pending {
                            rel: crel.clone(),
                            abs: upath.clone(),
                            written: false,
                        });
                        if dir_changed {
                            self.flush_pending()?;
                        }
                        self.compare_dir(lower, upper, &crel)?;
                        self.pending.pop();
                    } else if lm.file_type() != um.file_type() || changed(&lpath, &lm, &upath, &um)?
                    {
                        // A new type replaces the old entry whole when applied.
                        self.add_tree(&upath, &um, &crel)?;
                    }
                }
                (None, None) => {}
            }
        }
        Ok(())
    }

    /// Writes the pending ancestors not written yet.
    fn flush_pending(&mut self) -> Result<(), ApplyError> {
        for i in 0..self.pending.len() {
            if self.pending[i].written {
                continue;
            }
            let abs = self.pending[i].abs.clone();
            let rel = self.pending[i].rel.clone();
            let meta = fs::symlink_metadata(&abs).map_err(|e| ApplyError::io("lstat", &abs, e))?;
            self.write_entry(&abs, &meta, &rel)?;
            self.pending[i].written = true;
        }
        Ok(())
    }

    /// Writes `path` and, for a directory, everything under it.
    fn add_tree(&mut self, path: &Path, meta: &Metadata, rel: &Path) -> Result<(), ApplyError> {
        self.flush_pending()?;
        self.write_entry(path, meta, rel)?;
        if meta.is_dir() {
            for name in sorted_names(path)? {
                let child = path.join(&name);
                if let Some(cm) = lstat(&child)? {
                    self.add_tree(&child, &cm, &rel.join(&name))?;
                }
            }
        }
        Ok(())
    }

    fn write_whiteout(&mut self, rel: &Path) -> Result<(), ApplyError> {
        self.flush_pending()?;
        let name = rel.file_name().unwrap_or_default();
        let mut wh = OsString::from(WHITEOUT_PREFIX);
        wh.push(name);
        let path = rel.parent().unwrap_or(Path::new("")).join(wh);
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Regular);
        header.set_size(0);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        self.builder
            .append_data(&mut header, &path, io::empty())
            .map_err(ApplyError::Write)
    }

    /// Writes one entry (no children).
    fn write_entry(&mut self, path: &Path, meta: &Metadata, rel: &Path) -> Result<(), ApplyError> {
        let ft = meta.file_type();
        if ft.is_socket() {
            tracing::debug!(path = %path.display(), "socket skipped in diff");
            return Ok(());
        }
        let attrs = xattrs(path)?;
        if !attrs.is_empty() {
            let keys: Vec<(String, &[u8])> = attrs
                .iter()
                .map(|(k, v)| {
                    (
                        format!("SCHILY.xattr.{}", String::from_utf8_lossy(k.as_bytes())),
                        v.as_slice(),
                    )
                })
                .collect();
            self.builder
                .append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))
                .map_err(ApplyError::Write)?;
        }
        let mut header = Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(meta.uid().into());
        header.set_gid(meta.gid().into());
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        header.set_size(0);
        let write = |r: io::Result<()>| r.map_err(ApplyError::Write);
        if ft.is_dir() {
            header.set_entry_type(EntryType::Directory);
            let mut name = rel.as_os_str().to_owned();
            name.push("/");
            write(
                self.builder
                    .append_data(&mut header, Path::new(&name), io::empty()),
            )
        } else if ft.is_symlink() {
            header.set_entry_type(EntryType::Symlink);
            let target = fs::read_link(path).map_err(|e| ApplyError::io("readlink", path, e))?;
            write(self.builder.append_link(&mut header, rel, &target))
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.links.get(&key).cloned() {
                    header.set_entry_type(EntryType::Link);
                    return write(self.builder.append_link(&mut header, rel, &first));
                }
                self.links.insert(key, rel.to_path_buf());
            }
            header.set_entry_type(EntryType::Regular);
            header.set_size(meta.size());
            let file = fs::File::open(path).map_err(|e| ApplyError::io("open", path, e))?;
            // Reads exactly the size in the header even if the file changes meanwhile.
            write(
                self.builder
                    .append_data(&mut header, rel, file.take(meta.size())),
            )
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            header.set_entry_type(if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else {
                EntryType::Fifo
            });
            let rdev = meta.rdev();
            write(header.set_device_major(nix::sys::stat::major(rdev) as u32))?;
            write(header.set_device_minor(nix::sys::stat::minor(rdev) as u32))?;
            write(self.builder.append_data(&mut header, rel, io::empty()))
        } else {
            tracing::debug!(path = %path.display(), "unknown file type skipped in diff");
            Ok(())
        }
    }
}
