//! Layer fixtures for the snapshot and unpack tests: a two-layer OCI image whose second layer
//! exercises whiteouts, an opaque directory, hardlinks, symlinks, setuid bits, owners, xattrs
//! and fifos; hand-made malicious layer tars that try to write outside the unpack root; and a
//! walker that records an unpacked tree so that two unpacks can be compared.
//!
//! Archives follow the conventions of [`crate::image`]: fixed mtime, owners and modes, gzip
//! without timestamp or file name, JSON in the byte form Go's `encoding/json` gives the OCI
//! structs. Every tar header here is written by hand (name bytes copied into the header), so
//! names the `tar` crate refuses to build (`../x`, `/x`) can be written too.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_wellknown::{annotation, media_type};
use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

/// Modification time of every tar entry (2023-11-14T22:13:20Z).
const MTIME: u64 = 1_700_000_000;

/// The busybox binary of the base layer (Debian `busybox-static`).
const BUSYBOX: &str = "/bin/busybox";

/// Commands linked to busybox in `bin/` of the base layer.
const APPLETS: [&str; 6] = ["sh", "ls", "cat", "echo", "true", "mkdir"];

/// The extended attribute set on [`XATTR_FILE`] through a `SCHILY.xattr.` PAX record.
pub const XATTR_NAME: &str = "user.berth";
/// Its value.
pub const XATTR_VALUE: &[u8] = b"1";
/// The file of the second layer carrying [`XATTR_NAME`].
pub const XATTR_FILE: &str = "data/xattr";
/// The setuid file of the second layer: mode 04755, owner 1000:1000.
pub const SUID_FILE: &str = "data/suid";
/// A regular file of the second layer, and [`HARDLINK`], a hardlink to it.
pub const HARDLINK_TARGET: &str = "data/orig";
/// The hardlink to [`HARDLINK_TARGET`].
pub const HARDLINK: &str = "data/hard";
/// A symlink of the second layer pointing at [`SYMLINK_TARGET`].
pub const SYMLINK: &str = "data/link";
/// What [`SYMLINK`] points at (relative, to `data/keep`).
pub const SYMLINK_TARGET: &str = "keep";
/// A fifo of the second layer.
pub const FIFO: &str = "data/fifo";

/// The entry type of a [`RawEntry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory (`5`).
    Dir,
    /// A regular file (`0`).
    File,
    /// A symlink (`2`) to `link`.
    Symlink,
    /// A hardlink (`1`) to `link`.
    Hardlink,
    /// A fifo (`6`).
    Fifo,
}

/// One tar entry, written exactly as given: the name and link bytes go into the header as they
/// are (at most 100 bytes each), so they may climb out with `..` or start with `/`.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// The entry name.
    pub name: String,
    /// The entry type.
    pub kind: Kind,
    /// Permission bits, setuid/setgid/sticky included.
    pub mode: u32,
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
    /// Symlink or hardlink target.
    pub link: String,
    /// File contents (regular files only).
    pub data: Vec<u8>,
    /// PAX records written in an extended header before the entry.
    pub pax: Vec<(String, Vec<u8>)>,
}

impl RawEntry {
    fn new(name: &str, kind: Kind, mode: u32) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            link: String::new(),
            data: Vec::new(),
            pax: Vec::new(),
        }
    }

    /// A directory `name` (the trailing `/` is added), mode 0755.
    pub fn dir(name: &str) -> Self {
        Self::new(
            &format!("{}/", name.trim_end_matches('/')),
            Kind::Dir,
            0o755,
        )
    }

    /// A regular file with `data` and `mode`.
    pub fn file(name: &str, data: &[u8], mode: u32) -> Self {
        let mut e = Self::new(name, Kind::File, mode);
        e.data = data.to_vec();
        e
    }

    /// A symlink `name -> target`.
    pub fn symlink(name: &str, target: &str) -> Self {
        let mut e = Self::new(name, Kind::Symlink, 0o777);
        e.link = target.to_owned();
        e
    }

    /// A hardlink `name` to the archive path `target`.
    pub fn hardlink(name: &str, target: &str) -> Self {
        let mut e = Self::new(name, Kind::Hardlink, 0o644);
        e.link = target.to_owned();
        e
    }

    /// A fifo, mode 0644.
    pub fn fifo(name: &str) -> Self {
        Self::new(name, Kind::Fifo, 0o644)
    }

    /// An empty regular file `name`: a whiteout when its base name starts with `.wh.`.
    pub fn whiteout(name: &str) -> Self {
        Self::file(name, b"", 0o644)
    }
}

