//! End-to-end tests of the `berth` binary against a real `berthd` (started per test on a private
//! root and socket by `berth_integration::Daemon`) and, for the compatibility cases, against a
//! real containerd 1.6 on a private root.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::fs::{self};
use std::path::Path;
use std::process::Command;

use berth_integration::berth_cli::{berth, berth_env, berth_in};
use berth_integration::containerd::Containerd;
use berth_integration::image::build_busybox_image;
use berth_integration::{require_binary, require_root, Daemon};
use serde_json::Value;

const IMAGE: &str = "docker.io/library/bb:latest";

fn names(v: &Value, field: &str) -> Vec<String> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|o| o[field].as_str().expect("a string field").to_owned())
        .collect()
}

#[test]
fn version_plugins_and_namespaces() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();

    let version = berth(a, &["version"]).ok();
    assert!(
        version.contains("Client:") && version.contains("Server:"),
        "{version}"
    );
    assert!(version.contains("UUID:"), "{version}");

    let plugins = berth(a, &["plugins", "ls"]).ok();
    let header: Vec<&str> = plugins.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["TYPE", "ID", "PLATFORMS", "STATUS"]);
    // Columns line up: every row starts its ID column at the same offset.
    let col = plugins.lines().next().unwrap().find("ID").unwrap();
    for line in plugins.lines().skip(1) {
        assert_eq!(&line[col - 1..col], " ", "misaligned: {line}");
        assert_ne!(&line[col..col + 1], " ", "misaligned: {line}");
    }
    let json = berth(a, &["plugins", "ls", "--format", "json"]).json();
    assert!(names(&json, "id").contains(&"overlayfs".to_owned()));
    let quiet = berth(
        a,
        &["plugins", "ls", "-q", "type==io.containerd.snapshotter.v1"],
    )
    .ok();
    assert!(quiet.lines().any(|l| l == "overlayfs"), "{quiet}");
    assert!(!quiet.lines().any(|l| l == "content"), "{quiet}");

    berth(a, &["namespaces", "create", "ns1", "a=1"]).ok();
    berth(a, &["ns", "label", "ns1", "a=", "b=2"]).ok();
    let json = berth(a, &["namespaces", "ls", "--format", "json"]).json();
    let ns1 = json
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "ns1")
        .unwrap();
    assert_eq!(ns1["labels"], serde_json::json!({"b": "2"}));
    assert!(berth(a, &["namespaces", "ls", "-q"])
        .ok()
        .lines()
        .any(|l| l == "ns1"));
    let table = berth(a, &["namespaces", "ls"]).ok();
    assert!(table.starts_with("NAME"), "{table}");

    let dup = berth(a, &["namespaces", "create", "ns1"]);
    assert_eq!(dup.code, 1);
    assert_eq!(dup.stderr.trim(), "berth: namespace \"ns1\" already exists");

    assert_eq!(berth(a, &["namespaces", "rm", "ns1"]).ok(), "ns1\n");
    assert!(!berth(a, &["namespaces", "ls", "-q"]).ok().contains("ns1"));

    let missing = berth(Path::new("/tmp/berth-no-such.sock"), &["version"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stderr
            .starts_with("berth: cannot connect to /tmp/berth-no-such.sock: is berthd running?"),
        "{}",
        missing.stderr
    );
}

