//! The checks themselves (containerd `testsuite.go`, `issues.go`). Each panics on failure.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

use berth_filters::{parse, Filter};
use berth_registry::ErrorKind;

use super::helpers::{
    assert_absent, assert_file, expect_kind, labels, layer, read_view, with_mounted, write_files,
};
use super::Harness;
use crate::snapshotter::{Info, Kind};

/// Two layers; a view of the top shows both, with the top's changes winning.
pub(super) fn basic(h: &mut Harness<'_>) {
    let sn = h.sn();
    layer(
        sn,
        "base-key",
        None,
        "base",
        &[("a", "base a"), ("dir/b", "b")],
    );
    let mounts = sn
        .prepare("next-key", Some("base"), BTreeMap::new())
        .expect("prepare next");
    assert_eq!(sn.mounts("next-key").expect("mounts of next"), mounts);
    with_mounted(&mounts, |dir| {
        assert_file(dir, "a", "base a");
        assert_file(dir, "dir/b", "b");
        write_files(dir, &[("a", "next a"), ("c", "c")]);
    });
    sn.commit("next", "next-key", BTreeMap::new())
        .expect("commit next");
    let info = sn.stat("next").expect("stat next");
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(info.parent.as_deref(), Some("base"));
    read_view(sn, "next", |dir| {
        assert_file(dir, "a", "next a");
        assert_file(dir, "dir/b", "b");
        assert_file(dir, "c", "c");
    });
    read_view(sn, "base", |dir| {
        assert_file(dir, "a", "base a");
        assert_absent(dir, "c");
    });
    sn.remove("next").expect("remove next");
    sn.remove("base").expect("remove base");
}

/// Stat of an active snapshot reports its key, kind, parent and labels.
pub(super) fn stat_active(h: &mut Harness<'_>) {
    let sn = h.sn();
    sn.prepare("base-key", None, BTreeMap::new())
        .expect("prepare base");
    sn.commit("base", "base-key", BTreeMap::new())
        .expect("commit base");
    let l = labels(&[("containerd.io/gc.root", "now")]);
    sn.prepare("active", Some("base"), l.clone())
        .expect("prepare active");
    let info = sn.stat("active").expect("stat active");
    assert_eq!(info.name, "active");
    assert_eq!(info.kind, Kind::Active);
    assert_eq!(info.parent.as_deref(), Some("base"));
    assert_eq!(info.labels, l);
    assert!(info.updated_at >= info.created_at);
    expect_kind(sn.stat("missing"), ErrorKind::NotFound, "stat missing");
}

/// After commit the name stats as committed, the key is gone, and mounts are refused.
pub(super) fn stat_committed(h: &mut Harness<'_>) {
    let sn = h.sn();
    sn.prepare("key", None, BTreeMap::new()).expect("prepare");
    sn.commit("name", "key", labels(&[("l", "v")]))
        .expect("commit");
    let info = sn.stat("name").expect("stat committed");
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(info.parent, None);
    assert_eq!(info.labels, labels(&[("l", "v")]));
    expect_kind(sn.stat("key"), ErrorKind::NotFound, "stat committed key");
    expect_kind(
        sn.mounts("name"),
        ErrorKind::FailedPrecondition,
        "mounts of committed",
    );
    expect_kind(
        sn.commit("again", "name", BTreeMap::new()),
        ErrorKind::FailedPrecondition,
        "commit of a committed name as key",
    );
}

/// Three layers each adding a file: the top sees all of them.
pub(super) fn transitivity(h: &mut Harness<'_>) {
    let sn = h.sn();
    layer(sn, "k1", None, "l1", &[("one", "1")]);
    layer(sn, "k2", Some("l1"), "l2", &[("two", "2")]);
    layer(sn, "k3", Some("l2"), "l3", &[("three", "3")]);
    read_view(sn, "l3", |dir| {
        assert_file(dir, "one", "1");
        assert_file(dir, "two", "2");
        assert_file(dir, "three", "3");
    });
    read_view(sn, "l2", |dir| assert_absent(dir, "three"));
}

/// Files and directories deleted in a child are gone from its views (containerd
/// `checkDeletedFilesInChildSnapshot`, `checkRemoveDirectoryInLowerLayer`).
pub(super) fn deleted_files_in_child(h: &mut Harness<'_>) {
    let sn = h.sn();
    layer(
        sn,
        "base-key",
        None,
        "base",
        &[("f", "f"), ("d/x", "x"), ("keep", "k")],
    );
    let mounts = sn
        .prepare("child-key", Some("base"), BTreeMap::new())
        .expect("prepare child");
    with_mounted(&mounts, |dir| {
        fs::remove_file(dir.join("f")).expect("remove f");
        fs::remove_dir_all(dir.join("d")).expect("remove d");
    });
    sn.commit("child", "child-key", BTreeMap::new())
        .expect("commit child");
    read_view(sn, "child", |dir| {
        assert_absent(dir, "f");
        assert_absent(dir, "d");
        assert_file(dir, "keep", "k");
    });
    read_view(sn, "base", |dir| assert_file(dir, "f", "f"));
}