/// Copies `value` into a fixed header field, NUL-padded; panics when it does not fit.
fn put(field: &mut [u8], value: &str) {
    assert!(
        value.len() <= field.len(),
        "{value:?} does not fit a {}-byte tar header field",
        field.len()
    );
    field.fill(0);
    field[..value.len()].copy_from_slice(value.as_bytes());
}

/// An uncompressed tar of `entries`, in order, with two zero blocks at the end.
pub fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.pax.is_empty() {
            builder
                .append_pax_extensions(e.pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .expect("append PAX records to an in-memory tar");
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(match e.kind {
            Kind::Dir => tar::EntryType::Directory,
            Kind::File => tar::EntryType::Regular,
            Kind::Symlink => tar::EntryType::Symlink,
            Kind::Hardlink => tar::EntryType::Link,
            Kind::Fifo => tar::EntryType::Fifo,
        });
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(MTIME);
        h.set_size(e.data.len() as u64);
        {
            let old = h.as_old_mut();
            put(&mut old.name, &e.name);
            put(&mut old.linkname, &e.link);
        }
        h.set_cksum();
        builder
            .append(&h, e.data.as_slice())
            .expect("append to an in-memory tar");
    }
    builder.into_inner().expect("finish an in-memory tar")
}

/// Gzip of `data` with no mtime or file name in the header.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc: GzEncoder<Vec<u8>> = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    enc.write_all(data).expect("gzip into memory");
    enc.finish().expect("finish gzip into memory")
}

/// `sha256:<hex>` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A JSON string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The base layer: busybox with applet symlinks, `etc/passwd`, `data/{keep,gone}` and
/// `opq/{old1,old2}`.
pub fn base_layer_entries() -> Vec<RawEntry> {
    let busybox =
        fs::read(BUSYBOX).unwrap_or_else(|e| panic!("cannot read {BUSYBOX} (busybox-static): {e}"));
    let mut entries: Vec<RawEntry> = ["bin", "etc", "tmp", "data", "opq"]
        .into_iter()
        .map(RawEntry::dir)
        .collect();
    entries.push(RawEntry::file("bin/busybox", &busybox, 0o755));
    entries.extend(
        APPLETS
            .iter()
            .map(|a| RawEntry::symlink(&format!("bin/{a}"), "busybox")),
    );
    entries.push(RawEntry::file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    ));
    entries.push(RawEntry::file("data/keep", b"kept from layer 1\n", 0o644));
    entries.push(RawEntry::file("data/gone", b"removed by layer 2\n", 0o600));
    entries.push(RawEntry::file("opq/old1", b"old 1\n", 0o644));
    entries.push(RawEntry::file("opq/old2", b"old 2\n", 0o644));
    entries
}

