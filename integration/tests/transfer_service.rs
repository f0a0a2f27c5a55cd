//! berthd's Transfer service (containerd 1.7's `containerd.services.transfer.v1.Transfer`, with
//! progress and credentials over the Streaming service) against a real registry (Debian's
//! `docker-registry` on 127.0.0.1) and a real `berthd`: `berth images pull --local=false`
//! through a hosts directory, streaming progress, then running the image; refused credentials
//! (Unauthenticated with the registry's words); an unknown transfer type (InvalidArgument
//! naming it); an OCI layout tar streamed to the service (`ImageImportStream`, `Data` within
//! the daemon's `WindowUpdate` credit: `berth images import --local=false`) records the image,
//! which runs, and a truncated archive or an unknown archive media type is InvalidArgument
//! naming the problem with nothing left behind; `berth images export --local=false` gives an
//! archive another daemon imports and runs; a push through the service (`ImageStore` →
//! `OCIRegistry`, plain HTTP from the resolver's `default_scheme`) gives an image another
//! daemon pulls and runs.
//!
//! Needs root (berthd unpacks with overlayfs and runs the container), `docker-registry`,
//! `htpasswd` and `openssl`; a missing one skips the test, or fails it under CI=true.

// A file under tests/ is a test crate of its own.
#![allow(clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};

use berth_integration::berth_cli::{berth, berth_bin, daemon_with_busybox};
use berth_integration::image::{build_busybox_image, TestImage};
use berth_integration::registry::{require_registry, Registry};
use berth_integration::{channel, namespaced};
use berth_integration::{require_root, Daemon};
use berth_proto::containerd::services::streaming::v1::streaming_client::StreamingClient;
use berth_proto::containerd::services::streaming::v1::StreamInit;
use berth_proto::containerd::services::transfer::v1::transfer_client::TransferClient;
use berth_proto::containerd::services::transfer::v1::{TransferOptions, TransferRequest};
use berth_proto::containerd::types::transfer::{
    AuthResponse, AuthType, Data, ImageImportStream, ImageReference, ImageStore, OciRegistry,
    RegistryResolver, UnpackConfiguration, WindowUpdate,
};
use berth_transfer::types::chain_ids;
use prost::Message as _;
use prost_types::Any;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

const IMAGE: &str = "docker.io/library/bb:latest";
const NS: &str = "default";

fn prerequisites() -> bool {
    require_root() && require_registry() && berth_bin().is_file()
}

/// A hosts directory sending `registry` to the test registry at `host` over plain HTTP.
fn hosts_dir(root: &Path, registry: &str, host: &str) -> PathBuf {
    let dir = root.join("hosts.d");
    std::fs::create_dir_all(dir.join(registry)).expect("hosts dir");
    std::fs::write(
        dir.join(registry).join("hosts.toml"),
        format!(
            "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .expect("hosts.toml");
    dir
}

fn any<M: prost::Message>(type_url: &str, msg: &M) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: msg.encode_to_vec(),
    }
}

/// Opens the Streaming stream `id` as containerd's client does; returns its sender and what
/// the daemon sends after the registration answer.
async fn open_stream(ch: &Channel, id: &str) -> (mpsc::Sender<Any>, Streaming<Any>) {
    let (tx, rx) = mpsc::channel(16);
    tx.send(any(
        "containerd.services.streaming.v1.StreamInit",
        &StreamInit { id: id.to_owned() },
    ))
    .await
    .expect("queue StreamInit");
    let mut inbound = StreamingClient::new(ch.clone())
        .stream(namespaced(NS, ReceiverStream::new(rx)))
        .await
        .expect("Streaming.Stream")
        .into_inner();
    let ack = inbound.message().await.expect("ack").expect("an ack");
    assert_eq!(ack.type_url, "google.protobuf.Empty");
    (tx, inbound)
}