#[test]
fn images_import_list_export_mount_remove() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();
    let img = build_busybox_image(daemon.dir(), IMAGE);
    let archive = img.archive.to_str().unwrap();

    let out = berth(a, &["images", "import", archive]).ok();
    assert!(
        out.contains(&format!(
            "unpacking {IMAGE} ({})...done",
            img.manifest_digest
        )),
        "{out}"
    );

    let ls = berth(a, &["images", "ls", "--format", "json"]).json();
    assert_eq!(names(&ls, "name"), [IMAGE]);
    assert_eq!(ls[0]["digest"], img.manifest_digest.as_str());
    assert_eq!(ls[0]["platforms"], serde_json::json!(["linux/amd64"]));
    let table = berth(a, &["images", "ls"]).ok();
    assert!(table.starts_with("REF"), "{table}");
    assert!(table.contains("linux/amd64"), "{table}");
    assert_eq!(berth(a, &["images", "ls", "-q"]).ok(), format!("{IMAGE}\n"));

    // Import labelled the manifest with its children, like ctr.
    let content = berth(a, &["content", "ls", "--format", "json"]).json();
    let manifest = content
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["digest"] == img.manifest_digest.as_str())
        .expect("manifest in the content store");
    assert_eq!(
        manifest["labels"]["containerd.io/gc.ref.content.config"],
        img.config_digest.as_str()
    );
    assert_eq!(
        manifest["labels"]["containerd.io/gc.ref.content.l.0"],
        img.layers[0].digest.as_str()
    );

    let check = berth(a, &["images", "check", "--format", "json"]).json();
    assert_eq!(check[0]["complete"], true);
    assert_eq!(check[0]["unpacked"], true);
    assert_eq!(
        berth(a, &["images", "check", "-q"]).ok(),
        format!("{IMAGE}\n")
    );

    berth(a, &["images", "tag", IMAGE, "docker.io/library/bb:v2"]).ok();
    let ls = berth(a, &["images", "ls", "-q"]).ok();
    assert_eq!(ls.lines().count(), 2, "{ls}");

    // Export and re-import into a fresh daemon: the same digests.
    let exported = daemon.dir().join("export.tar");
    berth(a, &["images", "export", exported.to_str().unwrap(), IMAGE]).ok();
    let other = Daemon::start();
    berth(
        other.address(),
        &[
            "images",
            "import",
            "--no-unpack",
            exported.to_str().unwrap(),
        ],
    )
    .ok();
    let ls2 = berth(other.address(), &["images", "ls", "--format", "json"]).json();
    assert_eq!(names(&ls2, "name"), [IMAGE]);
    assert_eq!(ls2[0]["digest"], img.manifest_digest.as_str());
    let digests: Vec<String> = names(
        &berth(other.address(), &["content", "ls", "--format", "json"]).json(),
        "digest",
    );
    for d in img.image_blob_digests() {
        assert!(
            digests.contains(&d),
            "{d} missing after re-import: {digests:?}"
        );
    }
    drop(other);

    // Mount shows the image's files; unmount --rm removes lease and snapshot.
    let target = daemon.dir().join("mnt");
    fs::create_dir(&target).unwrap();
    let t = target.to_str().unwrap();
    let out = berth(a, &["images", "mount", IMAGE, t]).ok();
    assert!(out.ends_with(&format!("{t}\n")), "{out}");
    assert!(target.join("bin/busybox").is_file());
    assert_eq!(
        fs::read(target.join("etc/hello")).unwrap(),
        b"hello from layer 2\n"
    );
    assert!(berth(a, &["leases", "ls", "-q"])
        .ok()
        .lines()
        .any(|l| l == t));
    berth(a, &["images", "unmount", "--rm", t]).ok();
    assert!(!target.join("bin/busybox").exists());
    assert!(!berth(a, &["leases", "ls", "-q"])
        .ok()
        .lines()
        .any(|l| l == t));
    assert!(!berth(a, &["snapshots", "ls", "-q"])
        .ok()
        .lines()
        .any(|l| l == t));

    assert_eq!(
        berth(a, &["images", "rm", "docker.io/library/bb:v2", IMAGE])
            .ok()
            .lines()
            .count(),
        2
    );
    assert_eq!(berth(a, &["images", "ls", "-q"]).ok(), "");

    let missing = berth(a, &["images", "rm", "nosuch"]);
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.stderr,
        "berth: image \"nosuch\" not found in namespace \"default\"\n"
    );
    assert_eq!(missing.stdout, "");
}