/// The second layer: whiteout of `data/gone`, opaque `opq/` with `opq/new`, and the special
/// files named by this module's constants.
pub fn upper_layer_entries() -> Vec<RawEntry> {
    let mut suid = RawEntry::file(SUID_FILE, b"#!/bin/sh\necho suid\n", 0o4755);
    suid.uid = 1000;
    suid.gid = 1000;
    let mut xattr = RawEntry::file(XATTR_FILE, b"has an xattr\n", 0o644);
    xattr
        .pax
        .push((format!("SCHILY.xattr.{XATTR_NAME}"), XATTR_VALUE.to_vec()));
    vec![
        RawEntry::dir("data"),
        RawEntry::whiteout("data/.wh.gone"),
        RawEntry::file(HARDLINK_TARGET, b"linked twice\n", 0o640),
        RawEntry::hardlink(HARDLINK, HARDLINK_TARGET),
        RawEntry::symlink(SYMLINK, SYMLINK_TARGET),
        suid,
        xattr,
        RawEntry::fifo(FIFO),
        RawEntry::dir("opq"),
        RawEntry::whiteout("opq/.wh..wh..opq"),
        RawEntry::file("opq/new", b"new in layer 2\n", 0o644),
    ]
}

/// One gzip layer of a [`LayeredImage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `sha256:<hex>` of the gzip blob.
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// Size of the gzip blob.
    pub size: u64,
}

/// The two-layer image on disk.
#[derive(Debug, Clone)]
pub struct LayeredImage {
    /// The full image name.
    pub name: String,
    /// Path of the OCI layout tar.
    pub archive: PathBuf,
    /// `sha256:<hex>` of the image config.
    pub config_digest: String,
    /// Base layer first.
    pub layers: Vec<Layer>,
}

impl LayeredImage {
    /// The chain IDs of the layers, bottom first (the names of the committed unpack snapshots).
    pub fn chain_ids(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for layer in &self.layers {
            let next = match out.last() {
                None => layer.diff_id.clone(),
                Some(prev) => digest_of(format!("{prev} {}", layer.diff_id).as_bytes()),
            };
            out.push(next);
        }
        out
    }
}

/// Builds the image `name` from [`base_layer_entries`] and [`upper_layer_entries`] and writes
/// it as `<dir>/<file-safe name>.tar` in OCI layout (`oci-layout`, `index.json` annotated with
/// the image name, `blobs/sha256/*`). Its unpacked tree has `data/keep`, no `data/gone`, and
/// `opq/` holding only `new`.
pub fn build_layered_image(dir: &Path, name: &str) -> LayeredImage {
    build_image_of_layers(dir, name, &[base_layer_entries(), upper_layer_entries()])
}

