//! Paths inside a root: lexical cleaning of archive names and symlink resolution that can never
//! leave the root (containerd `continuity/fs.RootPath`).

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed while resolving one path before giving up, as Linux's `MAXSYMLINKS`
/// bounds a lookup (containerd allows 255).
const MAX_SYMLINKS: usize = 255;

/// The normal components of an archive entry name after lexical cleaning (`.` dropped, `..`
/// applied, a leading `/` meaning the root). `Err` with the reason when `..` climbs above the
/// root. An empty result names the root itself.
pub(crate) fn clean_name(name: &[u8]) -> Result<Vec<OsString>, &'static str> {
    if name.contains(&0) {
        return Err("name contains a NUL byte");
    }
    let mut out: Vec<OsString> = Vec::new();
    for part in name.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("path escapes the root");
                }
            }
            p => out.push(OsStr::from_bytes(p).to_owned()),
        }
    }
    Ok(out)
}

/// One step of a pending lookup.
enum Step {
    Up,
    Name(OsString),
}

fn steps(path: &Path) -> impl DoubleEndedIterator<Item = Step> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(Step::Name(n.to_owned())),
        Component::ParentDir => Some(Step::Up),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

/// Resolves `rel` inside `root`, following every symlink on the way (the last component too)
/// as if `root` were `/`: an absolute target restarts at `root` and `..` stops at `root`, so the
/// result is always `root` or below it, whatever the tree holds. Components that do not exist
/// are taken as they are. Fails only on a symlink loop or a host error.
pub fn resolve_in_root(root: &Path, rel: &Path) -> io::Result<PathBuf> {
    let mut current = root.to_path_buf();
    let mut depth = 0usize;
    let mut pending: VecDeque<Step> = steps(rel).collect();
    let mut followed = 0usize;
    while let Some(step) = pending.pop_front() {
        let name = match step {
            Step::Up => {
                if depth > 0 {
                    current.pop();
                    depth -= 1;
                }
                continue;
            }
            Step::Name(n) => n,
        };
        current.push(&name);
        let meta = match std::fs::symlink_metadata(&current) {
            Ok(m) => m,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(nix::libc::ENOTDIR) =>
            {
                depth += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        if !meta.file_type().is_symlink() {
            depth += 1;
            continue;
        }
        followed += 1;
        if followed > MAX_SYMLINKS {
            return Err(io::Error::from_raw_os_error(nix::libc::ELOOP));
        }
        let target = std::fs::read_link(&current)?;
        current.pop();
        if target.is_absolute() {
            current = root.to_path_buf();
            depth = 0;
        }
        for s in steps(&target).rev() {
            pending.push_front(s);
        }
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn names(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn clean_name_normalizes_and_refuses_escapes() {
        assert_eq!(clean_name(b"./a/b/").unwrap(), names(&["a", "b"]));
        assert_eq!(clean_name(b"/a/../b").unwrap(), names(&["b"]));
        assert_eq!(clean_name(b"./").unwrap(), names(&[]));
        assert!(clean_name(b"../x").is_err());
        assert!(clean_name(b"/abs/../../x").is_err());
        assert!(clean_name(b"a/../../x").is_err());
    }

    #[test]
    fn resolve_stays_in_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("/", root.join("abs")).unwrap();
        symlink("../../../..", root.join("usr/up")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("/usr/lib", root.join("abslib")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();

        let r = |p: &str| resolve_in_root(&root, Path::new(p)).unwrap();
        assert_eq!(r("abs/etc"), root.join("etc"));
        assert_eq!(r("usr/up/etc"), root.join("etc"));
        assert_eq!(r("lib/x"), root.join("usr/lib/x"));
        assert_eq!(r("abslib/x"), root.join("usr/lib/x"));
        assert_eq!(r("../../x"), root.join("x"));
        assert_eq!(r("missing/../y"), root.join("y"));
        assert!(resolve_in_root(&root, Path::new("loop1/x")).is_err());
    }
}