/// Views are read-only (containerd `checkSnapshotterViewReadonly`), for one parent and many.
pub(super) fn view_readonly(h: &mut Harness<'_>) {
    let sn = h.sn();
    layer(sn, "k1", None, "l1", &[("one", "1")]);
    layer(sn, "k2", Some("l1"), "l2", &[("two", "2")]);
    for parent in ["l1", "l2"] {
        read_view(sn, parent, |dir| {
            assert_file(dir, "one", "1");
            let err = fs::write(dir.join("new"), "x").expect_err("writing into a view must fail");
            assert_eq!(
                err.raw_os_error(),
                Some(nix::errno::Errno::EROFS as i32),
                "view of {parent}: {err}"
            );
        });
    }
}

/// Label updates: whole map, single keys, bad field paths, missing snapshots (containerd
/// `checkUpdate`).
pub(super) fn update(h: &mut Harness<'_>) {
    let sn = h.sn();
    sn.prepare("k", None, labels(&[("a", "1"), ("b", "2")]))
        .expect("prepare");
    let before = sn.stat("k").expect("stat");
    let info = Info::with_labels("k", labels(&[("a", "x"), ("c", "3")]));
    let updated = sn
        .update(info.clone(), &["labels.a".into(), "labels.b".into()])
        .expect("update labels.a, labels.b");
    assert_eq!(updated.labels, labels(&[("a", "x")]));
    assert_eq!(updated.kind, Kind::Active);
    assert_eq!(updated.created_at, before.created_at);
    assert!(updated.updated_at >= before.updated_at);
    let updated = sn
        .update(info.clone(), &["labels".into()])
        .expect("update labels");
    assert_eq!(updated.labels, labels(&[("a", "x"), ("c", "3")]));
    let updated = sn
        .update(Info::with_labels("k", BTreeMap::new()), &[])
        .expect("update all");
    assert!(updated.labels.is_empty());
    assert!(sn.stat("k").expect("stat").labels.is_empty());
    expect_kind(
        sn.update(info.clone(), &["parent".into()]),
        ErrorKind::InvalidArgument,
        "update parent",
    );
    expect_kind(
        sn.update(Info::with_labels("missing", BTreeMap::new()), &[]),
        ErrorKind::NotFound,
        "update missing",
    );
}

/// A parent with children cannot be removed; removing bottom-up works (containerd
/// `checkRemove`, `checkRemoveIntermediateSnapshot`).
pub(super) fn remove(h: &mut Harness<'_>) {
    let sn = h.sn();
    sn.prepare("base-key", None, BTreeMap::new())
        .expect("prepare base");
    sn.commit("base", "base-key", BTreeMap::new())
        .expect("commit base");
    sn.prepare("mid-key", Some("base"), BTreeMap::new())
        .expect("prepare mid");
    sn.commit("mid", "mid-key", BTreeMap::new())
        .expect("commit mid");
    sn.prepare("top", Some("mid"), BTreeMap::new())
        .expect("prepare top");
    sn.view("view", Some("base"), BTreeMap::new())
        .expect("view base");
    expect_kind(
        sn.remove("base"),
        ErrorKind::FailedPrecondition,
        "remove base",
    );
    expect_kind(
        sn.remove("mid"),
        ErrorKind::FailedPrecondition,
        "remove mid",
    );
    expect_kind(sn.remove("missing"), ErrorKind::NotFound, "remove missing");
    sn.remove("top").expect("remove top");
    sn.remove("mid").expect("remove mid");
    expect_kind(
        sn.remove("base"),
        ErrorKind::FailedPrecondition,
        "remove base with view",
    );
    sn.remove("view").expect("remove view");
    sn.remove("base").expect("remove base");
    expect_kind(sn.stat("base"), ErrorKind::NotFound, "stat removed");
    sn.cleanup().expect("cleanup");
    assert!(sn.walk(&Filter::always()).expect("walk").is_empty());
}

