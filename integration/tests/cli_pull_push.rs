//! `berth images pull` and `berth images push` against a real registry (Debian's
//! `docker-registry`, started per test on 127.0.0.1 by `berth_integration::registry`) and a real
//! `berthd`: plain HTTP, HTTPS with a test CA and basic auth, a multi-platform index (only the
//! host's platform unless `--all-platforms`), and a pull killed halfway and run again.
//!
//! Needs root (berthd unpacks with overlayfs), `docker-registry`, `htpasswd` and `openssl`; a
//! missing one skips the test, or fails it under CI=true.

// A file under tests/ is a test crate of its own.
#![allow(clippy::tests_outside_test_module)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::berth_cli::{berth, berth_bin, berth_cmd, daemon_with_busybox};
use berth_integration::image::{build_busybox_image, noise, sha256_digest};
use berth_integration::registry::{require_registry, Registry};
use berth_integration::{require_root, Daemon};
use berth_transfer::types::chain_ids;
use serde_json::Value;

const IMAGE: &str = "docker.io/library/bb:latest";

fn prerequisites() -> bool {
    // berth_bin panics with a clear message when berth or berthd is not built.
    require_root() && require_registry() && berth_bin().is_file()
}

/// The images of `berth images ls --format json` as (name, digest).
fn images(address: &Path) -> Vec<(String, String)> {
    berth(address, &["images", "ls", "--format", "json"])
        .json()
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap_or_default().to_owned(),
                i["digest"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn plain_http_push_remove_pull() {
    if !prerequisites() {
        return;
    }
    let registry = Registry::start_plain();
    let (daemon, img) = daemon_with_busybox(IMAGE);
    let a = daemon.address();
    let remote = format!("{}/bb:1", registry.host());

    let out = berth(a, &["images", "push", "--plain-http", &remote, IMAGE]).ok();
    assert_eq!(
        out.trim(),
        format!("pushed {remote} ({})", img.manifest_digest)
    );
    // Pushing again finds every blob in the registry.
    berth(a, &["images", "push", "--plain-http", &remote, IMAGE]).ok();

    berth(a, &["images", "rm", IMAGE]).ok();
    assert!(images(a).is_empty());

    let out = berth(
        a,
        &["images", "pull", "--plain-http", "--print-chainid", &remote],
    )
    .ok();
    assert!(
        out.contains(&format!(
            "unpacking {remote} ({})...done",
            img.manifest_digest
        )),
        "{out}"
    );
    let diff_ids: Vec<String> = img.layers.iter().map(|l| l.diff_id.clone()).collect();
    let top = chain_ids(&diff_ids).pop().expect("two layers");
    assert!(out.contains(&format!("image chain ID: {top}")), "{out}");
    assert_eq!(images(a), [(remote.clone(), img.manifest_digest.clone())]);
    let check = berth(a, &["images", "check", "--format", "json"]).json();
    assert_eq!(check[0]["complete"], true, "{check}");
    assert_eq!(check[0]["unpacked"], true, "{check}");
    // The pull lease is gone.
    assert_eq!(berth(a, &["leases", "ls", "-q"]).ok().trim(), "");

    // Into a fresh daemon, which has nothing: every blob comes from the registry.
    let fresh = Daemon::start();
    berth(
        fresh.address(),
        &["images", "pull", "--plain-http", &remote],
    )
    .ok();
    assert_eq!(
        images(fresh.address()),
        [(remote.clone(), img.manifest_digest.clone())]
    );
    for layer in &img.layers {
        assert!(
            !registry.blob_gets("bb", &layer.digest).is_empty(),
            "{}",
            layer.digest
        );
    }

    // A reference the registry does not have.
    let missing = format!("{}/nothere:1", registry.host());
    let err = berth(a, &["images", "pull", "--plain-http", &missing]).fails();
    assert!(
        err.starts_with("berth: ") && err.contains("not found") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn content_fetch_stores_every_blob_and_the_image_without_unpacking() {
    if !prerequisites() {
        return;
    }
    let registry = Registry::start_plain();
    let (daemon, img) = daemon_with_busybox(IMAGE);
    let remote = format!("{}/fetch/bb:1", registry.host());
    berth(
        daemon.address(),
        &["images", "push", "--plain-http", &remote, IMAGE],
    )
    .ok();

    let fresh = Daemon::start();
    let f = fresh.address();
    let out = berth(
        f,
        &[
            "content",
            "fetch",
            "--plain-http",
            "--label",
            "k=v",
            &remote,
        ],
    )
    .ok();
    assert_eq!(out.trim(), format!("{remote} ({})", img.manifest_digest));
    let content = content_digests(f);
    for d in img.image_blob_digests() {
        assert!(content.contains(&d), "{d} missing: {content:?}");
    }
    // The image is recorded (with the label), complete, and not unpacked: no snapshot at all.
    assert_eq!(images(f), [(remote.clone(), img.manifest_digest.clone())]);
    let ls = berth(f, &["images", "ls", "--format", "json"]).json();
    assert_eq!(ls[0]["labels"]["k"], "v", "{ls}");
    let check = berth(f, &["images", "check", "--format", "json"]).json();
    assert_eq!(check[0]["complete"], true, "{check}");
    assert_eq!(check[0]["unpacked"], false, "{check}");
    assert_eq!(berth(f, &["snapshots", "ls", "-q"]).ok(), "");
    assert_eq!(berth(f, &["leases", "ls", "-q"]).ok().trim(), "");

    // Fetching again finds every blob and fetches none. The registry logs a request when its
    // response ends: give the log a moment each time.
    thread::sleep(Duration::from_millis(500));
    let gets: Vec<Vec<u16>> = img
        .layers
        .iter()
        .map(|l| registry.blob_gets("fetch/bb", &l.digest))
        .collect();
    berth(f, &["content", "fetch", "--plain-http", &remote]).ok();
    thread::sleep(Duration::from_millis(500));
    for (layer, before) in img.layers.iter().zip(&gets) {
        assert_eq!(&registry.blob_gets("fetch/bb", &layer.digest), before);
    }

    let missing = format!("{}/fetch/nothere:1", registry.host());
    let err = berth(f, &["content", "fetch", "--plain-http", &missing]).fails();
    assert!(
        err.starts_with("berth: ") && err.contains("not found") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn https_with_test_ca_and_basic_auth() {
    if !prerequisites() {
        return;
    }
    let registry = Registry::start_tls_auth("user", "pass");
    let ca = registry
        .ca_pem_path()
        .expect("a TLS registry")
        .to_str()
        .expect("utf-8 path")
        .to_owned();
    let (daemon, img) = daemon_with_busybox(IMAGE);
    let a = daemon.address();
    let host = registry.host();
    let remote = format!("{host}/private/bb:v1");
    let auth_error = format!("berth: authentication failed for {host}: check --user");

    // Without credentials the registry refuses.
    let err = berth(a, &["images", "push", "--tlscacert", &ca, &remote, IMAGE]).fails();
    assert_eq!(err.trim(), auth_error);
    let out = berth(
        a,
        &[
            "images",
            "push",
            "--tlscacert",
            &ca,
            "--user",
            "user:pass",
            &remote,
            IMAGE,
        ],
    )
    .ok();
    assert!(out.contains(&img.manifest_digest), "{out}");

    let fresh = Daemon::start();
    let f = fresh.address();
    // A wrong password: one clear line, exit 1, nothing created.
    let err = berth(
        f,
        &[
            "images",
            "pull",
            "--tlscacert",
            &ca,
            "-u",
            "user:wrong",
            &remote,
        ],
    )
    .fails();
    assert_eq!(err.trim(), auth_error);
    assert!(images(f).is_empty());

    // Without the CA the certificate is not trusted.
    let err = berth(f, &["images", "pull", "-u", "user:pass", &remote]).fails();
    assert!(
        err.starts_with(&format!("berth: cannot reach registry {host}")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    berth(
        f,
        &[
            "images",
            "pull",
            "--tlscacert",
            &ca,
            "--user",
            "user:pass",
            &remote,
        ],
    )
    .ok();
    assert_eq!(images(f), [(remote.clone(), img.manifest_digest.clone())]);

    // --skip-verify trusts any certificate.
    let other = Daemon::start();
    berth(
        other.address(),
        &["images", "pull", "-k", "-u", "user:pass", &remote],
    )
    .ok();
    assert_eq!(
        images(other.address()),
        [(remote, img.manifest_digest.clone())]
    );
}

/// A one-file uncompressed layer tar.
fn file_layer(path: &str, data: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    builder.append_data(&mut h, path, data).expect("tar");
    builder.into_inner().expect("tar")
}

/// A two-layer image in an OCI layout tar: a small layer, then one of `big` incompressible
/// bytes (both uncompressed tars). Returns the archive, the manifest digest and the layer
/// digests, bottom first.
fn build_big_image(dir: &Path, name: &str, big: usize) -> (PathBuf, String, Vec<(String, u64)>) {
    const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    let layers = [
        file_layer("small", b"small layer\n"),
        file_layer("big", &noise(big, 0x9e37_79b9_7f4a_7c15)),
    ];
    let digests: Vec<(String, u64)> = layers
        .iter()
        .map(|l| (sha256_digest(l), l.len() as u64))
        .collect();
    let diff_ids: Vec<String> = digests.iter().map(|(d, _)| format!("{d:?}")).collect();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/big"]}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    )
    .into_bytes();
    let layer_descs: Vec<String> = digests
        .iter()
        .map(|(d, size)| format!(r#"{{"mediaType":"{LAYER}","digest":"{d}","size":{size}}}"#))
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{}]}}"#,
        sha256_digest(&config),
        config.len(),
        layer_descs.join(",")
    )
    .into_bytes();
    let manifest_digest = sha256_digest(&manifest);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{},"annotations":{{"io.containerd.image.name":"{name}"}},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        manifest.len()
    )
    .into_bytes();

    let archive = dir.join("big.tar");
    write_oci_archive(
        &archive,
        &index,
        [&config, &manifest, &layers[0], &layers[1]].map(Vec::as_slice),
    );
    (archive, manifest_digest, digests)
}

/// Writes an OCI layout tar at `path`: `oci-layout`, `index.json` and each blob under
/// `blobs/sha256/<hex>`.
fn write_oci_archive<'a>(path: &Path, index: &[u8], blobs: impl IntoIterator<Item = &'a [u8]>) {
    let mut out = tar::Builder::new(File::create(path).expect("create archive"));
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        out.append_data(&mut h, path, data).expect("write archive");
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", index);
    for blob in blobs {
        let digest = sha256_digest(blob);
        let hex = digest.trim_start_matches("sha256:");
        add(&format!("blobs/sha256/{hex}"), blob);
    }
    out.into_inner()
        .and_then(|mut f| f.flush())
        .expect("finish archive");
}

/// The digests of the linux/arm64 half of [`build_multi_platform_archive`]'s index.
struct Arm64 {
    manifest: String,
    config: String,
    layer: String,
}

/// An OCI layout tar whose `index.json` names (as `name`) one nested index of two platforms:
/// the busybox test image `img` for linux/amd64 and a one-layer image for linux/arm64/v8 whose
/// layer no amd64 pull may fetch. Returns the archive, the nested index's digest and the arm64
/// digests.
fn build_multi_platform_archive(
    dir: &Path,
    name: &str,
    img: &berth_integration::image::TestImage,
) -> (PathBuf, String, Arm64) {
    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    let layer = file_layer("arm64", b"arm64 only\n");
    let layer_digest = sha256_digest(&layer);
    let config = format!(
        r#"{{"architecture":"arm64","os":"linux","variant":"v8","rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
    )
    .into_bytes();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
        sha256_digest(&config),
        config.len(),
        layer.len()
    )
    .into_bytes();
    let arm = Arm64 {
        manifest: sha256_digest(&manifest),
        config: sha256_digest(&config),
        layer: layer_digest,
    };
    let multi = format!(
        r#"{{"schemaVersion":2,"mediaType":"{INDEX}","manifests":[{{"mediaType":"{MANIFEST}","digest":"{}","size":{},"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},{{"mediaType":"{MANIFEST}","digest":"{}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        arm.manifest,
        manifest.len(),
        img.manifest_digest,
        img.manifest_size
    )
    .into_bytes();
    let multi_digest = sha256_digest(&multi);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{INDEX}","manifests":[{{"mediaType":"{INDEX}","digest":"{multi_digest}","size":{},"annotations":{{"io.containerd.image.name":"{name}"}}}}]}}"#,
        multi.len()
    )
    .into_bytes();
    let archive = dir.join("multi.tar");
    let mut blobs: Vec<&[u8]> = img.blobs.values().map(Vec::as_slice).collect();
    blobs.extend([&multi[..], &manifest, &config, &layer]);
    write_oci_archive(&archive, &index, blobs);
    (archive, multi_digest, arm)
}

/// The digests of `berth content ls --format json`.
fn content_digests(address: &Path) -> Vec<String> {
    berth(address, &["content", "ls", "--format", "json"])
        .json()
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|c| c["digest"].as_str().expect("a digest").to_owned())
        .collect()
}

#[test]
fn multi_platform_index_pulls_the_host_platform_unless_all_platforms() {
    if !prerequisites() {
        return;
    }
    let registry = Registry::start_plain();
    let source = Daemon::start();
    let s = source.address();
    let name = "docker.io/library/multi:latest";
    let img = build_busybox_image(source.dir(), IMAGE);
    let (archive, index, arm) = build_multi_platform_archive(source.dir(), name, &img);
    let archive = archive.to_str().expect("utf-8 path");
    berth(
        s,
        &[
            "images",
            "import",
            "--all-platforms",
            "--no-unpack",
            archive,
        ],
    )
    .ok();
    let remote = format!("{}/test/multi:1", registry.host());
    let out = berth(s, &["images", "push", "--plain-http", &remote, name]).ok();
    assert_eq!(out.trim(), format!("pushed {remote} ({index})"));
    let host_blobs = img.image_blob_digests();
    let arm_blobs = [&arm.manifest, &arm.config, &arm.layer];

    // The host platform (linux/amd64) only: its manifest, config and layers, unpacked.
    let fresh = Daemon::start();
    let f = fresh.address();
    berth(f, &["images", "pull", "--plain-http", &remote]).ok();
    assert_eq!(images(f), [(remote.clone(), index.clone())]);
    let content = content_digests(f);
    for d in host_blobs.iter().chain([&index]) {
        assert!(content.contains(d), "{d} missing: {content:?}");
    }
    for d in arm_blobs {
        assert!(!content.contains(d), "arm64 blob {d} fetched: {content:?}");
    }
    assert!(
        registry.blob_gets("test/multi", &arm.layer).is_empty(),
        "{}",
        registry.log_text()
    );
    let check = berth(f, &["images", "check", "--format", "json"]).json();
    assert_eq!(check[0]["complete"], true, "{check}");
    assert_eq!(check[0]["unpacked"], true, "{check}");

    // --all-platforms fetches every manifest, config and layer (in a fresh daemon, so nothing
    // is shared); the host platform is still the one unpacked.
    let all = Daemon::start();
    let a = all.address();
    berth(
        a,
        &["images", "pull", "--plain-http", "--all-platforms", &remote],
    )
    .ok();
    assert_eq!(images(a), [(remote.clone(), index.clone())]);
    let content = content_digests(a);
    for d in host_blobs.iter().chain([&index]).chain(arm_blobs) {
        assert!(content.contains(d), "{d} missing: {content:?}");
    }
    assert_eq!(
        registry.blob_gets("test/multi", &arm.layer),
        [200],
        "{}",
        registry.log_text()
    );
    let check = berth(a, &["images", "check", "--format", "json"]).json();
    assert_eq!(check[0]["complete"], true, "{check}");
    assert_eq!(check[0]["unpacked"], true, "{check}");
}

/// A TCP proxy to `127.0.0.1:<upstream>` that sends the upstream's answers at about
/// `bytes_per_sec`, so that a pull takes long enough to be interrupted. Returns its port.
fn slow_proxy(upstream: u16, bytes_per_sec: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().expect("proxy address").port();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c_read, mut s_write) = (
                client.try_clone().expect("clone socket"),
                server.try_clone().expect("clone socket"),
            );
            thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut s_write);
                let _ = s_write.shutdown(std::net::Shutdown::Write);
            });
            let (mut s_read, mut c_write) = (server, client);
            thread::spawn(move || {
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    let n = match s_read.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    thread::sleep(Duration::from_secs_f64(n as f64 / bytes_per_sec as f64));
                }
                let _ = c_write.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

/// The offset of the active ingest whose ref contains `digest`, if any.
fn ingest_offset(address: &Path, digest: &str) -> Option<u64> {
    let run = berth(address, &["content", "active", "--format", "json"]);
    if run.code != 0 {
        return None;
    }
    let v: Value = serde_json::from_str(&run.stdout).ok()?;
    v.as_array()?
        .iter()
        .find(|s| s["ref"].as_str().is_some_and(|r| r.contains(digest)))
        .and_then(|s| s["offset"].as_u64())
}

#[test]
fn killed_pull_resumes_without_refetching() {
    if !prerequisites() {
        return;
    }
    let registry = Registry::start_plain();
    let source = Daemon::start();
    let name = "docker.io/library/big:latest";
    let big = 24 << 20;
    let (archive, manifest_digest, layers) = build_big_image(source.dir(), name, big);
    let s = source.address();
    berth(
        s,
        &[
            "images",
            "import",
            "--no-unpack",
            archive.to_str().expect("utf-8"),
        ],
    )
    .ok();
    let direct = format!("{}/test/big:1", registry.host());
    berth(s, &["images", "push", "--plain-http", &direct, name]).ok();

    // Pull through a proxy that serves 8 MiB/s: the big layer takes about 3 s.
    let proxy = slow_proxy(registry.port(), 8 << 20);
    let remote = format!("127.0.0.1:{proxy}/test/big:1");
    let fresh = Daemon::start();
    let f = fresh.address();
    let pull_args = [
        "images",
        "pull",
        "--plain-http",
        "--max-concurrent-downloads",
        "1",
        remote.as_str(),
    ];
    let mut child = berth_cmd(f, &pull_args).spawn().expect("spawn berth pull");
    let (small, big_layer) = (&layers[0].0, &layers[1].0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let offset = loop {
        assert!(Instant::now() < deadline, "the big layer never started");
        if let Some(off) = ingest_offset(f, big_layer).filter(|&o| o > 0) {
            break off;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the pull ended ({status}) before it could be interrupted");
        }
        thread::sleep(Duration::from_millis(20));
    };
    child.kill().expect("kill berth pull");
    let status = child.wait().expect("reap berth pull");
    assert!(!status.success());
    assert!(offset < layers[1].1, "{offset}");
    // The registry logs a request when its response ends: give the log a moment.
    thread::sleep(Duration::from_millis(500));

    // Interrupted: the small layer is committed, the big one is a partial ingest, no image.
    let content = berth(f, &["content", "ls", "-q"]).ok();
    assert!(content.lines().any(|l| l == small), "{content}");
    assert!(!content.lines().any(|l| l == big_layer), "{content}");
    assert!(images(f).is_empty());
    let small_gets = registry.blob_gets("test/big", small);
    assert_eq!(small_gets, [200], "{}", registry.log_text());
    let big_before = registry.blob_gets("test/big", big_layer);

    let out = berth(f, &pull_args).ok();
    assert!(out.contains(&manifest_digest), "{out}");
    assert_eq!(images(f), [(remote.clone(), manifest_digest.clone())]);
    let check = berth(f, &["images", "check", "--format", "json"]).json();
    assert_eq!(check[0]["unpacked"], true, "{check}");

    // The completed layer was not fetched again; the big one resumed with a ranged request.
    assert_eq!(registry.blob_gets("test/big", small), small_gets);
    let big_after = registry.blob_gets("test/big", big_layer);
    assert_eq!(
        big_after.len(),
        big_before.len() + 1,
        "{big_before:?} -> {big_after:?}"
    );
    assert_eq!(big_after.last(), Some(&206), "{big_after:?}");
    assert_eq!(
        berth(f, &["content", "active", "-q"]).ok().trim(),
        "",
        "no ingest left"
    );
}
