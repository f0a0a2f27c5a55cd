//! Pull and push against a real registry (Debian's `docker-registry`, the CNCF distribution
//! registry) with a real `berthd` behind the gRPC proxies: plain HTTP, HTTPS with a test CA and
//! basic auth, a multi-platform index, and a pull resumed after an interruption.
//!
//! Needs root (berthd unpacks with overlayfs), `/usr/bin/docker-registry`, `htpasswd`
//! (apache2-utils), `openssl` and ctr; a missing one skips the test, or fails it under CI=true.

// A file under tests/ is a test crate of its own.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_errdefs::{Classify, ErrorKind};
use berth_integration::image::{build_busybox_image, sha256_digest, TestImage};
use berth_integration::registry::{require_registry, Registry};
use berth_integration::{channel, ctr, require_binary, require_root, Daemon};
use berth_transfer::grpc::GrpcStores;
use berth_transfer::types::{chain_ids, ingest_ref};
use berth_transfer::{
    pull, push, Cx, Descriptor, Platform, Progress, PullOptions, PushOptions, RegistryOptions,
    Stores, TransferError,
};
use berth_wellknown::media_type;
use flate2::write::GzEncoder;
use flate2::Compression;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;

const SNAPSHOTTER: &str = "overlayfs";
const NS: &str = "default";
const IMAGE: &str = "docker.io/library/bb:latest";

/// Checks every prerequisite; false (after printing `skipped: ...`) when one is missing.
fn prerequisites() -> bool {
    require_root() && require_registry() && require_binary(berth_integration::CTR_BIN)
}

/// A daemon with the busybox test image imported as [`IMAGE`].
fn daemon_with_image(dir: &Path) -> (Daemon, TestImage) {
    let daemon = Daemon::start();
    let img = build_busybox_image(dir, IMAGE);
    let archive = img.archive.to_str().expect("utf-8 path");
    ctr(&daemon, &["images", "import", "--no-unpack", archive]).ok();
    (daemon, img)
}

async fn proxies(daemon: &Daemon) -> GrpcStores {
    GrpcStores::new(channel(daemon).await, SNAPSHOTTER)
}

fn plain() -> RegistryOptions {
    RegistryOptions {
        plain_http: true,
        ..RegistryOptions::default()
    }
}

fn amd64() -> Platform {
    Platform::new("linux", "amd64")
}

