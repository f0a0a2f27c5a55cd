//! Building and reading layers through real mounts (containerd `testsuite/helpers.go`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs;
use std::path::Path;

use berth_registry::ErrorKind;

use crate::error::SnapshotError;
use crate::mount::TempMount;
use crate::snapshotter::{Mount, Snapshotter};

/// A label map from pairs.
pub(super) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Asserts that `result` failed with `kind`.
pub(super) fn expect_kind<T: Debug>(result: Result<T, SnapshotError>, kind: ErrorKind, what: &str) {
    match result {
        Ok(v) => panic!("{what}: expected {kind}, got Ok({v:?})"),
        Err(e) => assert_eq!(e.kind(), kind, "{what}: wrong error class for {e}"),
    }
}

/// Mounts `mounts`, runs `f` on the mount point, unmounts.
pub(super) fn with_mounted<R>(mounts: &[Mount], f: impl FnOnce(&Path) -> R) -> R {
    let m = TempMount::new(mounts).unwrap_or_else(|e| panic!("mount {mounts:?}: {e}"));
    let out = f(m.path());
    m.close().expect("unmount snapshot");
    out
}

/// Writes `files` (path, content) under `dir`, creating parent directories.
pub(super) fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent directories");
        }
        fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// Prepares `key` on `parent`, writes `files` through its mounts and commits it as `name`.
pub(super) fn layer(
    sn: &dyn Snapshotter,
    key: &str,
    parent: Option<&str>,
    name: &str,
    files: &[(&str, &str)],
) {
    let mounts = sn
        .prepare(key, parent, BTreeMap::new())
        .unwrap_or_else(|e| panic!("prepare {key}: {e}"));
    with_mounted(&mounts, |dir| write_files(dir, files));
    sn.commit(name, key, BTreeMap::new())
        .unwrap_or_else(|e| panic!("commit {key} as {name}: {e}"));
}

/// Asserts the content of `path` under `dir`.
pub(super) fn assert_file(dir: &Path, path: &str, content: &str) {
    let got = fs::read_to_string(dir.join(path))
        .unwrap_or_else(|e| panic!("read {path} in {}: {e}", dir.display()));
    assert_eq!(got, content, "content of {path}");
}

/// Asserts that `path` does not exist under `dir`.
pub(super) fn assert_absent(dir: &Path, path: &str) {
    assert!(
        fs::symlink_metadata(dir.join(path)).is_err(),
        "{path} should not exist in {}",
        dir.display()
    );
}

/// Views `parent` under a throwaway key, runs `f` on the mounted view, removes the view.
pub(super) fn read_view<R>(sn: &dyn Snapshotter, parent: &str, f: impl FnOnce(&Path) -> R) -> R {
    let key = format!("view-of-{parent}");
    let mounts = sn
        .view(&key, Some(parent), BTreeMap::new())
        .unwrap_or_else(|e| panic!("view {parent}: {e}"));
    let out = with_mounted(&mounts, f);
    sn.remove(&key).expect("remove view");
    out
}