/// Walk with the filter fields Snapshots.List supports.
pub(super) fn walk(h: &mut Harness<'_>) {
    let sn = h.sn();
    sn.prepare("c-key", None, BTreeMap::new())
        .expect("prepare c");
    sn.commit("c", "c-key", labels(&[("tier", "base")]))
        .expect("commit c");
    sn.prepare("a", Some("c"), labels(&[("tier", "app"), ("a.b", "x")]))
        .expect("prepare a");
    sn.view("v", Some("c"), BTreeMap::new()).expect("view v");
    let names = |f: &str| -> Vec<String> {
        let filter = parse(f).unwrap_or_else(|e| panic!("parse {f}: {e}"));
        let mut names: Vec<String> = sn
            .walk(&filter)
            .unwrap_or_else(|e| panic!("walk {f}: {e}"))
            .into_iter()
            .map(|i| i.name)
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(""), ["a", "c", "v"]);
    assert_eq!(names("kind==active"), ["a"]);
    assert_eq!(names("kind==view"), ["v"]);
    assert_eq!(names("kind==committed"), ["c"]);
    assert_eq!(names("parent==c"), ["a", "v"]);
    assert_eq!(names("name==v"), ["v"]);
    assert_eq!(names("labels.tier"), ["a", "c"]);
    assert_eq!(names("labels.tier==app,kind==active"), ["a"]);
    assert_eq!(names("labels.a.b==x"), ["a"]);
    assert_eq!(names(r#"labels."a.b"~=^x"#), ["a"]);
    assert!(names("kind==active,kind==view").is_empty());
}

/// Usage grows with what is written and is kept at commit.
pub(super) fn usage(h: &mut Harness<'_>) {
    let sn = h.sn();
    const SIZE: i64 = 1 << 20;
    let mounts = sn.prepare("k", None, BTreeMap::new()).expect("prepare");
    let empty = sn.usage("k").expect("usage of empty");
    with_mounted(&mounts, |dir| {
        let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
        fs::write(dir.join("blob"), data).expect("write blob");
        fs::create_dir(dir.join("d")).expect("mkdir");
    });
    let active = sn.usage("k").expect("usage of active");
    assert!(active.size >= empty.size + SIZE, "{empty:?} -> {active:?}");
    assert!(active.inodes >= empty.inodes + 2, "{empty:?} -> {active:?}");
    sn.commit("c", "k", BTreeMap::new()).expect("commit");
    let committed = sn.usage("c").expect("usage of committed");
    assert!(committed.size >= SIZE, "{committed:?}");
    assert_eq!(committed.inodes, active.inodes);
    let mounts = sn
        .prepare("child", Some("c"), BTreeMap::new())
        .expect("prepare child");
    with_mounted(&mounts, |dir| {
        fs::write(dir.join("small"), vec![1u8; 8192]).expect("write small");
    });
    let child = sn.usage("child").expect("usage of child");
    assert!(child.size >= 8192, "{child:?}");
}

/// A chain of 128 layers mounts and shows files from the bottom and the top; its overlay
/// lowerdir list is longer than a page (containerd `check128LayersMount`).
pub(super) fn layers_128(h: &mut Harness<'_>) {
    let sn = h.sn();
    let mut parent: Option<String> = None;
    for i in 0..128 {
        let name = format!("layer-{i}");
        let file = format!("file-{i}");
        layer(
            sn,
            &format!("{name}-key"),
            parent.as_deref(),
            &name,
            &[(&file, &name), ("top", &name)],
        );
        parent = Some(name);
    }
    let mounts = sn
        .prepare("container", parent.as_deref(), BTreeMap::new())
        .expect("prepare on 128 layers");
    with_mounted(&mounts, |dir| {
        assert_file(dir, "file-0", "layer-0");
        assert_file(dir, "file-64", "layer-64");
        assert_file(dir, "file-127", "layer-127");
        assert_file(dir, "top", "layer-127");
        write_files(dir, &[("written", "ok")]);
        assert_file(dir, "written", "ok");
    });
    read_view(sn, "layer-127", |dir| {
        assert_file(dir, "file-0", "layer-0");
        assert_file(dir, "top", "layer-127");
    });
}

/// Prepares from many threads on one parent all succeed, with distinct snapshots.
pub(super) fn concurrent_prepare(h: &mut Harness<'_>) {
    layer(h.sn(), "base-key", None, "base", &[("f", "base")]);
    let sn = h.shared();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let sn = sn.clone();
                scope.spawn(move || {
                    let key = format!("c-{i}");
                    let parent = if i % 2 == 0 { Some("base") } else { None };
                    let mounts = sn
                        .prepare(&key, parent, BTreeMap::new())
                        .unwrap_or_else(|e| panic!("prepare {key}: {e}"));
                    (key, parent.is_some(), mounts)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("prepare thread"))
            .collect()
    });
    let distinct: HashSet<_> = results.iter().map(|(_, _, m)| format!("{m:?}")).collect();
    assert_eq!(distinct.len(), results.len(), "mounts must differ");
    for (key, on_base, mounts) in &results {
        with_mounted(mounts, |dir| {
            if *on_base {
                assert_file(dir, "f", "base");
            } else {
                assert_absent(dir, "f");
            }
            write_files(dir, &[("own", key)]);
        });
        assert_eq!(sn.stat(key).expect("stat").kind, Kind::Active);
    }
}

/// A snapshotter dropped between prepare and commit reopens with the active snapshot intact;
/// leftovers of an interrupted build are removed by cleanup, live directories are not, and
/// once everything is removed no directory is left.
pub(super) fn crash_recovery(h: &mut Harness<'_>) {
    layer(h.sn(), "base-key", None, "base", &[("f", "base")]);
    let mounts = h
        .sn()
        .prepare("active", Some("base"), BTreeMap::new())
        .expect("prepare active");
    with_mounted(&mounts, |dir| {
        write_files(dir, &[("g", "written before crash")])
    });
    // What a crash mid-build leaves: a temp directory in each of the driver's directories.
    let layout: Vec<_> = subdirs(h.root());
    for dir in &layout {
        write_files(&dir.join("new-crashed"), &[("leftover", "x")]);
    }
    h.reopen();
    let sn = h.sn();
    assert_eq!(
        sn.stat("active").expect("stat after reopen").kind,
        Kind::Active
    );
    sn.cleanup().expect("cleanup");
    for dir in &layout {
        assert_absent(dir, "new-crashed");
    }
    let mounts = sn.mounts("active").expect("mounts after reopen");
    with_mounted(&mounts, |dir| {
        assert_file(dir, "f", "base");
        assert_file(dir, "g", "written before crash");
    });
    sn.commit("top", "active", BTreeMap::new())
        .expect("commit after reopen");
    read_view(sn, "top", |dir| {
        assert_file(dir, "g", "written before crash")
    });
    sn.remove("top").expect("remove top");
    sn.remove("base").expect("remove base");
    sn.cleanup().expect("cleanup");
    for dir in &layout {
        let left: Vec<_> = fs::read_dir(dir)
            .expect("read layout dir")
            .map(|e| e.expect("dir entry").file_name())
            .collect();
        assert!(left.is_empty(), "{} still holds {left:?}", dir.display());
    }
}

/// The driver's own directories under the root (everything but the metastore).
fn subdirs(root: &Path) -> Vec<std::path::PathBuf> {
    fs::read_dir(root)
        .expect("read root")
        .map(|e| e.expect("root entry").path())
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "metadata.db"))
        .collect()
}