/// Asserts that `img` was pulled and unpacked into `stores` like ctr does.
async fn assert_pulled(grpc: &GrpcStores, ns: &str, img: &TestImage, host: &str, repo: &str) {
    let cx = Cx::new(ns);
    let content = &grpc.content;
    use berth_transfer::ContentStore as _;
    use berth_transfer::SnapshotStore as _;
    let manifest = content
        .info(&cx, &img.manifest_digest)
        .await
        .expect("store call")
        .expect("manifest stored");
    assert_eq!(
        manifest.labels["containerd.io/gc.ref.content.config"],
        img.config_digest
    );
    for (i, layer) in img.layers.iter().enumerate() {
        assert_eq!(
            manifest.labels[&format!("containerd.io/gc.ref.content.l.{i}")],
            layer.digest
        );
        let info = content
            .info(&cx, &layer.digest)
            .await
            .expect("store call")
            .expect("layer stored");
        assert_eq!(info.size, layer.size);
        assert_eq!(info.labels["containerd.io/uncompressed"], layer.diff_id);
        assert_eq!(
            info.labels["containerd.io/distribution.source.127.0.0.1"], repo,
            "{host}"
        );
    }
    let diff_ids: Vec<String> = img.layers.iter().map(|l| l.diff_id.clone()).collect();
    let chain = chain_ids(&diff_ids);
    let config = content
        .info(&cx, &img.config_digest)
        .await
        .expect("store call")
        .expect("config stored");
    assert_eq!(
        config.labels[&format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}")],
        chain[1]
    );
    for id in &chain {
        assert!(
            grpc.snapshots.exists(&cx, id).await.expect("store call"),
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_push_then_pull_into_a_fresh_daemon() {
    if !prerequisites() {
        return;
    }
    let work = tempfile::tempdir().expect("test setup");
    let registry = Registry::start_plain();
    let (source, img) = daemon_with_image(work.path());
    let src = proxies(&source).await;
    let reference = format!("{}/test/bb:v1", registry.host());

    let opts = PushOptions {
        registry: plain(),
        ..PushOptions::default()
    };
    let pushed = push(IMAGE, &reference, &opts, &src.stores(NS))
        .await
        .expect("test setup");
    assert_eq!(pushed.digest, img.manifest_digest);
    // A second push finds every blob in the registry.
    push(IMAGE, &reference, &opts, &src.stores(NS))
        .await
        .expect("test setup");

    let fresh = Daemon::start();
    let dst = proxies(&fresh).await;
    let pull_opts = PullOptions {
        registry: plain(),
        platform: Some(amd64()),
        ..PullOptions::default()
    };
    let image = pull(&reference, &pull_opts, &dst.stores(NS))
        .await
        .expect("test setup");
    assert_eq!(image.name, reference);
    assert_eq!(image.target.digest, img.manifest_digest);
    assert_eq!(image.target.media_type, media_type::OCI_MANIFEST);
    assert_pulled(&dst, NS, &img, &registry.host(), "test/bb").await;

    // ctr sees the image; the pull lease is gone.
    let listed = ctr(&fresh, &["images", "ls", "-q"]).ok().to_owned();
    assert!(listed.lines().any(|l| l == reference), "{listed}");
    let leases = ctr(&fresh, &["leases", "ls", "-q"]).ok().to_owned();
    assert!(leases.trim().is_empty(), "{leases}");

    // Pulling again downloads no blob.
    let gets = |r: &Registry| -> usize {
        img.layers
            .iter()
            .map(|l| r.blob_gets("test/bb", &l.digest).len())
            .sum()
    };
    let before = gets(&registry);
    assert_eq!(before, 2, "{}", registry.log_text());
    let again = pull(&reference, &pull_opts, &dst.stores(NS))
        .await
        .expect("test setup");
    assert_eq!(again.target, image.target);
    assert_eq!(gets(&registry), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_test_ca_and_basic_auth() {
    if !prerequisites() {
        return;
    }
    let work = tempfile::tempdir().expect("test setup");
    let registry = Registry::start_tls_auth("user", "pass");
    let ca = registry.ca_pem();
    let (source, img) = daemon_with_image(work.path());
    let src = proxies(&source).await;
    let reference = format!("{}/private/bb:v1", registry.host());
    let good = RegistryOptions {
        ca_pem: Some(ca.clone()),
        ..RegistryOptions::default()
    }
    .with_user("user:pass");

    // Without credentials the registry refuses, with a message naming the registry.
    let anonymous = PushOptions {
        registry: RegistryOptions {
            ca_pem: Some(ca.clone()),
            ..RegistryOptions::default()
        },
        ..PushOptions::default()
    };
    let err = push(IMAGE, &reference, &anonymous, &src.stores(NS))
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::Unauthorized { .. }), "{err:?}");

    let opts = PushOptions {
        registry: good.clone(),
        ..PushOptions::default()
    };
    let pushed = push(IMAGE, &reference, &opts, &src.stores(NS))
        .await
        .expect("test setup");
    assert_eq!(pushed.digest, img.manifest_digest);

    let fresh = Daemon::start();
    let dst = proxies(&fresh).await;
    let pull_with = |registry: RegistryOptions| PullOptions {
        registry,
        platform: Some(amd64()),
        ..PullOptions::default()
    };

    // A wrong password: a clear error, and nothing created.
    let err = pull(
        &reference,
        &pull_with(good.clone().with_user("user:wrong")),
        &dst.stores(NS),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "authentication failed for {}: check --user",
            registry.host()
        )
    );
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);

    // Without the CA the server certificate is not trusted.
    let err = pull(
        &reference,
        &pull_with(RegistryOptions::default().with_user("user:pass")),
        &dst.stores(NS),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TransferError::Network { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);

    let image = pull(&reference, &pull_with(good), &dst.stores(NS))
        .await
        .expect("test setup");
    assert_eq!(image.target.digest, img.manifest_digest);
    assert_pulled(&dst, NS, &img, &registry.host(), "private/bb").await;
}

/// Gzip of a one-file tar: an arm64 layer that no amd64 pull may fetch.
fn arm64_layer() -> (Vec<u8>, String) {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(6);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, "arm64", &b"arm64\n"[..])
        .expect("test setup");
    let tar = builder.into_inner().expect("test setup");
    let diff_id = sha256_digest(&tar);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&tar).expect("test setup");
    (gz.finish().expect("test setup"), diff_id)
}

