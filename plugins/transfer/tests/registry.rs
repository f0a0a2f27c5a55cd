//! Pull and push against a real registry (Debian's `docker-registry`, the CNCF distribution
//! registry) with a real `berthd` behind the gRPC proxies: plain HTTP, HTTPS with a test CA and
//! basic auth, a multi-platform index, and a pull resumed after an interruption.
//!
//! Needs root (berthd unpacks with overlayfs), `/usr/bin/docker-registry`, `htpasswd`
//! (apache2-utils), `openssl` and ctr; a missing one skips the test, or fails it under CI=true.

// A file under tests/ is a test crate of its own.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_integration::image::{build_busybox_image, sha256_digest, TestImage};
use berth_integration::{channel, ctr, require_binary, require_root, Daemon};
use berth_registry::{Classify, ErrorKind};
use berth_transfer::grpc::GrpcStores;
use berth_transfer::types::{chain_ids, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST};
use berth_transfer::{
    pull, push, Cx, Descriptor, Platform, Progress, PullOptions, PushOptions, RegistryOptions,
    TransferError,
};
use flate2::write::GzEncoder;
use flate2::Compression;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use tempfile::TempDir;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const SNAPSHOTTER: &str = "overlayfs";
const NS: &str = "default";
const IMAGE: &str = "docker.io/library/bb:latest";

/// Checks every prerequisite; false (after printing `skipped: ...`) when one is missing.
fn prerequisites() -> bool {
    require_root()
        && require_binary(REGISTRY_BIN)
        && require_binary("htpasswd")
        && require_binary("openssl")
        && require_binary(berth_integration::CTR_BIN)
}

/// TLS material and credentials of a registry.
struct Secure {
    cert: PathBuf,
    key: PathBuf,
    htpasswd: PathBuf,
}

/// A `docker-registry serve` on 127.0.0.1 with filesystem storage in a temporary directory.
struct Registry {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl Registry {
    fn start(dir: TempDir, secure: Option<&Secure>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let data = dir.path().join("data");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: berth-transfer-test\n",
            data.display()
        );
        if let Some(s) = secure {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                s.cert.display(),
                s.key.display(),
                s.htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).expect("write registry config");
        let log = dir.path().join("registry.log");
        let out = File::create(&log).expect("create registry log");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .expect("spawn docker-registry");
        let registry = Self {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not listen on {port}: {}",
                registry.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The status codes of the `GET`s of blob `digest` in `repo`, from the access log.
    fn blob_gets(&self, repo: &str, digest: &str) -> Vec<u16> {
        let needle = format!("\"GET /v2/{repo}/blobs/{digest} ");
        self.log_text()
            .lines()
            .filter_map(|l| l.split_once(&needle).map(|(_, rest)| rest))
            .filter_map(|rest| {
                // `HTTP/1.1" 200 1234 ...`
                rest.split_once("\" ")
                    .and_then(|(_, tail)| tail.split_whitespace().next())
                    .and_then(|code| code.parse().ok())
            })
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The access log lines only, the last ones: enough to see what was requested.
            let text = self.log_text();
            let access: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("127.0.0.1 - "))
                .collect();
            let tail = &access[access.len().saturating_sub(40)..];
            eprintln!(
                "--- registry access log (last {}) ---\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a server certificate for 127.0.0.1 signed by it, plus an htpasswd file for
/// `user:pass`. Returns the material and the CA certificate (PEM).
fn secure_material(dir: &Path) -> (Secure, Vec<u8>) {
    let p = |name: &str| dir.join(name);
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args([
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=berth test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
        ])
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.pem")));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")));
    fs::write(
        p("ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .expect("write ext.cnf");
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(p("ext.cnf"))
        .arg("-out")
        .arg(p("server.pem")));
    let out = Command::new("htpasswd")
        .args(["-Bbn", "user", "pass"])
        .output()
        .expect("run htpasswd");
    assert!(out.status.success());
    fs::write(p("htpasswd"), &out.stdout).expect("write htpasswd");
    let ca = fs::read(p("ca.pem")).expect("read CA");
    (
        Secure {
            cert: p("server.pem"),
            key: p("server.key"),
            htpasswd: p("htpasswd"),
        },
        ca,
    )
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
    let registry = Registry::start(tempfile::tempdir().expect("test setup"), None);
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
    assert_eq!(image.target.media_type, MEDIA_TYPE_OCI_MANIFEST);
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
    let (secure, ca) = secure_material(work.path());
    let registry = Registry::start(tempfile::tempdir().expect("test setup"), Some(&secure));
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
        r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
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
    let mt = || MEDIA_TYPE_OCI_MANIFEST.parse().expect("test setup");
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
        r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_OCI_INDEX}","manifests":[{{"mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","digest":"{arm_manifest}","size":{},"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},{{"mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        manifest.len(),
        img.manifest_digest,
        img.manifest_size
    )
    .into_bytes();
    let index_digest = sha256_digest(&index);
    client
        .push_manifest_raw(
            &base,
            index,
            MEDIA_TYPE_OCI_INDEX.parse().expect("test setup"),
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
    let registry = Registry::start(tempfile::tempdir().unwrap(), None);
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
    assert_eq!(image.target.media_type, MEDIA_TYPE_OCI_INDEX);
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
    bytes: Mutex<BTreeMap<String, u64>>,
    done: Mutex<Vec<String>>,
    notify: tokio::sync::Notify,
}

impl Progress for Interrupt {
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
    let registry = Registry::start(tempfile::tempdir().unwrap(), None);
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
    eprintln!("interrupted with {done:?} done, bytes {bytes:?}, gets {gets_before:?}");
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
        if done.contains(&layer.digest) {
            assert_eq!(
                &after, before,
                "completed layer {} fetched again",
                layer.digest
            );
        } else {
            let got = bytes.get(&layer.digest).copied().unwrap_or(0);
            assert_eq!(after.len(), before.len() + 1, "{}", layer.digest);
            if got > 0 && got < layer.size {
                // A partly written ingest resumes with a ranged request.
                assert_eq!(after.last(), Some(&206), "{after:?}");
            }
        }
    }
}
