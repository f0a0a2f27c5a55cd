//! A minimal writer for the `newc` cpio format the kernel unpacks as an initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst). Written by hand: the format is a
//! 110-byte ASCII header per entry, and the crates that offer it are not in the workspace's lock
//! file (adding one for 60 lines would touch every crate's dependency tree).

use std::collections::BTreeMap;

/// One entry of the archive.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A directory with its permission bits.
    Dir(u32),
    /// A regular file: contents and permission bits.
    File(Vec<u8>, u32),
    /// A symbolic link to the target.
    Symlink(String),
    /// A character device node: major, minor, permission bits.
    CharDev(u32, u32, u32),
}

/// Entries by absolute guest path (without the leading `/`); parents are added as directories
/// when the archive is written, so the kernel (which does not create them) finds them in order.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    /// Adds (or replaces) `path` (`/` or no leading `/`).
    pub fn insert(&mut self, path: &str, entry: Entry) {
        let path = path
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_owned();
        assert!(!path.is_empty(), "an archive entry needs a path");
        self.entries.insert(path, entry);
    }

    /// True when `path` is in the archive.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_start_matches('/'))
    }

    /// The archive in `newc` format with its `TRAILER!!!`. Sorted order puts every directory
    /// before what it holds.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut all = self.entries.clone();
        for path in self.entries.keys() {
            let mut dir = path.as_str();
            while let Some((parent, _)) = dir.rsplit_once('/') {
                all.entry(parent.to_owned()).or_insert(Entry::Dir(0o755));
                dir = parent;
            }
        }
        let mut out = Vec::new();
        for (ino, (path, entry)) in all.iter().enumerate() {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir(perm) => (0o040_000 | perm, &[], (0, 0)),
                Entry::File(data, perm) => (0o100_000 | perm, data, (0, 0)),
                Entry::Symlink(target) => (0o120_777, target.as_bytes(), (0, 0)),
                Entry::CharDev(major, minor, perm) => (0o020_000 | perm, &[], (*major, *minor)),
            };
            let ino = u32::try_from(ino + 1).expect("fewer than 2^32 entries");
            write_entry(&mut out, ino, mode, path, data, rdev);
        }
        write_entry(&mut out, 0, 0, "TRAILER!!!", &[], (0, 0));
        out
    }
}

fn write_entry(out: &mut Vec<u8>, ino: u32, mode: u32, name: &str, data: &[u8], rdev: (u32, u32)) {
    let size = u32::try_from(data.len()).expect("an initramfs file is smaller than 4 GiB");
    let namesize = u32::try_from(name.len() + 1).expect("short name");
    let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
    // rdevminor, namesize, check
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
        0, 0, 0, 0, 0, rdev.0, rdev.1, 0
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout_adds_parents_and_trailer() {
        let mut a = Archive::default();
        a.insert("/bin/sh", Entry::Symlink("busybox".into()));
        a.insert("etc/x", Entry::File(b"abc".to_vec(), 0o644));
        let bytes = a.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        // Every header starts on a 4-byte boundary with the newc magic.
        let starts: Vec<usize> = text.match_indices("070701").map(|(i, _)| i).collect();
        assert_eq!(
            starts.len(),
            5,
            "bin, bin/sh, etc, etc/x, trailer: {text:?}"
        );
        assert!(starts.iter().all(|i| i % 4 == 0));
        let names: Vec<&str> = starts
            .iter()
            .map(|&i| {
                let rest = &text[i + 110..];
                &rest[..rest.find('\0').unwrap()]
            })
            .collect();
        assert_eq!(names, ["bin", "bin/sh", "etc", "etc/x", "TRAILER!!!"]);
        assert_eq!(bytes.len() % 4, 0);
    }
}