/// A two-platform index in the registry under `repo:multi`: the busybox image for
/// linux/amd64 and a one-layer image for linux/arm64. Returns (index, arm64 manifest, arm64
/// config, arm64 layer) digests.
async fn push_multi_platform(
    registry: &Registry,
    repo: &str,
    img: &TestImage,
) -> (String, String, String, String) {
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let base: Reference = format!("{}/{repo}:multi", registry.host())
        .parse()
        .expect("test setup");
    client
        .store_auth_if_needed(base.resolve_registry(), &RegistryAuth::Anonymous)
        .await;
    let (layer, diff_id) = arm64_layer();
    let layer_digest = sha256_digest(&layer);
    let config = format!(
        r#"{{"architecture":"arm64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    )
    .into_bytes();
    let config_digest = sha256_digest(&config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{manifest_type}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len(),
        manifest_type = media_type::OCI_MANIFEST,
    )
    .into_bytes();
    let arm_manifest = sha256_digest(&manifest);
    let mut blobs: BTreeMap<String, Vec<u8>> = img.blobs.clone();
    blobs.insert(layer_digest.clone(), layer);
    blobs.insert(config_digest.clone(), config);
    let manifests = [&img.manifest_digest, &arm_manifest];
    for (digest, data) in &blobs {
        if manifests.contains(&digest) {
            continue;
        }
        client
            .push_blob(&base, data.clone(), digest)
            .await
            .expect("test setup");
    }
    let mt = || media_type::OCI_MANIFEST.parse().expect("test setup");
    client
        .push_manifest_raw(
            &base.clone_with_digest(img.manifest_digest.clone()),
            img.blob(&img.manifest_digest).to_vec(),
            mt(),
        )
        .await
        .expect("test setup");
    client
        .push_manifest_raw(
            &base.clone_with_digest(arm_manifest.clone()),
            manifest.clone(),
            mt(),
        )
        .await
        .expect("test setup");
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{index_type}","manifests":[{{"mediaType":"{manifest_type}","digest":"{arm_manifest}","size":{},"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},{{"mediaType":"{manifest_type}","digest":"{}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        manifest.len(),
        img.manifest_digest,
        img.manifest_size,
        index_type = media_type::OCI_INDEX,
        manifest_type = media_type::OCI_MANIFEST,
    )
    .into_bytes();
    let index_digest = sha256_digest(&index);
    client
        .push_manifest_raw(
            &base,
            index,
            media_type::OCI_INDEX.parse().expect("test setup"),
        )
        .await
        .expect("test setup");
    (index_digest, arm_manifest, config_digest, layer_digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_platform_index_pulls_one_platform_unless_all() {
    if !prerequisites() {
        return;
    }
    use berth_transfer::ContentStore as _;
    let work = tempfile::tempdir().unwrap();
    let registry = Registry::start_plain();
    let img = build_busybox_image(work.path(), IMAGE);
    let (index, arm_manifest, arm_config, arm_layer) =
        push_multi_platform(&registry, "test/multi", &img).await;
    let reference = format!("{}/test/multi:multi", registry.host());

    let daemon = Daemon::start();
    let grpc = proxies(&daemon).await;
    let opts = PullOptions {
        registry: plain(),
        platform: Some(amd64()),
        ..PullOptions::default()
    };
    let image = pull(&reference, &opts, &grpc.stores(NS)).await.unwrap();
    assert_eq!(image.target.digest, index);
    assert_eq!(image.target.media_type, media_type::OCI_INDEX);
    let cx = Cx::new(NS);
    let info = grpc.content.info(&cx, &index).await.unwrap().unwrap();
    assert_eq!(
        info.labels["containerd.io/gc.ref.content.m.0"],
        arm_manifest
    );
    assert_eq!(
        info.labels["containerd.io/gc.ref.content.m.1"],
        img.manifest_digest
    );
    for absent in [&arm_manifest, &arm_config, &arm_layer] {
        assert!(grpc.content.info(&cx, absent).await.unwrap().is_none());
        assert!(registry.blob_gets("test/multi", absent).is_empty());
    }
    assert_pulled(&grpc, NS, &img, &registry.host(), "test/multi").await;

    // Pushing an image whose index is only partly present pushes the host's manifest.
    let push_opts = PushOptions {
        registry: plain(),
        platform: Some(amd64()),
        ..PushOptions::default()
    };
    let one = format!("{}/test/one:v1", registry.host());
    let pushed = push(&reference, &one, &push_opts, &grpc.stores(NS))
        .await
        .unwrap();
    assert_eq!(pushed.digest, img.manifest_digest);

    // --all-platforms fetches every manifest (in another namespace, so nothing is shared);
    // only the requested platform is unpacked.
    let all = PullOptions {
        all_platforms: true,
        ..opts.clone()
    };
    pull(&reference, &all, &grpc.stores("all")).await.unwrap();
    let cx_all = Cx::new("all");
    for present in [&arm_manifest, &arm_config, &arm_layer] {
        assert!(grpc.content.info(&cx_all, present).await.unwrap().is_some());
    }
    let arm_info = grpc
        .content
        .info(&cx_all, &arm_layer)
        .await
        .unwrap()
        .unwrap();
    assert!(!arm_info.labels.contains_key("containerd.io/uncompressed"));
    assert_pulled(&grpc, "all", &img, &registry.host(), "test/multi").await;

    // The complete index pushes whole.
    let copy = format!("{}/test/copy:v1", registry.host());
    let full = PushOptions {
        platform: None,
        ..push_opts
    };
    let pushed = push(&reference, &copy, &full, &grpc.stores("all"))
        .await
        .unwrap();
    assert_eq!(pushed.digest, index);
    let fresh = Daemon::start();
    let other = proxies(&fresh).await;
    let back = pull(&copy, &all, &other.stores(NS)).await.unwrap();
    assert_eq!(back.target.digest, index);

    // A platform the index lacks.
    let s390 = PullOptions {
        platform: Some(Platform::new("linux", "s390x")),
        ..opts
    };
    let err = pull(&reference, &s390, &grpc.stores("s390"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransferError::NoMatchingPlatform { .. }),
        "{err}"
    );
}

/// Records layer progress and signals once a layer is complete.
#[derive(Default)]
struct Interrupt {
    layers: Vec<String>,
    started: Mutex<BTreeMap<String, Descriptor>>,
    bytes: Mutex<BTreeMap<String, u64>>,
    done: Mutex<Vec<String>>,
    notify: tokio::sync::Notify,
}

impl Progress for Interrupt {
    fn on_start(&self, desc: &Descriptor) {
        self.started
            .lock()
            .expect("progress lock")
            .insert(desc.digest.clone(), desc.clone());
    }

    fn on_bytes(&self, desc: &Descriptor, n: u64) {
        *self
            .bytes
            .lock()
            .expect("progress lock")
            .entry(desc.digest.clone())
            .or_default() += n;
    }

    fn on_done(&self, desc: &Descriptor) {
        if self.layers.contains(&desc.digest) {
            self.done
                .lock()
                .expect("progress lock")
                .push(desc.digest.clone());
            self.notify.notify_one();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_pull_resumes_without_refetching() {
    if !prerequisites() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let registry = Registry::start_plain();
    let (source, img) = daemon_with_image(work.path());
    let src = proxies(&source).await;
    let reference = format!("{}/test/resume:v1", registry.host());
    let push_opts = PushOptions {
        registry: plain(),
        ..PushOptions::default()
    };
    push(IMAGE, &reference, &push_opts, &src.stores(NS))
        .await
        .unwrap();

    let fresh = Daemon::start();
    let dst = proxies(&fresh).await;
    let progress = Arc::new(Interrupt {
        layers: img.layers.iter().map(|l| l.digest.clone()).collect(),
        ..Interrupt::default()
    });
    let opts = PullOptions {
        registry: RegistryOptions {
            concurrency: 2,
            ..plain()
        },
        platform: Some(amd64()),
        progress: progress.clone(),
        ..PullOptions::default()
    };
    let stores = dst.stores(NS);
    tokio::select! {
        biased;
        () = progress.notify.notified() => {}
        r = pull(&reference, &opts, &stores) => panic!("the pull finished before the interruption: {r:?}"),
    }
    // The pull future is dropped here, in the middle of the other layer. The registry logs a
    // request when its response is complete: give the log a moment to settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let done = progress.done.lock().unwrap().clone();
    let bytes = progress.bytes.lock().unwrap().clone();
    assert!(!done.is_empty());
    let gets_before: BTreeMap<String, Vec<u16>> = img
        .layers
        .iter()
        .map(|l| {
            (
                l.digest.clone(),
                registry.blob_gets("test/resume", &l.digest),
            )
        })
        .collect();
    let kept = kept_layers(&stores, &img, &progress).await;
    for digest in &done {
        assert_eq!(kept[digest], Kept::Committed, "{digest} reported done");
    }
    eprintln!(
        "interrupted with {done:?} done, bytes {bytes:?}, kept {kept:?}, gets {gets_before:?}"
    );
    let listed = ctr(&fresh, &["images", "ls", "-q"]).ok().to_owned();
    assert!(listed.trim().is_empty(), "no image record yet: {listed}");

    let image = pull(
        &reference,
        &PullOptions {
            progress: Arc::new(berth_transfer::NoProgress),
            ..opts.clone()
        },
        &stores,
    )
    .await
    .unwrap();
    assert_eq!(image.target.digest, img.manifest_digest);
    assert_pulled(&dst, NS, &img, &registry.host(), "test/resume").await;

    for layer in &img.layers {
        let after = registry.blob_gets("test/resume", &layer.digest);
        let before = &gets_before[&layer.digest];
        match &kept[&layer.digest] {
            Kept::Committed | Kept::Complete => assert_eq!(
                &after, before,
                "layer {} ({:?} before the resume) fetched again",
                layer.digest, kept[&layer.digest]
            ),
            Kept::Partial => {
                // A partly written ingest resumes with a ranged request.
                assert_eq!(after.len(), before.len() + 1, "{}", layer.digest);
                assert_eq!(after.last(), Some(&206), "{after:?}");
            }
            Kept::Nothing => {
                assert_eq!(after.len(), before.len() + 1, "{}", layer.digest);
                assert_eq!(after.last(), Some(&200), "{after:?}");
            }
        }
    }
}

/// What the daemon holds of a layer after an interrupted pull.
#[derive(Debug, PartialEq)]
enum Kept {
    /// The blob is committed.
    Committed,
    /// The ingest has every byte but no commit: the resumed pull only commits it.
    Complete,
    /// The ingest has some of the bytes.
    Partial,
    /// No bytes.
    Nothing,
}

/// Asks the daemon what it kept of each layer. The progress callbacks cannot tell: a write the
/// daemon applied may have had its answer dropped with the pull.
async fn kept_layers(
    stores: &Stores<'_>,
    img: &TestImage,
    progress: &Interrupt,
) -> BTreeMap<String, Kept> {
    let cx = Cx::new(stores.namespace);
    let started = progress.started.lock().expect("progress lock").clone();
    let mut kept = BTreeMap::new();
    for layer in &img.layers {
        let state = if stores
            .content
            .info(&cx, &layer.digest)
            .await
            .expect("content info")
            .is_some()
        {
            Kept::Committed
        } else if let Some(desc) = started.get(&layer.digest) {
            match stores
                .content
                .status(&cx, &ingest_ref(desc))
                .await
                .expect("ingest status")
            {
                Some(s) if s.offset == layer.size => Kept::Complete,
                Some(s) if s.offset > 0 => Kept::Partial,
                _ => Kept::Nothing,
            }
        } else {
            Kept::Nothing
        };
        kept.insert(layer.digest.clone(), state);
    }
    kept
}
