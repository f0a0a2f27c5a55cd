//! `berth images import` of a Docker archive (what `docker save` writes: `manifest.json`, the
//! config as `<hex>.json`, each layer as `<dir>/layer.tar`, no `oci-layout`), next to
//! containerd 1.6's `ctr images import` of the same file: the same image name and manifest
//! digest (the manifests and index are rebuilt as Go's JSON), and the image runs; the same
//! through the daemon's Transfer service (`--local=false`).
//!
//! The archive is made from the busybox test image: the bottom layer as a plain tar, the top
//! one gzip (both kinds `docker save` has written), and the top one reached through a symbolic
//! link as newer Docker writes a layer it already has. Needs root, `ctr` and `containerd`.

// A file under tests/ is a test crate of its own (as in the other integration tests).
#![allow(clippy::tests_outside_test_module)]

use std::io::Read;
use std::path::{Path, PathBuf};

use berth_integration::berth_cli::{berth, berth_bin};
use berth_integration::containerd::Containerd;
use berth_integration::image::{build_busybox_image, TestImage, HELLO};
use berth_integration::{ctr_at, parse_table, require_binary, require_root, Daemon, CTR_BIN};

/// The name the archive's `RepoTags` gives, and what it normalizes to.
const TAG: &str = "bb:saved";
const NAME: &str = "docker.io/library/bb:saved";

fn prerequisites() -> bool {
    require_root()
        && require_binary(CTR_BIN)
        && require_binary("containerd")
        && berth_bin().is_file()
}

/// Appends a regular file to `b`.
fn add_file(b: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).expect("append");
}

/// Writes `img` as a Docker archive under `dir`.
fn docker_archive(dir: &Path, img: &TestImage) -> PathBuf {
    let hex = |d: &str| d.trim_start_matches("sha256:").to_owned();
    let config = format!("{}.json", hex(&img.config_digest));
    let bottom = format!("{}/layer.tar", hex(&img.layers[0].diff_id));
    let top = format!("{}/layer.tar", hex(&img.layers[1].diff_id));
    let linked = "linked/layer.tar".to_owned();
    let manifest = serde_json::json!([{
        "Config": config,
        "RepoTags": [TAG],
        "Layers": [bottom, linked],
    }]);
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&img.blobs[&img.layers[0].digest][..])
        .read_to_end(&mut plain)
        .expect("gunzip the bottom layer");
    let path = dir.join("docker.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path).expect("create the archive"));
    let mut add = |name: &str, data: &[u8]| add_file(&mut b, name, data);
    add(&config, &img.blobs[&img.config_digest]);
    add(&bottom, &plain);
    add(&top, &img.blobs[&img.layers[1].digest]);
    add(
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("manifest json"),
    );
    let mut h = tar::Header::new_ustar();
    h.set_size(0);
    h.set_mode(0o777);
    h.set_entry_type(tar::EntryType::Symlink);
    b.append_link(&mut h, &linked, format!("../{top}"))
        .expect("append the link");
    b.into_inner().expect("finish the archive");
    path
}

/// The image digest `ls` shows for `name` (ctr's table).
fn listed_digest(out: &str, name: &str) -> String {
    let (_, rows) = parse_table(out);
    rows.iter()
        .find(|r| r["REF"] == name)
        .unwrap_or_else(|| panic!("{name} not listed:\n{out}"))["DIGEST"]
        .clone()
}

#[test]
fn docker_archives_import_as_containerds_and_run() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let img = build_busybox_image(daemon.dir(), "docker.io/library/bb:oci");
    let archive = docker_archive(daemon.dir(), &img);
    let archive = archive.to_str().expect("utf-8 path");

    let ours = berth(daemon.address(), &["images", "import", archive]).ok();
    let containerd = Containerd::start();
    let theirs = ctr_at(containerd.address(), &["images", "import", archive]);
    let theirs = theirs.ok();
    // ctr says `unpacking <name> (<digest>)...done` for each image: the same words.
    assert_eq!(ours.trim(), theirs.trim(), "berth:\n{ours}\nctr:\n{theirs}");
    let digest = listed_digest(ctr_at(containerd.address(), &["images", "ls"]).ok(), NAME);
    let ls = berth(daemon.address(), &["images", "ls"]).ok();
    assert_eq!(listed_digest(&ls, NAME), digest, "{ls}");

    let out = berth(
        daemon.address(),
        &["run", "--rm", NAME, "docker-archive", "cat", "/etc/hello"],
    )
    .ok();
    assert_eq!(out.as_bytes(), HELLO);

    // The daemon's Transfer service imports (and unpacks) it the same way.
    let remote = ["-n", "remote"];
    let args = |rest: &[&'static str]| -> Vec<&str> {
        remote.iter().copied().chain(rest.iter().copied()).collect()
    };
    let mut import = args(&["images", "import", "--local=false"]);
    import.push(archive);
    let out = berth(daemon.address(), &import).ok();
    assert!(
        out.contains(&format!("{NAME} ({digest}) imported and unpacked")),
        "{out}"
    );
    let ls = berth(daemon.address(), &args(&["images", "ls"])).ok();
    assert_eq!(listed_digest(&ls, NAME), digest, "{ls}");
    let out = berth(
        daemon.address(),
        &args(&["run", "--rm", NAME, "docker-remote", "cat", "/etc/hello"]),
    )
    .ok();
    assert_eq!(out.as_bytes(), HELLO);
}

#[test]
fn a_docker_archive_missing_a_layer_is_refused_naming_it() {
    if !require_root() || !berth_bin().is_file() {
        return;
    }
    let daemon = Daemon::start();
    let path = daemon.dir().join("broken.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path).expect("create"));
    let manifest = br#"[{"Config":"c.json","RepoTags":["bb:x"],"Layers":["gone/layer.tar"]}]"#;
    let mut add = |name: &str, data: &[u8]| add_file(&mut b, name, data);
    add(
        "c.json",
        br#"{"os":"linux","architecture":"amd64","rootfs":{"diff_ids":[]}}"#,
    );
    add("manifest.json", manifest);
    b.into_inner().expect("finish");
    let err = berth(
        daemon.address(),
        &["images", "import", path.to_str().expect("utf-8")],
    )
    .fails();
    assert!(err.contains("layer \"gone/layer.tar\" not found"), "{err}");
    // Through the daemon's Transfer service: InvalidArgument with the same words, and no
    // image, ingest or lease left.
    let path = path.to_str().expect("utf-8");
    let err = berth(
        daemon.address(),
        &["images", "import", "--local=false", path],
    )
    .fails();
    assert!(err.contains("layer \"gone/layer.tar\" not found"), "{err}");
    for listing in [
        &["images", "ls", "-q"][..],
        &["content", "active", "-q"],
        &["leases", "ls", "-q"],
    ] {
        assert_eq!(
            berth(daemon.address(), listing).ok().trim(),
            "",
            "{listing:?}"
        );
    }
}