#[test]
fn content_snapshots_and_leases() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();

    // Ingest, resumable by ref: the second run with the same ref resumes and commits.
    let data = b"hello berth content\n";
    let digest = format!("sha256:{}", sha256_hex(data));
    let size = data.len().to_string();
    // A short first attempt fails to commit but leaves the ingest active at 5 bytes.
    let short = berth_in(
        a,
        &["content", "ingest", "--expected-size", &size, "ref1"],
        &data[..5],
    );
    assert_eq!(short.code, 1);
    assert!(
        short
            .stderr
            .starts_with("berth: cannot write ingest \"ref1\""),
        "{}",
        short.stderr
    );
    let active = berth(a, &["content", "active", "--format", "json"]).json();
    assert_eq!(active[0]["ref"], "ref1");
    assert_eq!(active[0]["offset"], 5);
    let out = berth_in(
        a,
        &[
            "content",
            "ingest",
            "--expected-size",
            &size,
            "--expected-digest",
            &digest,
            // A GC root: unreferenced content is collected right after commit.
            "--label",
            "containerd.io/gc.root=test",
            "ref1",
        ],
        data,
    )
    .ok();
    assert_eq!(out.trim(), digest);
    assert_eq!(berth(a, &["content", "get", &digest]).ok().as_bytes(), data);
    let ls = berth(a, &["content", "ls", "--format", "json"]).json();
    assert_eq!(ls[0]["digest"], digest.as_str());
    assert_eq!(ls[0]["size"], data.len());
    assert_eq!(
        berth(a, &["content", "ls", "-q"]).ok(),
        format!("{digest}\n")
    );
    let labels = berth(a, &["content", "label", &digest, "x=y"]).ok();
    assert_eq!(labels.trim(), "containerd.io/gc.root=test,x=y");
    let active = berth(a, &["content", "active", "--format", "json"]).json();
    assert_eq!(active, serde_json::json!([]));
    assert!(berth(a, &["content", "active"]).ok().starts_with("REF"));
    assert_eq!(berth(a, &["content", "rm", &digest]).ok().trim(), digest);
    let gone = berth(a, &["content", "get", &digest]);
    assert_eq!(gone.code, 1);
    assert!(
        gone.stderr.contains("not found in namespace \"default\""),
        "{}",
        gone.stderr
    );

    // Snapshots on the native snapshotter (works on any filesystem).
    let sn = ["snapshots", "--snapshotter", "native"];
    let with = |extra: &[&str]| -> Vec<String> {
        sn.iter().chain(extra).map(|s| (*s).to_owned()).collect()
    };
    let run = |extra: &[&str]| {
        let args = with(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        berth(a, &args)
    };
    run(&["prepare", "active1"]).ok();
    run(&["commit", "base", "active1"]).ok();
    let mounts = run(&["prepare", "--target", "/mnt/x", "child", "base"]).ok();
    assert!(mounts.starts_with("mount -t bind "), "{mounts}");
    let ls = run(&["ls", "--format", "json"]).json();
    let mut pairs: Vec<(String, String)> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("base".into(), "Committed".into()),
            ("child".into(), "Active".into())
        ]
    );
    let base = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "base")
        .unwrap();
    assert!(
        base["labels"]["containerd.io/gc.root"].is_string(),
        "{base}"
    );
    let table = run(&["ls"]).ok();
    assert!(table.starts_with("KEY"), "{table}");
    assert_eq!(run(&["tree"]).ok(), " base\n  \\_ child\n");
    let usage = run(&["usage", "--format", "json"]).json();
    assert_eq!(usage.as_array().unwrap().len(), 2);
    let info: Value = serde_json::from_str(&run(&["info", "child"]).ok()).unwrap();
    assert_eq!(info["parent"], "base");
    run(&["rm", "child", "base"]).ok();
    assert_eq!(run(&["ls", "-q"]).ok(), "");
    let missing = run(&["rm", "nosuch"]);
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.stderr,
        "berth: snapshot \"nosuch\" on snapshotter \"native\" not found in namespace \"default\"\n"
    );

    // Leases.
    let id = berth(a, &["leases", "create", "--id", "l1", "k=v"]).ok();
    assert_eq!(id.trim(), "l1");
    let random = berth(a, &["leases", "create"]).ok().trim().to_owned();
    let ls = berth(a, &["leases", "ls", "--format", "json"]).json();
    let ids = names(&ls, "id");
    assert!(
        ids.contains(&"l1".to_owned()) && ids.contains(&random),
        "{ids:?}"
    );
    let l1 = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == "l1")
        .unwrap();
    assert_eq!(l1["labels"]["k"], "v");
    assert!(l1["labels"]["containerd.io/gc.expire"].is_string());
    assert!(berth(a, &["leases", "ls"]).ok().starts_with("ID"));
    berth(a, &["leases", "rm", "l1", &random]).ok();
    assert_eq!(berth(a, &["leases", "ls", "-q"]).ok(), "");

    // Containers: empty listing in every format.
    assert_eq!(
        berth(a, &["containers", "ls", "--format", "json"]).json(),
        serde_json::json!([])
    );
    assert_eq!(
        berth(a, &["containers", "ls"]).ok().trim(),
        "CONTAINER IMAGE RUNTIME"
    );
}