/// Builds the image `name` whose layers, bottom first, hold `layers_entries`, and writes it
/// as [`build_layered_image`] does.
pub fn build_image_of_layers(
    dir: &Path,
    name: &str,
    layers_entries: &[Vec<RawEntry>],
) -> LayeredImage {
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut layers = Vec::new();
    for entries in layers_entries {
        let tar = raw_tar(entries);
        let gz = gzip(&tar);
        let layer = Layer {
            digest: digest_of(&gz),
            diff_id: digest_of(&tar),
            size: gz.len() as u64,
        };
        blobs.insert(layer.digest.clone(), gz);
        layers.push(layer);
    }
    let diff_ids: Vec<String> = layers.iter().map(|l| js(&l.diff_id)).collect();
    let config = format!(
        concat!(
            r#"{{"created":"2024-01-01T00:00:00Z","architecture":"amd64","os":"linux","#,
            r#""config":{{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/"}},"#,
            r#""rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#
        ),
        diff_ids.join(",")
    )
    .into_bytes();
    let config_digest = digest_of(&config);
    let layer_descs: Vec<String> = layers
        .iter()
        .map(|l| {
            format!(
                r#"{{"mediaType":{},"digest":{},"size":{}}}"#,
                js(media_type::OCI_LAYER_GZIP),
                js(&l.digest),
                l.size
            )
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":{},"config":{{"mediaType":{},"digest":{},"size":{}}},"layers":[{}]}}"#,
        js(media_type::OCI_MANIFEST),
        js(media_type::OCI_CONFIG),
        js(&config_digest),
        config.len(),
        layer_descs.join(",")
    )
    .into_bytes();
    let manifest_digest = digest_of(&manifest);
    let tag = name
        .rsplit('/')
        .next()
        .and_then(|last| last.rsplit_once(':'))
        .map_or("latest", |(_, t)| t);
    let index = format!(
        concat!(
            r#"{{"schemaVersion":2,"mediaType":{},"manifests":[{{"mediaType":{},"digest":{},"size":{},"#,
            r#""annotations":{{{}:{},{}:{}}},"#,
            r#""platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        ),
        js(media_type::OCI_INDEX),
        js(media_type::OCI_MANIFEST),
        js(&manifest_digest),
        manifest.len(),
        js(annotation::IMAGE_NAME),
        js(name),
        js(annotation::REF_NAME),
        js(tag),
    )
    .into_bytes();
    blobs.insert(config_digest.clone(), config);
    blobs.insert(manifest_digest, manifest);

    let file_name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let archive = dir.join(format!("{file_name}.tar"));
    let mut files = vec![
        RawEntry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644),
        RawEntry::file("index.json", &index, 0o644),
    ];
    for (digest, data) in &blobs {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digests");
        files.push(RawEntry::file(&format!("blobs/sha256/{hex}"), data, 0o644));
    }
    fs::write(&archive, raw_tar(&files))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", archive.display()));
    LayeredImage {
        name: name.to_owned(),
        archive,
        config_digest,
        layers,
    }
}

/// What applying a [`MaliciousLayer`] must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Diff.Apply fails with InvalidArgument and a message naming `entry`.
    Rejected {
        /// The offending entry name, as the archive spells it.
        entry: String,
    },
    /// Diff.Apply succeeds and the file lands at `path`, relative to the unpack root.
    Inside {
        /// Where the file must be, relative to the unpack root.
        path: PathBuf,
    },
}

/// A hand-made single-layer tar that tries to reach outside the unpack root.
#[derive(Debug, Clone)]
pub struct MaliciousLayer {
    /// Short name of the case (`dotdot`, `absolute`, `symlink-parent`, ...).
    pub case: &'static str,
    /// The uncompressed tar.
    pub tar: Vec<u8>,
    /// What Diff.Apply must do with it.
    pub expect: Expect,
    /// Base names of the files the entries try to create; apart from an [`Expect::Inside`]
    /// path, none may exist anywhere after the apply.
    pub sentinels: Vec<&'static str>,
}

/// Hardlink target of the `hardlink` case, relative to the unpack root: two levels up.
pub const OUTSIDE_FILE: &str = "../../outside-file";
/// Whiteout entry of the `whiteout` case: it would delete `victim` next to the unpack root.
pub const VICTIM_WHITEOUT: &str = "../.wh.victim";