/// A pull request of `reference` into the image store, unpacked on overlayfs.
fn pull_request(reference: &str, resolver: RegistryResolver, progress: &str) -> TransferRequest {
    TransferRequest {
        source: Some(any(
            "containerd.types.transfer.OCIRegistry",
            &OciRegistry {
                reference: reference.to_owned(),
                resolver: Some(resolver),
            },
        )),
        destination: Some(any(
            "containerd.types.transfer.ImageStore",
            &ImageStore {
                name: reference.to_owned(),
                unpacks: vec![UnpackConfiguration {
                    platform: None,
                    snapshotter: String::new(),
                }],
                ..ImageStore::default()
            },
        )),
        options: Some(TransferOptions {
            progress_stream: progress.to_owned(),
        }),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn pull_through_hosts_dir_streams_progress_and_the_image_runs() {
    if !prerequisites() {
        return;
    }
    let registry = Registry::start_plain();
    let (source, img) = daemon_with_busybox(IMAGE);
    let remote = format!("{}/bb:1", registry.host());
    berth(
        source.address(),
        &["images", "push", "--plain-http", &remote, IMAGE],
    )
    .ok();

    // A name only the hosts directory resolves: the registry is reached through hosts.toml.
    let daemon = Daemon::start();
    let a = daemon.address();
    let hosts = hosts_dir(daemon.dir(), "mirror.invalid", &registry.host());
    let name = "mirror.invalid/bb:1";
    let hosts_arg = hosts.to_str().expect("utf-8 path");
    let out = berth(
        a,
        &[
            "images",
            "pull",
            "--local=false",
            "--hosts-dir",
            hosts_arg,
            name,
        ],
    )
    .ok();
    // Progress streamed from the daemon: every layer (and the config and manifest) with its
    // total, the saved image, then berth's closing line.
    for layer in &img.layers {
        let size = img.blob(&layer.digest).len();
        let line = format!("layer-{}: complete {size}/{size}", layer.digest);
        assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
        let waiting = format!("layer-{}: waiting 0/{size}", layer.digest);
        assert!(
            out.lines().any(|l| l == waiting),
            "no {waiting:?} in:\n{out}"
        );
    }
    assert!(
        out.contains(&format!("manifest-{}: complete", img.manifest_digest)),
        "{out}"
    );
    assert!(out.lines().any(|l| l == format!("{name}: saved")), "{out}");
    assert!(
        out.contains(&format!("Completed pull from OCI Registry ({name})")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "unpacking {name} ({})...done",
            img.manifest_digest
        )),
        "{out}"
    );
    let ls = berth(a, &["images", "ls", "--format", "json"]).json();
    assert_eq!(ls[0]["name"], name, "{ls}");
    assert_eq!(ls[0]["digest"], img.manifest_digest.as_str(), "{ls}");
    let check = berth(a, &["images", "check", "--format", "json"]).json();
    assert_eq!(check[0]["unpacked"], true, "{check}");
    assert_eq!(berth(a, &["leases", "ls", "-q"]).ok().trim(), "");
    // Every blob came from the registry, asked for as the mirror of the name's registry (the
    // `ns` parameter containerd's resolver adds).
    // The registry logs a request once its response is written: give the log a moment.
    for layer in &img.layers {
        let get = format!("GET /v2/bb/blobs/{}?ns=mirror.invalid ", layer.digest);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !registry.log_text().contains(&get) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            registry.log_text().contains(&get),
            "no {get:?} in the registry log"
        );
    }

    // The image runs.
    berth(a, &["run", "--rm", name, "transfer-run", "true"]).ok();

    // Without the hosts directory the name does not resolve, and nothing is left behind.
    let err = berth(
        a,
        &["images", "pull", "--local=false", "mirror.invalid/bb:2"],
    )
    .fails();
    assert!(err.contains("mirror.invalid"), "{err}");
    assert_eq!(berth(a, &["images", "ls", "-q"]).ok().trim(), name);
}