#[test]
fn content_edit_stores_the_edited_blob_under_a_new_digest() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();
    let data = b"{\"greeting\":\"hello\"}\n";
    let original = berth_in(
        a,
        &[
            "content",
            "ingest",
            "--label",
            "containerd.io/gc.root=test",
            "orig",
        ],
        data,
    )
    .ok();
    let original = original.trim();

    // The editor is a shell command given the temporary file as its last word, as ctr runs it.
    let edit = |editor: Option<&str>, extra: &[&str]| {
        let mut args = vec!["content", "edit"];
        args.extend_from_slice(extra);
        args.push(original);
        berth_env(a, &args, b"", &[("EDITOR", editor)])
    };
    let out = edit(
        Some("sed -i s/hello/howdy/"),
        &["--label", "containerd.io/gc.root=test"],
    )
    .ok();
    let edited = b"{\"greeting\":\"howdy\"}\n";
    let digest = format!("sha256:{}", sha256_hex(edited));
    assert_eq!(out, format!("{digest}\n"));
    assert_eq!(
        berth(a, &["content", "get", &digest]).ok().as_bytes(),
        edited
    );
    // The original blob is untouched, and no ingest is left behind.
    assert_eq!(
        berth(a, &["content", "get", original]).ok().as_bytes(),
        data
    );
    assert_eq!(berth(a, &["content", "active", "-q"]).ok(), "");
    let labels = berth(a, &["content", "ls", "--format", "json"]).json();
    let new = labels
        .as_array()
        .expect("a JSON array")
        .iter()
        .find(|c| c["digest"] == digest.as_str())
        .unwrap_or_else(|| panic!("{digest} not listed: {labels}"));
    assert_eq!(new["labels"]["containerd.io/gc.root"], "test", "{new}");

    // --editor wins over $EDITOR.
    let out = berth_env(
        a,
        &[
            "content",
            "edit",
            "--editor",
            "sed -i s/hello/hi/",
            original,
        ],
        b"",
        &[("EDITOR", Some("false"))],
    )
    .ok();
    let hi = format!("sha256:{}", sha256_hex(b"{\"greeting\":\"hi\"}\n"));
    assert_eq!(out.trim(), hi);

    // No editor, a failing editor, a missing blob and --validate fail with one clear line.
    let none = edit(None, &[]);
    assert_eq!(none.code, 1);
    assert!(
        none.stderr.contains("editor is required"),
        "{}",
        none.stderr
    );
    let failing = edit(Some("false"), &[]);
    assert_eq!(failing.code, 1);
    assert!(
        failing
            .stderr
            .starts_with("berth: the editor \"false\" failed"),
        "{}",
        failing.stderr
    );
    let missing = format!("sha256:{}", sha256_hex(b"not stored"));
    let gone = berth_env(
        a,
        &["content", "edit", &missing],
        b"",
        &[("EDITOR", Some("true"))],
    );
    assert_eq!(gone.code, 1);
    assert_eq!(
        gone.stderr,
        format!("berth: content {missing:?} not found in namespace \"default\"\n")
    );
    let validate = edit(Some("true"), &["--validate", "json"]);
    assert_eq!(validate.code, 1);
    assert!(
        validate
            .stderr
            .contains("validating the edit result not supported"),
        "{}",
        validate.stderr
    );
}

fn sha256_hex(data: &[u8]) -> String {
    berth_integration::image::sha256_digest(data)
        .trim_start_matches("sha256:")
        .to_owned()
}

#[test]
fn works_against_real_containerd() {
    if !require_root() || !require_binary("containerd") {
        return;
    }
    let ctd = Containerd::start();
    let a = ctd.address();
    let version = berth(a, &["version"]).ok();
    assert!(
        version.contains("Server:") && version.contains("1.6"),
        "{version}"
    );
    berth(a, &["namespaces", "create", "ns1"]).ok();
    assert!(berth(a, &["namespaces", "ls", "-q"])
        .ok()
        .lines()
        .any(|l| l == "ns1"));

    let img = build_busybox_image(ctd.dir(), IMAGE);
    berth(
        a,
        &[
            "images",
            "import",
            "--snapshotter",
            "native",
            img.archive.to_str().unwrap(),
        ],
    )
    .ok();
    let ls = berth(a, &["images", "ls", "--format", "json"]).json();
    assert_eq!(names(&ls, "name"), [IMAGE]);
    assert_eq!(ls[0]["digest"], img.manifest_digest.as_str());
    let check = berth(
        a,
        &[
            "images",
            "check",
            "--snapshotter",
            "native",
            "--format",
            "json",
        ],
    )
    .json();
    assert_eq!(check[0]["complete"], true);
    assert_eq!(check[0]["unpacked"], true);

    // The real ctr sees what berth imported.
    let ctr = Command::new("/usr/bin/ctr")
        .arg("--address")
        .arg(a)
        .args(["images", "ls", "-q"])
        .output()
        .expect("run ctr");
    assert_eq!(String::from_utf8_lossy(&ctr.stdout), format!("{IMAGE}\n"));

    let missing = berth(a, &["images", "rm", "nosuch"]);
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.stderr,
        "berth: image \"nosuch\" not found in namespace \"default\"\n"
    );
}
