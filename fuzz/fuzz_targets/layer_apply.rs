//! Layer apply (`berth_snapshotters::apply::apply_layer`): an image layer is an untrusted tar
//! stream unpacked as root, so no entry may write, link, remove or change anything outside the
//! target directory, whatever its names, links, whiteouts or headers say.
//!
//! Input: an uncompressed tar stream. Each input is applied twice onto a small prepared tree
//! (whiteouts removing, then overlay whiteouts over a lower directory); the tree holds symlinks
//! that point outside it, relative and absolute, so that escapes are a few bytes away. After
//! each apply everything beside the target (a victim file, the lower directory) must be exactly
//! as it was.
//!
//! The target runs as root on the host, so it first shuts itself in: a private mount namespace
//! where every mount is read-only, nosuid and (but /dev) nodev, the work directory is a small
//! nodev tmpfs at [`BASE`] (device nodes made there cannot be opened), and only libFuzzer's own
//! corpus and artifact directories are writable again.

#![no_main]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use berth_snapshotters::apply::{apply_layer, ApplyOptions, WhiteoutMode};
use libfuzzer_sys::fuzz_target;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Where the tmpfs holding the trees is mounted (inside the private namespace only; on the host
/// it stays an empty directory). A fixed path, so that corpus entries can name it.
const BASE: &str = "/tmp/berth-fuzz-apply";

/// The state of everything outside the target: path → what it is.
type Outside = BTreeMap<PathBuf, String>;

/// The directories of one run: the target, the lower of the overlay apply, the victim.
struct Trees {
    root: PathBuf,
    lower: PathBuf,
    outside: Outside,
}

/// Decodes the octal escapes (`\040` for a space) of a `/proc/self/mountinfo` path.
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let text = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(<OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// The directories libFuzzer writes to, from its command line: corpus directories, the
/// artifact prefix's directory, or the working directory when no prefix is given.
fn libfuzzer_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut artifacts = None;
    for arg in std::env::args().skip(1) {
        if let Some(prefix) = arg
            .strip_prefix("-artifact_prefix=")
            .or_else(|| arg.strip_prefix("-exact_artifact_path="))
        {
            let p = Path::new(prefix);
            let dir = if prefix.ends_with('/') {
                p
            } else {
                p.parent().unwrap_or(Path::new("."))
            };
            artifacts = Some(if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir.to_owned()
            });
        } else if !arg.starts_with('-') && Path::new(&arg).is_dir() {
            dirs.push(PathBuf::from(arg));
        }
    }
    dirs.push(artifacts.unwrap_or_else(|| PathBuf::from(".")));
    dirs.into_iter()
        .filter_map(|d| fs::canonicalize(d).ok())
        .collect()
}

/// Shuts this process in a mount namespace where only [`BASE`] and libFuzzer's directories are
/// writable. Panics (there is no safe way on) when that cannot be done, e.g. without root.
fn sandbox() {
    fs::create_dir_all(BASE).unwrap_or_else(|e| panic!("create {BASE}: {e}"));
    let writable = libfuzzer_dirs();
    unshare(CloneFlags::CLONE_NEWNS).unwrap_or_else(|e| {
        panic!("unshare(CLONE_NEWNS): {e} (the layer_apply target needs root)")
    });
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap_or_else(|e| panic!("make / private: {e}"));
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_else(|e| panic!("read /proc/self/mountinfo: {e}"));
    for line in mountinfo.lines() {
        let Some(field) = line.split(' ').nth(4) else {
            continue;
        };
        let point = unescape(field);
        let mut flags =
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID;
        // /dev/null and friends must stay usable.
        if !point.starts_with("/dev") {
            flags |= MsFlags::MS_NODEV;
        }
        let done = mount(None::<&str>, &point, None::<&str>, flags, None::<&str>);
        if point == Path::new("/") {
            done.unwrap_or_else(|e| panic!("remount / read-only: {e}"));
        }
    }
    mount(
        Some("tmpfs"),
        BASE,
        Some("tmpfs"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        Some("size=64m,mode=0755"),
    )
    .unwrap_or_else(|e| panic!("mount a tmpfs on {BASE}: {e}"));
    for dir in writable {
        let bound = mount(
            Some(&dir),
            &dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .and_then(|()| {
            mount(
                None::<&str>,
                &dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                None::<&str>,
            )
        });
        bound.unwrap_or_else(|e| panic!("make {} writable: {e}", dir.display()));
    }
}

/// Records every entry under `dir` (not following symlinks) into `out`, skipping `skip`.
fn record(dir: &Path, skip: &Path, out: &mut Outside) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path == skip {
            continue;
        }
        let m = fs::symlink_metadata(&path).expect("lstat an outside entry");
        let mut what = format!(
            "mode={:o} uid={} gid={} nlink={} size={}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.nlink(),
            m.len()
        );
        let xattrs: Vec<OsString> = xattr::list(&path)
            .map(Iterator::collect)
            .unwrap_or_default();
        what.push_str(&format!(" xattrs={xattrs:?}"));
        if m.file_type().is_symlink() {
            what.push_str(&format!(
                " -> {:?}",
                fs::read_link(&path).expect("readlink")
            ));
        } else if m.is_file() {
            what.push_str(&format!(
                " mtime={}.{} data={:?}",
                m.mtime(),
                m.mtime_nsec(),
                fs::read(&path).expect("read an outside file")
            ));
        }
        out.insert(path.clone(), what);
        if m.is_dir() {
            record(&path, skip, out);
        }
    }
}