/// The malicious layers, aimed at `outside`, an absolute directory (under `/tmp`) that must stay
/// empty:
/// - `dotdot`: `../escape` → rejected;
/// - `absolute`: `<outside>/abs-escape` as an absolute name → taken relative to the root (as
///   containerd does), so it lands inside at `<outside without the leading />/abs-escape`;
/// - `symlink-parent`: `evil -> <outside>` then `evil/pwned` → the symlink resolves as if the
///   root were `/`, so `pwned` lands inside at `<outside without the leading />/pwned`;
/// - `hardlink`: `hardlink-escape` linked to [`OUTSIDE_FILE`] → rejected;
/// - `whiteout`: [`VICTIM_WHITEOUT`] → rejected.
pub fn malicious_layers(outside: &Path) -> Vec<MaliciousLayer> {
    let out = outside.to_str().expect("a UTF-8 outside path");
    assert!(out.starts_with('/'), "{out} is not absolute");
    let inside = PathBuf::from(out.trim_start_matches('/'));
    vec![
        MaliciousLayer {
            case: "dotdot",
            tar: raw_tar(&[RawEntry::file("../escape", b"escaped\n", 0o644)]),
            expect: Expect::Rejected {
                entry: "../escape".into(),
            },
            sentinels: vec!["escape"],
        },
        MaliciousLayer {
            case: "absolute",
            tar: raw_tar(&[RawEntry::file(
                &format!("{out}/abs-escape"),
                b"absolute\n",
                0o644,
            )]),
            expect: Expect::Inside {
                path: inside.join("abs-escape"),
            },
            sentinels: vec!["abs-escape"],
        },
        MaliciousLayer {
            case: "symlink-parent",
            tar: raw_tar(&[
                RawEntry::symlink("evil", out),
                RawEntry::file("evil/pwned", b"pwned\n", 0o644),
            ]),
            expect: Expect::Inside {
                path: inside.join("pwned"),
            },
            sentinels: vec!["pwned"],
        },
        MaliciousLayer {
            case: "hardlink",
            tar: raw_tar(&[RawEntry::hardlink("hardlink-escape", OUTSIDE_FILE)]),
            expect: Expect::Rejected {
                entry: "hardlink-escape".into(),
            },
            sentinels: vec!["hardlink-escape"],
        },
        MaliciousLayer {
            case: "whiteout",
            tar: raw_tar(&[RawEntry::whiteout(VICTIM_WHITEOUT)]),
            expect: Expect::Rejected {
                entry: VICTIM_WHITEOUT.into(),
            },
            sentinels: vec![],
        },
    ]
}

/// What a [`walk_tree`] records of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `d`, `f`, `l`, `p` (fifo), `c`, `b`, `s`.
    pub kind: char,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Size of a regular file.
    pub size: Option<u64>,
    /// Link count of a regular file.
    pub nlink: Option<u64>,
    /// Target of a symlink.
    pub link: Option<PathBuf>,
    /// `sha256:<hex>` of a regular file's contents.
    pub sha256: Option<String>,
    /// Value of [`XATTR_NAME`], when set (not followed through symlinks).
    pub xattr: Option<Vec<u8>>,
}