#[test]
fn credentials_go_through_the_auth_stream_and_refusal_is_unauthenticated() {
    if !prerequisites() {
        return;
    }
    let registry = Registry::start_plain_auth("user", "pass");
    let (source, img) = daemon_with_busybox(IMAGE);
    let remote = format!("{}/auth/bb:1", registry.host());
    berth(
        source.address(),
        &[
            "images",
            "push",
            "--plain-http",
            "--user",
            "user:pass",
            &remote,
            IMAGE,
        ],
    )
    .ok();

    let daemon = Daemon::start();
    let a = daemon.address();
    // A wrong password, through the API: Unauthenticated with what the registry said.
    let status = runtime().block_on(async {
        let ch = channel(&daemon).await;
        let (auth_tx, mut auth_rx) = open_stream(&ch, "creds-test").await;
        let (_progress_tx, _progress_rx) = open_stream(&ch, "progress-test").await;
        let answer = tokio::spawn(async move {
            let asked = auth_rx
                .message()
                .await
                .expect("auth stream")
                .expect("a request");
            assert_eq!(asked.type_url, "containerd.types.transfer.AuthRequest");
            let req = berth_proto::containerd::types::transfer::AuthRequest::decode(
                asked.value.as_slice(),
            )
            .expect("an AuthRequest");
            auth_tx
                .send(any(
                    "containerd.types.transfer.AuthResponse",
                    &AuthResponse {
                        auth_type: AuthType::Credentials as i32,
                        username: "user".into(),
                        secret: "wrong".into(),
                        expire_at: None,
                    },
                ))
                .await
                .expect("answer the AuthRequest");
            // A client keeps its auth stream open until the transfer ends.
            (req.host, auth_tx, auth_rx)
        });
        let resolver = RegistryResolver {
            auth_stream: "creds-test".into(),
            ..RegistryResolver::default()
        };
        let err = TransferClient::new(ch.clone())
            .transfer(namespaced(
                NS,
                pull_request(&remote, resolver, "progress-test"),
            ))
            .await
            .expect_err("a wrong password must fail");
        let (host, _auth_tx, _auth_rx) = answer.await.expect("the auth task");
        assert_eq!(host, registry.host());
        err
    });
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let message = status.message();
    // What the registry answered: its status, the URL and the words of its error body.
    let host = registry.host();
    assert_eq!(
        message,
        format!(
            "failed to pull {remote}: authentication failed for {host}: \
             401 Unauthorized from http://{host}/v2/auth/bb/manifests/1: \
             authentication required"
        )
    );
    assert_eq!(berth(a, &["images", "ls", "-q"]).ok().trim(), "");

    // The CLI says the same in one line and exits non-zero.
    let err = berth(
        a,
        &[
            "images",
            "pull",
            "--local=false",
            "--user",
            "user:wrong",
            &remote,
        ],
    )
    .fails();
    assert!(err.contains("authentication failed for"), "{err}");

    // The right password, answered on the auth stream by berth, pulls.
    let out = berth(
        a,
        &[
            "images",
            "pull",
            "--local=false",
            "--user",
            "user:pass",
            &remote,
        ],
    )
    .ok();
    assert!(
        out.contains(&format!(
            "unpacking {remote} ({})...done",
            img.manifest_digest
        )),
        "{out}"
    );
}