/// The trees, made once per process.
fn trees() -> &'static Trees {
    static TREES: OnceLock<Trees> = OnceLock::new();
    TREES.get_or_init(|| {
        sandbox();
        let base = Path::new(BASE);
        let victim = base.join("victim");
        fs::create_dir(&victim).expect("mkdir victim");
        fs::write(victim.join("file"), b"must not change\n").expect("write the victim file");
        let lower = base.join("lower");
        for (dir, mode) in [("etc", 0o700), ("bin", 0o755), ("deep/a/b", 0o711)] {
            let path = lower.join(dir);
            fs::create_dir_all(&path).expect("mkdir in lower");
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod lower");
        }
        std::os::unix::fs::lchown(lower.join("etc"), Some(1), Some(2)).expect("chown lower");
        xattr::set(lower.join("bin"), "user.fuzz", b"1").ok();
        fs::write(lower.join("etc/passwd"), b"lower\n").expect("write in lower");
        let root = base.join("root");
        let mut outside = Outside::new();
        record(base, &root, &mut outside);
        Trees {
            root,
            lower,
            outside,
        }
    })
}

/// Makes a fresh target tree: a few directories and files, and symlinks that point outside it.
fn prepare(root: &Path) {
    if root.exists() {
        fs::remove_dir_all(root).expect("clear the target");
    }
    fs::create_dir_all(root.join("bin")).expect("mkdir bin");
    fs::create_dir_all(root.join("etc/sub")).expect("mkdir etc/sub");
    fs::write(root.join("bin/busybox"), b"busybox").expect("write busybox");
    symlink("busybox", root.join("bin/sh")).expect("symlink sh");
    fs::write(root.join("etc/passwd"), b"root:x:0:0::/:/bin/sh\n").expect("write passwd");
    symlink("../victim", root.join("up")).expect("symlink up");
    symlink(format!("{BASE}/victim"), root.join("abs")).expect("symlink abs");
    symlink("/", root.join("slash")).expect("symlink slash");
    symlink("loop", root.join("loop")).expect("symlink loop");
}

/// Panics naming what changed outside the target.
fn check_outside(trees: &Trees, mode: &str) {
    let mut now = Outside::new();
    record(Path::new(BASE), &trees.root, &mut now);
    if now != trees.outside {
        let mut diff = String::new();
        for (path, was) in &trees.outside {
            match now.get(path) {
                None => diff.push_str(&format!("\n  removed {}: {was}", path.display())),
                Some(is) if is != was => {
                    diff.push_str(&format!("\n  changed {}: {was} => {is}", path.display()))
                }
                Some(_) => {}
            }
        }
        for (path, is) in &now {
            if !trees.outside.contains_key(path) {
                diff.push_str(&format!("\n  created {}: {is}", path.display()));
            }
        }
        panic!("apply ({mode}) changed something outside the target:{diff}");
    }
}

fuzz_target!(|data: &[u8]| {
    let trees = trees();
    prepare(&trees.root);
    let removing = ApplyOptions::default();
    if let Err(e) = apply_layer(data, &trees.root, &removing) {
        let _ = e.to_string();
    }
    check_outside(trees, "remove whiteouts");

    prepare(&trees.root);
    let overlay = ApplyOptions {
        whiteout: WhiteoutMode::Overlay,
        parents: vec![trees.lower.clone()],
    };
    if let Err(e) = apply_layer(data, &trees.root, &overlay) {
        let _ = e.to_string();
    }
    check_outside(trees, "overlay whiteouts");
});