/// Prepare and view on a missing parent are NotFound; on an active parent InvalidArgument.
pub(super) fn missing_parent(h: &mut Harness<'_>) {
    let sn = h.sn();
    expect_kind(
        sn.prepare("k", Some("missing"), BTreeMap::new()),
        ErrorKind::NotFound,
        "prepare on missing parent",
    );
    expect_kind(
        sn.view("v", Some("missing"), BTreeMap::new()),
        ErrorKind::NotFound,
        "view on missing parent",
    );
    sn.prepare("active", None, BTreeMap::new())
        .expect("prepare active");
    expect_kind(
        sn.prepare("k", Some("active"), BTreeMap::new()),
        ErrorKind::InvalidArgument,
        "prepare on active parent",
    );
    expect_kind(sn.stat("k"), ErrorKind::NotFound, "nothing was created");
    sn.cleanup().expect("cleanup");
}

/// Keys and names are unique across kinds.
pub(super) fn duplicate_key(h: &mut Harness<'_>) {
    let sn = h.sn();
    sn.prepare("k", None, BTreeMap::new()).expect("prepare k");
    expect_kind(
        sn.prepare("k", None, BTreeMap::new()),
        ErrorKind::AlreadyExists,
        "prepare k twice",
    );
    expect_kind(
        sn.view("k", None, BTreeMap::new()),
        ErrorKind::AlreadyExists,
        "view with an active key",
    );
    sn.commit("c", "k", BTreeMap::new()).expect("commit");
    sn.prepare("k2", None, BTreeMap::new()).expect("prepare k2");
    expect_kind(
        sn.commit("c", "k2", BTreeMap::new()),
        ErrorKind::AlreadyExists,
        "commit to a taken name",
    );
    expect_kind(
        sn.prepare("c", None, BTreeMap::new()),
        ErrorKind::AlreadyExists,
        "prepare with a committed name",
    );
    assert_eq!(sn.stat("k2").expect("k2 survives").kind, Kind::Active);
    // The failed prepares left no directories behind.
    sn.remove("k2").expect("remove k2");
    sn.remove("c").expect("remove c");
    sn.cleanup().expect("cleanup");
    for dir in subdirs(h.root()) {
        assert_eq!(
            fs::read_dir(&dir).expect("read").count(),
            0,
            "{} not empty",
            dir.display()
        );
    }
}
