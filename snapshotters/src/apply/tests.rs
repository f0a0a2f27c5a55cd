//! Tests of layer apply and layer diff on tempdir fixtures; layers are built in memory.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_registry::{Classify, ErrorKind};
use berth_testutil::require_root_for;
use berth_wellknown::media_type;
use filetime::FileTime;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::*;

/// A layer under construction, with full control of the raw names.
struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

impl Layer {
    fn new() -> Self {
        Layer {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: EntryType, mode: u32) -> Header {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        h
    }

    /// Appends with the name and link name written verbatim (no `..` checks).
    fn raw(&mut self, mut h: Header, name: &str, link: &str, data: &[u8]) -> &mut Self {
        {
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname = [0; 100];
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.raw(Self::header(EntryType::Directory, mode), name, "", b"")
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.raw(Self::header(EntryType::Regular, mode), name, "", data)
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(Self::header(EntryType::Symlink, 0o777), name, target, b"")
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(Self::header(EntryType::Link, 0o644), name, target, b"")
    }

    fn finish(&mut self) -> Vec<u8> {
        self.builder.finish().unwrap();
        self.builder.get_ref().clone()
    }
}

/// A scratch dir holding `root/` (the target) and `outside/` (must stay empty).
struct Fixture {
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let root = base.join("root");
        fs::create_dir(&root).unwrap();
        fs::create_dir(base.join("outside")).unwrap();
        Fixture {
            _dir: dir,
            base,
            root,
        }
    }

    fn apply(&self, tar: &[u8], mode: WhiteoutMode) -> Result<ApplyResult, ApplyError> {
        let opts = ApplyOptions {
            whiteout: mode,
            ..Default::default()
        };
        apply_layer(tar, &self.root, &opts)
    }

    /// Nothing was created next to the root or in `outside/`.
    fn assert_nothing_outside(&self) {
        let mut names: Vec<_> = fs::read_dir(&self.base)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["outside", "root"]);
        assert_eq!(fs::read_dir(self.base.join("outside")).unwrap().count(), 0);
        let parent = self.base.parent().unwrap();
        for n in ["escape", "outside-file"] {
            assert!(
                !parent.join(n).exists(),
                "{n} escaped to {}",
                parent.display()
            );
        }
    }
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn applies_files_dirs_links_modes_and_times() {
    let fx = Fixture::new();
    let mut layer = Layer::new();
    layer
        .dir("./", 0o755)
        .dir("bin/", 0o755)
        .file("bin/tool", 0o4755, b"#!/bin/sh\n")
        .dir("tmp/", 0o1777)
        .file("etc/deep/conf", 0o640, b"a=b\n")
        .symlink("usr", "bin");
    // A hardlink header carries the file's mode (Go and GNU tar write it), and apply sets it
    // on the shared inode as containerd does.
    layer.raw(
        Layer::header(EntryType::Link, 0o4755),
        "bin/tool-link",
        "bin/tool",
        b"",
    );
    let mut fifo = Layer::header(EntryType::Fifo, 0o600);
    fifo.set_mtime(1_500_000_000);
    layer.raw(fifo, "run/pipe", "", b"");
    // PAX long name and xattr, the way Go's archive/tar writes them.
    let long = format!("{}/file", "d".repeat(150));
    let mut h = Layer::header(EntryType::Regular, 0o600);
    h.set_mtime(1_234_567_890);
    layer
        .builder
        .append_pax_extensions([
            ("path", long.as_bytes()),
            ("SCHILY.xattr.user.berth", b"yes".as_slice()),
            ("mtime", b"1234567890.5".as_slice()),
        ])
        .unwrap();
    layer.raw(h, "short-name", "", b"long");
    let tar = layer.finish();

    let res = fx.apply(&tar, WhiteoutMode::Remove).unwrap();
    assert_eq!(res.size, tar.len() as u64);
    assert_eq!(
        res.diff_id,
        format!("sha256:{}", hex::encode(Sha256::digest(&tar)))
    );

    let root = &fx.root;
    assert_eq!(fs::read(root.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(mode_of(&root.join("bin/tool")), 0o4755);
    assert_eq!(mode_of(&root.join("tmp")), 0o1777);
    assert_eq!(mode_of(&root.join("etc/deep/conf")), 0o640);
    assert_eq!(mode_of(&root.join("etc/deep")), 0o755);
    assert_eq!(fs::read_link(root.join("usr")).unwrap(), Path::new("bin"));
    let a = fs::metadata(root.join("bin/tool")).unwrap();
    let b = fs::metadata(root.join("bin/tool-link")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
    let pipe = fs::symlink_metadata(root.join("run/pipe")).unwrap();
    assert!(pipe.file_type().is_fifo());
    assert_eq!(pipe.mtime(), 1_500_000_000);
    let longp = root.join(&long);
    assert_eq!(fs::read(&longp).unwrap(), b"long");
    let lm = fs::metadata(&longp).unwrap();
    assert_eq!((lm.mtime(), lm.mtime_nsec()), (1_234_567_890, 500_000_000));
    assert_eq!(
        xattr::get(&longp, "user.berth").unwrap().as_deref(),
        Some(b"yes".as_slice())
    );
    // Directory times survive the creation of their entries.
    assert_eq!(
        fs::metadata(root.join("bin")).unwrap().mtime(),
        1_600_000_000
    );
    assert_eq!(
        fs::metadata(root.join("tmp")).unwrap().mtime(),
        1_600_000_000
    );
    fx.assert_nothing_outside();
}

#[test]
fn applies_ownership_and_devices() {
    if !require_root_for("lchown to other users and mknod") {
        return;
    }
    let fx = Fixture::new();
    let mut layer = Layer::new();
    let mut h = Layer::header(EntryType::Regular, 0o2755);
    h.set_uid(1234);
    h.set_gid(5678);
    layer.raw(h, "owned", "", b"x");
    let mut l = Layer::header(EntryType::Symlink, 0o777);
    l.set_uid(42);
    l.set_gid(43);
    layer.raw(l, "link", "owned", b"");
    let mut c = Layer::header(EntryType::Char, 0o666);
    c.set_device_major(1).unwrap();
    c.set_device_minor(3).unwrap();
    layer.raw(c, "dev/null", "", b"");
    let tar = layer.finish();
    fx.apply(&tar, WhiteoutMode::Remove).unwrap();

    let m = fs::symlink_metadata(fx.root.join("owned")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 5678, 0o2755));
    let m = fs::symlink_metadata(fx.root.join("link")).unwrap();
    assert_eq!((m.uid(), m.gid()), (42, 43));
    let m = fs::symlink_metadata(fx.root.join("dev/null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(m.mode() & 0o7777, 0o666);
}

/// A lower layer on disk: `a`, `keep`, `dir/{old,sub/x}`.
fn lower_tree(root: &Path) {
    fs::write(root.join("a"), b"a").unwrap();
    fs::write(root.join("keep"), b"k").unwrap();
    fs::create_dir_all(root.join("dir/sub")).unwrap();
    fs::write(root.join("dir/old"), b"o").unwrap();
    fs::write(root.join("dir/sub/x"), b"x").unwrap();
}

fn whiteout_layer() -> Vec<u8> {
    let mut layer = Layer::new();
    layer
        .file(".wh.a", 0o644, b"")
        .file(".wh.missing", 0o644, b"")
        .dir("dir/", 0o755)
        // Written before the opaque marker: the marker must keep it.
        .file("dir/new", 0o644, b"n")
        .file("dir/.wh..wh..opq", 0o644, b"");
    layer.finish()
}

#[test]
fn whiteouts_remove_paths_and_opaque_keeps_this_layer() {
    let fx = Fixture::new();
    lower_tree(&fx.root);
    fx.apply(&whiteout_layer(), WhiteoutMode::Remove).unwrap();
    assert!(!fx.root.join("a").exists());
    assert!(fx.root.join("keep").exists());
    assert!(!fx.root.join(".wh.a").exists());
    let mut names: Vec<_> = fs::read_dir(fx.root.join("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["new"]);
    fx.assert_nothing_outside();
}

#[test]
fn whiteouts_in_overlay_mode_become_devices_and_xattrs() {
    if !require_root_for("overlay whiteouts (mknod, trusted.* xattrs)") {
        return;
    }
    let fx = Fixture::new();
    fx.apply(&whiteout_layer(), WhiteoutMode::Overlay).unwrap();
    let m = fs::symlink_metadata(fx.root.join("a")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), 0);
    assert_eq!((m.uid(), m.gid()), (0, 0));
    assert_eq!(
        xattr::get(fx.root.join("dir"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(b"y".as_slice())
    );
    assert_eq!(fs::read(fx.root.join("dir/new")).unwrap(), b"n");
    assert!(!fx.root.join("dir/.wh..wh..opq").exists());
}

#[test]
fn overlay_mode_copies_parent_directories_from_lowers() {
    let fx = Fixture::new();
    let lower = fx.base.join("lower");
    fs::create_dir_all(lower.join("etc")).unwrap();
    fs::set_permissions(lower.join("etc"), fs::Permissions::from_mode(0o710)).unwrap();
    let mut layer = Layer::new();
    layer.file("etc/conf", 0o644, b"c");
    let opts = ApplyOptions {
        whiteout: WhiteoutMode::Overlay,
        parents: vec![lower.clone()],
    };
    apply_layer(layer.finish().as_slice(), &fx.root, &opts).unwrap();
    assert_eq!(mode_of(&fx.root.join("etc")), 0o710);
    fs::remove_dir_all(lower).unwrap();
}

/// Applies `tar` and checks that it is refused as unsafe, naming `entry`, and that nothing
/// appeared outside the root.
fn assert_unsafe(tar: &[u8], entry: &str) {
    for mode in [WhiteoutMode::Remove, WhiteoutMode::Overlay] {
        let fx = Fixture::new();
        let err = fx.apply(tar, mode).unwrap_err();
        match &err {
            ApplyError::Unsafe { entry: e, .. } => assert_eq!(e, entry, "{err}"),
            other => panic!("expected Unsafe for {entry}, got {other}"),
        }
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains(entry));
        fx.assert_nothing_outside();
    }
}

#[test]
fn refuses_names_that_climb_out() {
    assert_unsafe(
        &Layer::new().file("../escape", 0o644, b"x").finish(),
        "../escape",
    );
    assert_unsafe(
        &Layer::new().file("/abs/../../escape", 0o644, b"x").finish(),
        "/abs/../../escape",
    );
    assert_unsafe(
        &Layer::new().dir("a/../../escape/", 0o755).finish(),
        "a/../../escape/",
    );
    assert_unsafe(
        &Layer::new().symlink("../escape", "/etc/passwd").finish(),
        "../escape",
    );
}

#[test]
fn refuses_hardlinks_that_climb_out() {
    assert_unsafe(
        &Layer::new().hardlink("h", "../../outside-file").finish(),
        "h",
    );
    assert_unsafe(&Layer::new().hardlink("h", "../outside/x").finish(), "h");
    assert_unsafe(&Layer::new().hardlink("h", "./").finish(), "h");
}

#[test]
fn refuses_whiteouts_that_climb_out() {
    assert_unsafe(&Layer::new().file(".wh...", 0o644, b"").finish(), ".wh...");
    assert_unsafe(
        &Layer::new().file("dir/.wh..", 0o644, b"").finish(),
        "dir/.wh..",
    );
    assert_unsafe(&Layer::new().file(".wh.", 0o644, b"").finish(), ".wh.");
    assert_unsafe(
        &Layer::new().file("../.wh.x", 0o644, b"").finish(),
        "../.wh.x",
    );
    assert_unsafe(
        &Layer::new().file("../.wh..wh..opq", 0o644, b"").finish(),
        "../.wh..wh..opq",
    );
}

#[test]
fn whiteout_of_the_root_itself_is_refused_and_root_survives() {
    let fx = Fixture::new();
    fs::write(fx.root.join("f"), b"f").unwrap();
    fs::write(fx.base.join("outside/guard"), b"g").unwrap();
    let err = fx
        .apply(
            &Layer::new().file(".wh...", 0o644, b"").finish(),
            WhiteoutMode::Remove,
        )
        .unwrap_err();
    assert!(matches!(err, ApplyError::Unsafe { .. }), "{err}");
    assert!(fx.root.join("f").exists());
    assert!(fx.base.join("outside/guard").exists());
}

#[test]
fn symlinked_parents_resolve_inside_the_root() {
    // containerd `fs.RootPath`: a symlink met in a parent component is followed as if the
    // root were `/`, so `evil -> /` and `evil -> ../../..` both lead back into the root.
    for target in ["/", "../../..", "../outside", "/../../outside"] {
        let fx = Fixture::new();
        let tar = Layer::new()
            .symlink("evil", target)
            .file("evil/etc/passwd", 0o644, b"root::0:0::/:/bin/sh\n")
            .hardlink("evil/etc/shadow", "evil/etc/passwd")
            .file("evil/.wh.keep", 0o644, b"")
            .finish();
        fs::write(fx.base.join("outside/keep"), b"").unwrap();
        fx.apply(&tar, WhiteoutMode::Remove).unwrap();
        fs::remove_file(fx.base.join("outside/keep")).unwrap();
        fx.assert_nothing_outside();
        let inside = if target.ends_with("outside") {
            fx.root.join("outside/etc/passwd")
        } else {
            fx.root.join("etc/passwd")
        };
        assert!(inside.is_file(), "{target}: {} missing", inside.display());
        assert_eq!(
            fs::read_link(fx.root.join("evil")).unwrap(),
            Path::new(target)
        );
    }
}

#[test]
fn metadata_never_follows_symlinks_out() {
    // A hardlink to a symlink shares the symlink's inode: chmod through it would follow the
    // link to the host. A directory replaced by a symlink to the host must not get its times
    // set through the link either.
    let fx = Fixture::new();
    let victim = fx.base.join("outside/victim");
    let victim_dir = fx.base.join("outside/dir");
    fs::write(&victim, b"host").unwrap();
    fs::create_dir(&victim_dir).unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    set_time(&victim_dir, 1000);
    let tar = Layer::new()
        .symlink("evil", victim.to_str().unwrap())
        .raw(Layer::header(EntryType::Link, 0o4777), "h", "evil", b"")
        .dir("d/", 0o755)
        .dir("d/sub/", 0o755)
        .raw(
            Layer::header(EntryType::Symlink, 0o777),
            "d",
            victim_dir.parent().unwrap().to_str().unwrap(),
            b"",
        )
        .finish();
    fx.apply(&tar, WhiteoutMode::Remove).unwrap();
    assert_eq!(mode_of(&victim), 0o600);
    assert_eq!(fs::read(&victim).unwrap(), b"host");
    assert_eq!(fs::metadata(&victim_dir).unwrap().mtime(), 1000);
    assert!(fs::symlink_metadata(fx.root.join("h"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn existing_symlink_in_root_is_not_followed_out() {
    // A lower layer already holds `lib -> /outside-abs`; writing `lib/x` must stay inside, and
    // replacing `lib` itself replaces the link, not its target.
    let fx = Fixture::new();
    symlink(fx.base.join("outside"), fx.root.join("lib")).unwrap();
    symlink(fx.base.join("outside"), fx.root.join("lib2")).unwrap();
    let tar = Layer::new()
        .file("lib/x", 0o644, b"x")
        .file("lib2", 0o644, b"file now")
        .finish();
    fx.apply(&tar, WhiteoutMode::Remove).unwrap();
    fx.assert_nothing_outside();
    assert_eq!(fs::read(fx.root.join("lib2")).unwrap(), b"file now");
    let resolved = resolve_in_root(&fx.root, Path::new("lib/x")).unwrap();
    assert!(resolved.starts_with(&fx.root));
    assert!(resolved.is_file());
}

#[test]
fn media_types_map_to_compression() {
    let c = |m: &str| media_type_compression(m).unwrap();
    assert_eq!(c(media_type::OCI_LAYER), Compression::None);
    assert_eq!(c(media_type::OCI_LAYER_GZIP), Compression::Gzip);
    assert_eq!(c(media_type::OCI_LAYER_ZSTD), Compression::Zstd);
    assert_eq!(
        c("application/vnd.docker.image.rootfs.diff.tar.gzip"),
        Compression::Gzip
    );
    assert_eq!(
        c("application/vnd.docker.image.rootfs.diff.tar"),
        Compression::Detect
    );
    let err = media_type_compression("application/json").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotImplemented);
    assert!(err.to_string().contains("unsupported media type"));
    assert!(media_type_compression("application/vnd.oci.image.layer.v1.tar+encrypted").is_err());
    assert_eq!(detect_compression(&[0x1f, 0x8b, 8]), Compression::Gzip);
    assert_eq!(
        detect_compression(&[0x28, 0xb5, 0x2f, 0xfd]),
        Compression::Zstd
    );
    assert_eq!(detect_compression(b"file"), Compression::None);
}

const T: i64 = 1_700_000_000;

fn set_time(p: &Path, secs: i64) {
    filetime::set_symlink_file_times(
        p,
        FileTime::from_unix_time(secs, 0),
        FileTime::from_unix_time(secs, 0),
    )
    .unwrap();
}

/// Builds the common base of both trees, with fixed times.
fn base_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/conf.d")).unwrap();
    fs::create_dir_all(root.join("gone/deeper")).unwrap();
    fs::create_dir_all(root.join("becomes-file")).unwrap();
    fs::write(root.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    fs::write(root.join("etc/conf.d/a"), b"a").unwrap();
    fs::write(root.join("etc/removed"), b"bye").unwrap();
    fs::write(root.join("gone/deeper/f"), b"f").unwrap();
    fs::write(root.join("mode"), b"m").unwrap();
    fs::write(root.join("becomes-dir"), b"file").unwrap();
    symlink("etc/hosts", root.join("link")).unwrap();
}

/// Sets every time in the tree to `T` (children first).
fn fix_times(root: &Path) {
    fn walk(p: &Path) {
        let m = fs::symlink_metadata(p).unwrap();
        if m.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path());
            }
        }
        set_time(p, T);
    }
    walk(root);
}

fn upper_tree(root: &Path) {
    base_tree(root);
    fix_times(root);
    fs::write(root.join("etc/hosts"), b"127.0.0.1 localhost berth\n").unwrap();
    set_time(&root.join("etc/hosts"), T + 5);
    fs::remove_file(root.join("etc/removed")).unwrap();
    fs::remove_dir_all(root.join("gone")).unwrap();
    fs::remove_dir(root.join("becomes-file")).unwrap();
    fs::write(root.join("becomes-file"), b"now a file").unwrap();
    fs::remove_file(root.join("becomes-dir")).unwrap();
    fs::create_dir(root.join("becomes-dir")).unwrap();
    fs::write(root.join("becomes-dir/child"), b"c").unwrap();
    fs::set_permissions(root.join("mode"), fs::Permissions::from_mode(0o4711)).unwrap();
    fs::create_dir_all(root.join("new/nested")).unwrap();
    fs::write(root.join("new/nested/file"), b"new").unwrap();
    fs::hard_link(root.join("new/nested/file"), root.join("new/hardlink")).unwrap();
    symlink("/etc/hosts", root.join("etc/abs-link")).unwrap();
    xattr::set(root.join("etc/conf.d/a"), "user.berth", b"1").unwrap();
    // Same size and time, other bytes: only a content comparison sees it.
    fs::write(root.join("etc/conf.d/a"), b"b").unwrap();
    set_time(&root.join("etc/conf.d/a"), T);
    for d in ["etc", "etc/conf.d", "becomes-dir", "new", "new/nested", ""] {
        set_time(&root.join(d), T + 10);
    }
}

/// Type, mode, owner, size, mtime, content, link target and xattrs of every path, by path.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let m = fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let ft = m.file_type();
        let mut attrs: Vec<_> = xattr::list(p)
            .unwrap()
            .map(|k| (k.clone(), xattr::get(p, &k).unwrap()))
            .collect();
        attrs.sort();
        let detail = if ft.is_dir() {
            "dir".to_owned()
        } else if ft.is_symlink() {
            format!("link {:?}", fs::read_link(p).unwrap())
        } else {
            format!("file {:?}", fs::read(p).unwrap())
        };
        // The root's own times are not part of a layer.
        let mtime = if rel.as_os_str().is_empty() {
            0
        } else {
            m.mtime()
        };
        out.insert(
            rel,
            format!(
                "{detail} mode={:o} uid={} gid={} mtime={mtime} xattrs={attrs:?}",
                m.mode(),
                m.uid(),
                m.gid()
            ),
        );
        if ft.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                walk(root, &e.unwrap().path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn write_diff_round_trips_onto_lower() {
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().join("lower");
    let upper = dir.path().join("upper");
    let target = dir.path().join("target");
    for d in [&lower, &upper, &target] {
        fs::create_dir(d).unwrap();
    }
    base_tree(&lower);
    fix_times(&lower);
    base_tree(&target);
    fix_times(&target);
    upper_tree(&upper);

    let mut tar = Vec::new();
    let res = write_diff(&lower, &upper, &mut tar).unwrap();
    assert_eq!(res.size, tar.len() as u64);
    assert_eq!(
        res.diff_id,
        format!("sha256:{}", hex::encode(Sha256::digest(&tar)))
    );

    // Deterministic: the same trees give the same bytes.
    let mut again = Vec::new();
    write_diff(&lower, &upper, &mut again).unwrap();
    assert_eq!(tar, again);

    // The whiteouts are there, and unchanged files are not.
    let names: Vec<String> = tar::Archive::new(tar.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "etc/.wh.removed",
        ".wh.gone",
        "becomes-file",
        "new/hardlink",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
    for absent in ["link", "etc/conf.d/../hosts", "gone/deeper/f"] {
        assert!(!names.iter().any(|n| n == absent), "{absent} in {names:?}");
    }

    let applied = apply_layer(tar.as_slice(), &target, &ApplyOptions::default()).unwrap();
    assert_eq!(applied.diff_id, res.diff_id);
    assert_eq!(snapshot(&target), snapshot(&upper));
    let a = fs::metadata(target.join("new/nested/file")).unwrap();
    let b = fs::metadata(target.join("new/hardlink")).unwrap();
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn write_diff_of_identical_trees_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = (dir.path().join("l"), dir.path().join("u"));
    fs::create_dir(&lower).unwrap();
    fs::create_dir(&upper).unwrap();
    base_tree(&lower);
    fix_times(&lower);
    base_tree(&upper);
    fix_times(&upper);
    let mut tar = Vec::new();
    write_diff(&lower, &upper, &mut tar).unwrap();
    assert_eq!(
        tar::Archive::new(tar.as_slice()).entries().unwrap().count(),
        0
    );
}