/// The value of extended attribute `name` of `path` (symlinks not followed), or `None` when it
/// is not set or cannot be read.
pub fn read_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let c_name = CString::new(name).ok()?;
    let mut buf = vec![0_u8; 4096];
    // SAFETY: both strings are NUL-terminated and outlive the call; `buf` is valid for writes of
    // `buf.len()` bytes.
    let n = unsafe {
        nix::libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Records every path under `root` (the root itself as `.`), by path relative to `root`.
/// Panics on any I/O error.
pub fn walk_tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::from(".")];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("cannot lstat {}: {e}", path.display()));
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_file() {
            'f'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_fifo() {
            'p'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else {
            's'
        };
        let mut node = Node {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: None,
            nlink: None,
            link: None,
            sha256: None,
            xattr: read_xattr(&path, XATTR_NAME),
        };
        match kind {
            'f' => {
                let mut data = Vec::new();
                File::open(&path)
                    .and_then(|mut f| f.read_to_end(&mut data))
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                node.size = Some(meta.len());
                node.nlink = Some(meta.nlink());
                node.sha256 = Some(digest_of(&data));
            }
            'l' => {
                node.link = Some(
                    fs::read_link(&path)
                        .unwrap_or_else(|e| panic!("cannot readlink {}: {e}", path.display())),
                );
            }
            'd' => {
                let entries = fs::read_dir(&path)
                    .unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()));
                for entry in entries {
                    let entry =
                        entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()));
                    stack.push(rel.join(entry.file_name()));
                }
            }
            _ => {}
        }
        out.insert(rel, node);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, String)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default();
                (
                    String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                    e.header().entry_type(),
                    link,
                )
            })
            .collect()
    }

    #[test]
    fn raw_names_are_kept_verbatim() {
        let tar = raw_tar(&[
            RawEntry::file("../escape", b"x", 0o644),
            RawEntry::file("/abs", b"y", 0o644),
            RawEntry::hardlink("h", "../../o"),
        ]);
        let got = entries(&tar);
        assert_eq!(got[0].0, "../escape");
        assert_eq!(got[1].0, "/abs");
        assert_eq!(got[2], ("h".into(), tar::EntryType::Link, "../../o".into()));
    }

    #[test]
    fn upper_layer_has_whiteouts_pax_and_special_files() {
        let tar = raw_tar(&upper_layer_entries());
        let mut archive = tar::Archive::new(&tar[..]);
        let mut saw_xattr = false;
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            if path == XATTR_FILE {
                let pax: Vec<(String, Vec<u8>)> = entry
                    .pax_extensions()
                    .unwrap()
                    .unwrap()
                    .map(|p| {
                        let p = p.unwrap();
                        (p.key().unwrap().to_owned(), p.value_bytes().to_vec())
                    })
                    .collect();
                assert_eq!(pax, [(format!("SCHILY.xattr.{XATTR_NAME}"), b"1".to_vec())]);
                saw_xattr = true;
            }
            if path == SUID_FILE {
                assert_eq!(entry.header().mode().unwrap(), 0o4755);
                assert_eq!(entry.header().uid().unwrap(), 1000);
                assert_eq!(entry.header().gid().unwrap(), 1000);
            }
            if path == FIFO {
                assert_eq!(entry.header().entry_type(), tar::EntryType::Fifo);
            }
            let mut sink = Vec::new();
            entry.read_to_end(&mut sink).unwrap();
        }
        assert!(saw_xattr);
        let names: Vec<String> = entries(&tar).into_iter().map(|e| e.0).collect();
        assert!(names.contains(&"data/.wh.gone".to_owned()));
        assert!(names.contains(&"opq/.wh..wh..opq".to_owned()));
    }

    #[test]
    fn image_archive_is_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let img = build_layered_image(dir.path(), "docker.io/library/layered:v1");
        let data = fs::read(&img.archive).unwrap();
        let files: BTreeMap<String, Vec<u8>> = {
            let mut archive = tar::Archive::new(&data[..]);
            archive
                .entries()
                .unwrap()
                .map(|e| {
                    let mut e = e.unwrap();
                    let mut body = Vec::new();
                    e.read_to_end(&mut body).unwrap();
                    (e.path().unwrap().to_string_lossy().into_owned(), body)
                })
                .collect()
        };
        for (path, body) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(digest_of(body), format!("sha256:{hex}"));
            }
        }
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            "v1"
        );
        let config: serde_json::Value =
            serde_json::from_slice(&files[&format!("blobs/sha256/{}", &img.config_digest[7..])])
                .unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][1],
            img.layers[1].diff_id.as_str()
        );
        let chain = img.chain_ids();
        assert_eq!(chain[0], img.layers[0].diff_id);
        assert_eq!(chain.len(), 2);
    }

    #[test]
    fn malicious_layers_aim_at_the_outside_dir() {
        let layers = malicious_layers(Path::new("/tmp/out-x"));
        let cases: Vec<&str> = layers.iter().map(|l| l.case).collect();
        assert_eq!(
            cases,
            [
                "dotdot",
                "absolute",
                "symlink-parent",
                "hardlink",
                "whiteout"
            ]
        );
        assert_eq!(entries(&layers[1].tar)[0].0, "/tmp/out-x/abs-escape");
        assert_eq!(
            layers[2].expect,
            Expect::Inside {
                path: PathBuf::from("tmp/out-x/pwned")
            }
        );
    }

    #[test]
    fn walks_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/f"), b"abc").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("d/l")).unwrap();
        let tree = walk_tree(dir.path());
        assert_eq!(tree.len(), 4);
        assert_eq!(tree[Path::new("./d/f")].size, Some(3));
        assert_eq!(tree[Path::new("./d/l")].link, Some(PathBuf::from("f")));
        assert_eq!(tree[Path::new(".")].kind, 'd');
    }
}