#[test]
fn unknown_transfer_types_are_invalid_argument() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    runtime().block_on(async {
        let ch = channel(&daemon).await;
        let mut client = TransferClient::new(ch.clone());
        let req = TransferRequest {
            source: Some(Any {
                type_url: "example.com/transfer.Teleport".into(),
                value: vec![],
            }),
            destination: Some(any(
                "containerd.types.transfer.ImageStore",
                &ImageStore::default(),
            )),
            options: None,
        };
        let err = client.transfer(namespaced(NS, req)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message()
                .contains("unsupported source type \"example.com/transfer.Teleport\""),
            "{}",
            err.message()
        );

        // Known types the service does not move between: Unimplemented, as containerd.
        let req = TransferRequest {
            source: Some(Any {
                type_url: "containerd.types.transfer.ImageImportStream".into(),
                value: vec![],
            }),
            destination: Some(Any {
                type_url: "containerd.types.transfer.ImageExportStream".into(),
                value: vec![],
            }),
            options: None,
        };
        let err = client.transfer(namespaced(NS, req)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{err:?}");

        // A progress stream nobody opened.
        let req = pull_request(
            "127.0.0.1:1/x:1",
            RegistryResolver::default(),
            "progress-nope",
        );
        let err = client.transfer(namespaced(NS, req)).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        assert!(err.message().contains("progress-nope"), "{}", err.message());

        // An opened progress stream ends when a failed transfer answers.
        let (_tx, mut rx) = open_stream(&ch, "progress-bad").await;
        let req = TransferRequest {
            source: Some(Any {
                type_url: "example.com/Nope".into(),
                value: vec![],
            }),
            destination: None,
            options: Some(TransferOptions {
                progress_stream: "progress-bad".into(),
            }),
        };
        let err = client.transfer(namespaced(NS, req)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(rx.message().await.expect("clean end").is_none());
    });
}

/// Imports `bytes` (declared as `media_type`) through the Transfer service as a containerd 1.7
/// client does: a Streaming stream `import-test` carrying `Data` within the daemon's window.
async fn import_bytes(
    ch: &Channel,
    id: &str,
    bytes: Vec<u8>,
    media_type: &str,
    unpacks: Vec<UnpackConfiguration>,
) -> Result<(), Status> {
    let (tx, mut inbound) = open_stream(ch, id).await;
    let sender = tokio::spawn(async move {
        let mut remaining: usize = 0;
        let mut sent = 0;
        while sent < bytes.len() {
            while remaining == 0 {
                let Ok(Some(msg)) = inbound.message().await else {
                    return sent;
                };
                assert_eq!(msg.type_url, "containerd.types.transfer.WindowUpdate");
                let w = WindowUpdate::decode(msg.value.as_slice()).expect("a WindowUpdate");
                remaining += usize::try_from(w.update).expect("a positive update");
            }
            let n = remaining.min(32 * 1024).min(bytes.len() - sent);
            let data = Data {
                data: bytes[sent..sent + n].to_vec(),
            };
            if tx
                .send(any("containerd.types.transfer.Data", &data))
                .await
                .is_err()
            {
                return sent;
            }
            sent += n;
            remaining -= n;
        }
        // The end of the data; the daemon ends the stream once it has read it.
        drop(tx);
        while let Ok(Some(_)) = inbound.message().await {}
        sent
    });
    let request = TransferRequest {
        source: Some(any(
            "containerd.types.transfer.ImageImportStream",
            &ImageImportStream {
                stream: id.to_owned(),
                media_type: media_type.to_owned(),
                force_compress: false,
            },
        )),
        destination: Some(any(
            "containerd.types.transfer.ImageStore",
            &ImageStore {
                extra_references: vec![ImageReference {
                    name: "import-test".to_owned(),
                    is_prefix: true,
                    ..ImageReference::default()
                }],
                unpacks,
                ..ImageStore::default()
            },
        )),
        options: None,
    };
    let answer = TransferClient::new(ch.clone())
        .transfer(namespaced(NS, request))
        .await;
    sender.abort();
    answer.map(|_| ())
}

#[test]
fn import_through_the_service_records_the_image_and_it_runs() {
    if !require_root() || !berth_bin().is_file() {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();
    let img = build_busybox_image(daemon.dir(), IMAGE);
    let archive = img.archive.to_str().expect("utf-8 path");
    let out = berth(a, &["images", "import", "--local=false", archive]).ok();
    assert!(
        out.contains(&format!(
            "{IMAGE} ({}) imported and unpacked by the daemon",
            img.manifest_digest
        )),
        "{out}"
    );
    // The daemon unpacked it (an `unpacks` entry): one committed snapshot per layer, named by
    // its chain ID, and the config labelled with the top one, so GC keeps them.
    let chain = chain_ids(
        &img.layers
            .iter()
            .map(|l| l.diff_id.clone())
            .collect::<Vec<_>>(),
    );
    let snapshots = berth(a, &["snapshots", "ls"]).ok();
    for id in &chain {
        assert!(
            snapshots
                .lines()
                .any(|l| l.starts_with(id.as_str()) && l.contains("Committed")),
            "{id} not committed:\n{snapshots}"
        );
    }
    let config = berth(a, &["content", "ls"]).ok();
    let top = chain.last().expect("layers");
    assert!(
        config
            .lines()
            .any(|l| l.starts_with(img.config_digest.as_str())
                && l.contains(&format!("containerd.io/gc.ref.snapshot.overlayfs={top}"))),
        "{config}"
    );
    let ls = berth(a, &["images", "ls", "--format", "json"]).json();
    assert_eq!(ls[0]["name"], IMAGE, "{ls}");
    assert_eq!(ls[0]["digest"], img.manifest_digest.as_str(), "{ls}");
    // Every blob is in the content store, none left as an ingest, no lease kept.
    let blobs = berth(a, &["content", "ls", "-q"]).ok();
    for digest in img.image_blob_digests() {
        assert!(
            blobs.lines().any(|l| l == digest),
            "{digest} not in:\n{blobs}"
        );
    }
    assert_eq!(berth(a, &["content", "active", "-q"]).ok().trim(), "");
    assert_eq!(berth(a, &["leases", "ls", "-q"]).ok().trim(), "");
    // Another namespace imports the same archive: the bytes are shared, and this namespace
    // records each blob (a claim without bytes) and unpacks it too.
    let other = berth(
        a,
        &["-n", "other", "images", "import", "--local=false", archive],
    )
    .ok();
    assert!(
        other.contains("imported and unpacked by the daemon"),
        "{other}"
    );
    let other_snapshots = berth(a, &["-n", "other", "snapshots", "ls"]).ok();
    assert!(
        chain.iter().all(|id| other_snapshots.contains(id.as_str())),
        "{other_snapshots}"
    );
    // A garbage collection (deleting another name, synchronously) keeps the snapshots.
    berth(a, &["images", "tag", IMAGE, "docker.io/library/gc:now"]).ok();
    berth(a, &["images", "rm", "--sync", "docker.io/library/gc:now"]).ok();
    let after_gc = berth(a, &["snapshots", "ls"]).ok();
    assert!(
        chain.iter().all(|id| after_gc.contains(id.as_str())),
        "{after_gc}"
    );
    berth(a, &["run", "--rm", IMAGE, "archive-run", "true"]).ok();
}

/// An `unpacks` entry the daemon cannot serve is InvalidArgument naming it, and leaves
/// nothing: a snapshotter it has not loaded (refused before the archive is read), a platform
/// the archive has no image for. `--no-unpack` imports without unpacking.
#[test]
fn import_unpacks_it_cannot_do_are_invalid_argument() {
    let Some((daemon, img, bytes)) = daemon_and_archive() else {
        return;
    };
    let a = daemon.address();
    let unpack = |os: &str, arch: &str, snapshotter: &str| UnpackConfiguration {
        platform: Some(berth_proto::containerd::types::Platform {
            os: os.to_owned(),
            architecture: arch.to_owned(),
            variant: String::new(),
        }),
        snapshotter: snapshotter.to_owned(),
    };
    let (no_snapshotter, no_platform) = runtime().block_on(async {
        let ch = channel(&daemon).await;
        let no_snapshotter = import_bytes(
            &ch,
            "import-nosuch",
            bytes.clone(),
            "",
            vec![unpack("linux", "amd64", "nosuch")],
        )
        .await
        .expect_err("an unknown snapshotter must fail");
        let no_platform = import_bytes(
            &ch,
            "import-s390x",
            bytes.clone(),
            "",
            vec![unpack("linux", "s390x", "")],
        )
        .await
        .expect_err("a platform the archive lacks must fail");
        (no_snapshotter, no_platform)
    });
    assert_invalid(
        &no_snapshotter,
        &["destination.unpacks.snapshotter", "\"nosuch\""],
    );
    assert_invalid(&no_platform, &["no image for platform linux/s390x"]);
    assert_nothing_left(a, "snapshots ls");

    let archive = img.archive.to_str().expect("utf-8 path");
    let out = berth(
        a,
        &["images", "import", "--local=false", "--no-unpack", archive],
    )
    .ok();
    assert!(
        out.contains(&format!("{IMAGE} ({}) imported\n", img.manifest_digest)),
        "{out}"
    );
    assert_eq!(berth(a, &["snapshots", "ls", "-q"]).ok().trim(), "");
}

/// A daemon, the test image built in its directory, and the image's archive bytes; `None`
/// (skipped) without root or the `berth` binary.
fn daemon_and_archive() -> Option<(Daemon, TestImage, Vec<u8>)> {
    if !require_root() || !berth_bin().is_file() {
        return None;
    }
    let daemon = Daemon::start();
    let img = build_busybox_image(daemon.dir(), IMAGE);
    let bytes = std::fs::read(&img.archive).expect("read the archive");
    Some((daemon, img, bytes))
}

/// `status` is InvalidArgument and its message has each of `wanted`.
#[track_caller]
fn assert_invalid(status: &Status, wanted: &[&str]) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    for w in wanted {
        assert!(
            status.message().contains(w),
            "{w:?} not in {}",
            status.message()
        );
    }
}

/// After a failed import: no image, no lease, and nothing listed by `berth <listing> -q`.
#[track_caller]
fn assert_nothing_left(a: &std::path::Path, listing: &str) {
    let mut args: Vec<&str> = listing.split(' ').collect();
    args.push("-q");
    for args in [&["images", "ls", "-q"][..], &["leases", "ls", "-q"], &args] {
        assert_eq!(berth(a, args).ok().trim(), "", "berth {args:?}");
    }
}

#[test]
fn broken_archives_and_unknown_media_types_are_invalid_argument() {
    let Some((daemon, _img, bytes)) = daemon_and_archive() else {
        return;
    };
    let a = daemon.address();
    let (truncated, unknown, not_oci) = runtime().block_on(async {
        let ch = channel(&daemon).await;
        // Cut inside the largest blob.
        let truncated = import_bytes(
            &ch,
            "import-cut",
            bytes[..bytes.len() / 2].to_vec(),
            "",
            vec![],
        )
        .await
        .expect_err("a truncated archive must fail");
        let unknown = import_bytes(
            &ch,
            "import-rar",
            bytes.clone(),
            "application/x-rar",
            vec![],
        )
        .await
        .expect_err("an unknown media type must fail");
        let not_oci = import_bytes(
            &ch,
            "import-empty",
            vec![0; 4096],
            "application/x-tar",
            vec![],
        )
        .await
        .expect_err("an empty tar must fail");
        (truncated, unknown, not_oci)
    });
    assert_invalid(
        &truncated,
        &["invalid image archive: blobs/sha256/", "truncated archive"],
    );
    assert!(
        truncated
            .message()
            .starts_with("invalid image archive: blobs/sha256/"),
        "{}",
        truncated.message()
    );
    assert_invalid(&unknown, &["\"application/x-rar\""]);
    assert_invalid(&not_oci, &["no oci-layout file"]);
    // Nothing left behind: no image, no ingest, no lease.
    assert_nothing_left(a, "content active");

    // The CLI says it in one line and exits non-zero.
    let cut = daemon.dir().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write the truncated archive");
    let err = berth(
        a,
        &[
            "images",
            "import",
            "--local=false",
            cut.to_str().expect("utf-8"),
        ],
    )
    .fails();
    assert!(err.contains("truncated archive"), "{err}");
}

#[test]
fn export_through_the_service_gives_an_archive_another_daemon_imports_and_runs() {
    if !require_root() || !berth_bin().is_file() {
        return;
    }
    let (source, img) = daemon_with_busybox(IMAGE);
    let out = source.dir().join("exported.tar");
    let out_arg = out.to_str().expect("utf-8 path");
    berth(
        source.address(),
        &["images", "export", "--local=false", out_arg, IMAGE],
    )
    .ok();
    let bytes = std::fs::read(&out).expect("the exported archive");
    let mut names = berth_integration::image::tar_entry_paths(&bytes);
    names.sort();
    let mut want: Vec<String> = img
        .image_blob_digests()
        .iter()
        .map(|d| format!("blobs/{}", d.replacen(':', "/", 1)))
        .collect();
    want.extend(["index.json", "manifest.json", "oci-layout"].map(String::from));
    want.sort();
    assert_eq!(names, want);

    // A fresh daemon imports it (client-side) and runs it.
    let daemon = Daemon::start();
    let a = daemon.address();
    let imported = berth(a, &["images", "import", out_arg]).ok();
    assert!(
        imported.contains(&format!(
            "unpacking {IMAGE} ({})...done",
            img.manifest_digest
        )),
        "{imported}"
    );
    berth(a, &["run", "--rm", IMAGE, "exported-run", "true"]).ok();

    // An image the store does not have: NotFound naming it.
    let err = berth(
        source.address(),
        &[
            "images",
            "export",
            "--local=false",
            out_arg,
            "docker.io/library/nope:1",
        ],
    )
    .fails();
    assert!(err.contains("docker.io/library/nope:1"), "{err}");
}

#[test]
fn push_through_the_service_gives_an_image_another_daemon_pulls_and_runs() {
    if !prerequisites() {
        return;
    }
    let registry = Registry::start_plain();
    let (source, img) = daemon_with_busybox(IMAGE);
    let remote = format!("{}/pushed/bb:1", registry.host());
    let events = runtime().block_on(async {
        let ch = channel(&source).await;
        let (_tx, mut progress) = open_stream(&ch, "progress-push").await;
        let request = TransferRequest {
            source: Some(any(
                "containerd.types.transfer.ImageStore",
                &ImageStore {
                    name: IMAGE.to_owned(),
                    ..ImageStore::default()
                },
            )),
            destination: Some(any(
                "containerd.types.transfer.OCIRegistry",
                &OciRegistry {
                    reference: remote.clone(),
                    resolver: Some(RegistryResolver {
                        default_scheme: "http".into(),
                        ..RegistryResolver::default()
                    }),
                },
            )),
            options: Some(TransferOptions {
                progress_stream: "progress-push".into(),
            }),
        };
        TransferClient::new(ch.clone())
            .transfer(namespaced(NS, request))
            .await
            .expect("push through the Transfer service");
        let mut events = Vec::new();
        while let Some(msg) = progress.message().await.expect("progress stream") {
            let p =
                berth_proto::containerd::types::transfer::Progress::decode(msg.value.as_slice())
                    .expect("a Progress");
            events.push(p.event);
        }
        events
    });
    assert!(
        events
            .iter()
            .any(|e| e == &format!("Pushed to OCI Registry ({remote})")),
        "{events:?}"
    );

    // Another daemon pulls what was pushed, and runs it.
    let daemon = Daemon::start();
    let a = daemon.address();
    berth(a, &["images", "pull", "--plain-http", &remote]).ok();
    let ls = berth(a, &["images", "ls", "--format", "json"]).json();
    assert_eq!(ls[0]["digest"], img.manifest_digest.as_str(), "{ls}");
    berth(a, &["run", "--rm", &remote, "pushed-run", "true"]).ok();
}
