//! The CRI image service as the kubelet uses it: PullImage by tag, implicit `:latest` and
//! digest from the local registry (through `hosts.toml`, never the internet) and with basic
//! auth; ImageStatus and ListImages agreeing with `ctr -n k8s.io images ls`; RepoTags,
//! RepoDigests, uid and username; RemoveImage by any name; ImageFsInfo; bad references.
//!
//! Every case runs against `berthd` (`cri_*`) and against a private containerd 1.6 with the
//! very same CRI section (`reference_containerd_*`): a case failing on containerd is a wrong
//! test.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeSet;
use std::process::Command;

use berth_integration::cri::images::{
    busybox_images, BuiltImage, BUSYBOX_IMAGE, BUSYBOX_TAGGED_IMAGE, BUSYBOX_UID_GID_IMAGE,
    BUSYBOX_UID_IMAGE, BUSYBOX_USERNAME_IMAGE,
};
use berth_integration::cri::{
    basic_auth, image_spec, require_cri, CriClient, CriEnv, CriEnvOptions, AUTH_IMAGE,
    AUTH_PASSWORD, AUTH_USER,
};
use berth_integration::{ctr_at, parse_table};
use berth_proto::runtime::v1::{
    AuthConfig, Image, ImageFilter, ImageFsInfoRequest, ImageStatusRequest, ListImagesRequest,
};
use tonic::Code;

/// The label containerd's CRI puts on the records it manages.
const MANAGED: &str = "io.cri-containerd.image=managed";

async fn env(reference: bool) -> CriEnv {
    CriEnv::start_with(CriEnvOptions {
        containerd: reference,
        ..CriEnvOptions::default()
    })
    .await
}

/// The plain busybox image the registry serves as `busybox:latest` and `busybox:1.36`:
/// (image id, manifest digest).
fn busybox_digests() -> (String, String) {
    let image = busybox();
    (image.config_digest, image.manifest_digest)
}

fn busybox() -> BuiltImage {
    busybox_images()
        .into_iter()
        .find(|(name, _)| *name == BUSYBOX_IMAGE)
        .map(|(_, image)| image)
        .expect("the harness serves busybox:latest")
}

/// `ctr -n k8s.io images ls` as rows.
fn ctr_images(env: &CriEnv) -> Vec<berth_integration::Row> {
    let out = ctr_at(env.address(), &["-n", "k8s.io", "images", "ls"]);
    parse_table(out.ok()).1
}

/// The names `ctr -n k8s.io images ls` shows.
fn ctr_names(env: &CriEnv) -> BTreeSet<String> {
    ctr_images(env)
        .into_iter()
        .map(|r| r["REF"].clone())
        .collect()
}

async fn status(cri: &mut CriClient, image: &str) -> Image {
    cri.image_status(image)
        .await
        .unwrap_or_else(|e| panic!("ImageStatus {image}: {e}"))
        .unwrap_or_else(|| panic!("no status for {image}"))
}

async fn pulls_by_tag_latest_and_digest_name_the_image_as_containerd(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = env(reference).await;
    let mut cri = env.client().await;
    let (id, manifest) = busybox_digests();
    let repo_digest = format!("docker.io/library/busybox@{manifest}");

    // A short name is docker.io/library/<name>:latest; the answer is the image id.
    let got = cri.pull_image("busybox").await.expect("PullImage busybox");
    assert_eq!(got, id, "PullImage answers the image id");
    let s = status(&mut cri, "busybox").await;
    assert_eq!(s.id, id);
    assert_eq!(s.repo_tags, [BUSYBOX_IMAGE]);
    assert_eq!(s.repo_digests, [repo_digest.as_str()]);
    // The size of what the image is made of (manifest, config, layers), as containerd.
    let built = busybox();
    let blobs = built.manifest.len() + built.config.len();
    let layers: usize = built.layers.iter().map(Vec::len).sum();
    assert_eq!(s.size, (blobs + layers) as u64, "{s:?}");

    // Another tag of the same image and the digest itself: one image, every name on it.
    let got = cri
        .pull_image(BUSYBOX_TAGGED_IMAGE)
        .await
        .expect("PullImage busybox:1.36");
    assert_eq!(got, id);
    let got = cri
        .pull_image(&format!("busybox@{manifest}"))
        .await
        .expect("PullImage by digest");
    assert_eq!(got, id);
    for name in [
        "busybox",
        BUSYBOX_TAGGED_IMAGE,
        repo_digest.as_str(),
        id.as_str(),
        &id[..19],
        &id[7..19],
    ] {
        let s = status(&mut cri, name).await;
        assert_eq!(s.id, id, "ImageStatus {name}");
        assert_eq!(
            s.repo_tags,
            [BUSYBOX_TAGGED_IMAGE, BUSYBOX_IMAGE],
            "ImageStatus {name}"
        );
        assert_eq!(s.repo_digests, [repo_digest.as_str()], "ImageStatus {name}");
    }

    // ctr sees the records containerd's CRI makes: each name and the id, all managed.
    let rows = ctr_images(&env);
    let names: BTreeSet<&str> = rows.iter().map(|r| r["REF"].as_str()).collect();
    let wanted: BTreeSet<&str> = [
        BUSYBOX_IMAGE,
        BUSYBOX_TAGGED_IMAGE,
        repo_digest.as_str(),
        id.as_str(),
    ]
    .into();
    assert_eq!(names, wanted, "ctr -n k8s.io images ls: {rows:#?}");
    for row in &rows {
        assert_eq!(row["DIGEST"], manifest, "{row:?}");
        assert!(row["LABELS"].contains(MANAGED), "{row:?}");
    }

    // ListImages agrees with ImageStatus and with ctr.
    let listed = cri.list_images().await.expect("ListImages");
    let busybox: Vec<&Image> = listed.iter().filter(|i| i.id == id).collect();
    assert_eq!(busybox.len(), 1, "{listed:#?}");
    assert_eq!(*busybox[0], status(&mut cri, &id).await);
    let mut from_cri: BTreeSet<String> = BTreeSet::new();
    for image in &listed {
        from_cri.insert(image.id.clone());
        from_cri.extend(image.repo_tags.iter().cloned());
        from_cri.extend(image.repo_digests.iter().cloned());
    }
    assert_eq!(from_cri, ctr_names(&env), "ListImages vs ctr");

    // The image filter names one image.
    let filtered = cri
        .image
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: Some(image_spec(BUSYBOX_TAGGED_IMAGE)),
            }),
        })
        .await
        .expect("ListImages with a filter")
        .into_inner()
        .images;
    assert_eq!(filtered.iter().map(|i| &i.id).collect::<Vec<_>>(), [&id]);
}

async fn status_of_an_absent_image_is_empty(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = env(reference).await;
    let mut cri = env.client().await;
    for name in ["busybox:absent", "sha256:0123456789ab"] {
        let reply = cri
            .image
            .image_status(ImageStatusRequest {
                image: Some(image_spec(name)),
                verbose: false,
            })
            .await
            .unwrap_or_else(|e| panic!("ImageStatus of absent {name} is no error: {e}"))
            .into_inner();
        assert!(reply.image.is_none(), "{reply:?}");
    }
}

async fn image_user_gives_uid_or_username(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = env(reference).await;
    let mut cri = env.client().await;
    for (name, uid, username) in [
        (BUSYBOX_IMAGE, None, ""),
        (BUSYBOX_UID_IMAGE, Some(1000), ""),
        (BUSYBOX_UID_GID_IMAGE, Some(1000), ""),
        (BUSYBOX_USERNAME_IMAGE, None, "user1"),
    ] {
        cri.pull_image(name)
            .await
            .unwrap_or_else(|e| panic!("PullImage {name}: {e}"));
        let s = status(&mut cri, name).await;
        assert_eq!(s.uid.map(|u| u.value), uid, "{name}: {s:?}");
        assert_eq!(s.username, username, "{name}: {s:?}");
    }
}

async fn remove_image_removes_every_name(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = env(reference).await;
    let mut cri = env.client().await;
    let (id, manifest) = busybox_digests();
    cri.pull_image(BUSYBOX_IMAGE).await.expect("PullImage");
    cri.pull_image(BUSYBOX_TAGGED_IMAGE)
        .await
        .expect("PullImage");
    cri.pull_image(BUSYBOX_UID_IMAGE).await.expect("PullImage");
    let other = status(&mut cri, BUSYBOX_UID_IMAGE).await;

    cri.remove_image(BUSYBOX_TAGGED_IMAGE)
        .await
        .expect("RemoveImage by one tag");
    for name in [BUSYBOX_IMAGE, BUSYBOX_TAGGED_IMAGE, id.as_str()] {
        assert_eq!(cri.image_status(name).await.expect("ImageStatus"), None);
    }
    let left = ctr_names(&env);
    assert!(
        left.iter().all(|n| !n.contains(&manifest)
            && *n != id
            && !n.ends_with("busybox:latest")
            && !n.ends_with("busybox:1.36")),
        "records left: {left:?}"
    );
    // Nothing else goes.
    assert_eq!(status(&mut cri, BUSYBOX_UID_IMAGE).await, other);
    // The content went with the last record.
    let content = ctr_at(env.address(), &["-n", "k8s.io", "content", "ls", "-q"]);
    assert!(
        !content.ok().contains(&manifest),
        "manifest {manifest} still in the content store"
    );
    // A missing image is success, by name or by id.
    cri.remove_image(BUSYBOX_IMAGE)
        .await
        .expect("RemoveImage of a removed image");
    cri.remove_image(&id)
        .await
        .expect("RemoveImage of a removed id");

    // By id prefix.
    cri.remove_image(&other.id[..19])
        .await
        .expect("RemoveImage by id prefix");
    assert_eq!(
        cri.image_status(BUSYBOX_UID_IMAGE)
            .await
            .expect("ImageStatus"),
        None
    );
}

async fn pull_with_basic_auth(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = CriEnv::start_with(CriEnvOptions {
        containerd: reference,
        auth_registry: true,
        ..CriEnvOptions::default()
    })
    .await;
    let mut cri = env.client().await;
    let refused = cri
        .pull_image(AUTH_IMAGE)
        .await
        .expect_err("pulled without credentials");
    assert_ne!(refused.code(), Code::Ok);
    // Credentials for another server are not sent.
    let elsewhere = AuthConfig {
        server_address: "https://elsewhere.test".to_owned(),
        ..basic_auth(AUTH_USER, AUTH_PASSWORD)
    };
    cri.pull_image_with(AUTH_IMAGE, Some(elsewhere), None)
        .await
        .expect_err("credentials of another server were used");
    assert_eq!(
        cri.image_status(AUTH_IMAGE).await.expect("ImageStatus"),
        None
    );

    // `auth`: base64 of user:password, as a docker config's `auth` field.
    let encoded = base64(&format!("{AUTH_USER}:{AUTH_PASSWORD}"));
    let auth = AuthConfig {
        auth: encoded,
        ..AuthConfig::default()
    };
    let id = cri
        .pull_image_with(AUTH_IMAGE, Some(auth), None)
        .await
        .expect("PullImage with auth");
    let (busybox_id, _) = busybox_digests();
    assert_eq!(id, busybox_id);
    cri.remove_image(AUTH_IMAGE).await.expect("RemoveImage");

    let id = cri
        .pull_image_with(AUTH_IMAGE, Some(basic_auth(AUTH_USER, AUTH_PASSWORD)), None)
        .await
        .expect("PullImage with username and password");
    assert_eq!(id, busybox_id);
    let s = status(&mut cri, AUTH_IMAGE).await;
    assert_eq!(s.repo_tags, [AUTH_IMAGE]);
    let log = env.auth_registry().expect("auth registry").log_text();
    assert!(
        log.contains("/v2/private/busybox/manifests/latest"),
        "the auth registry saw no manifest request"
    );
}

async fn hosts_are_tried_in_order_and_name_the_original_registry(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = env(reference).await;
    let mut cri = env.client().await;
    // quay.io: a dead first endpoint, then the local registry, and a dead `server`: the pull
    // succeeds only through the second `[host]` (so the hosts are used, past a dead one), and
    // nothing falls back to the internet.
    let registry = env.registry().host();
    let dir = env.hosts_dir().join("quay.io");
    std::fs::create_dir_all(&dir).expect("create hosts dir");
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"http://127.0.0.1:2\"\n\n\
             [host.\"http://127.0.0.1:1\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n\
             [host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .expect("write hosts.toml");
    let (id, manifest) = busybox_digests();
    let got = cri
        .pull_image("quay.io/library/busybox:1.36")
        .await
        .expect("PullImage through hosts.toml");
    assert_eq!(got, id);
    let s = status(&mut cri, "quay.io/library/busybox:1.36").await;
    assert_eq!(s.repo_tags, ["quay.io/library/busybox:1.36"]);
    assert_eq!(
        s.repo_digests,
        [format!("quay.io/library/busybox@{manifest}")]
    );
    let log = env.registry().log_text();
    assert!(
        log.contains("/v2/library/busybox/manifests/1.36"),
        "the local registry saw no request for library/busybox:1.36"
    );
}

async fn bad_references_are_invalid_arguments(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = env(reference).await;
    let mut cri = env.client().await;
    let err = cri
        .pull_image("Not A Reference!")
        .await
        .expect_err("a malformed reference was pulled");
    if !reference {
        // containerd 1.6 answers Unknown here; the issue asks for InvalidArgument.
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("image.image"), "{err:?}");
    }
    let err = cri
        .pull_image("busybox:absent")
        .await
        .expect_err("an absent tag was pulled");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(ctr_names(&env).is_empty(), "a failed pull left records");
}

async fn image_fs_info_reports_the_snapshotter_filesystem(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = env(reference).await;
    let mut cri = env.client().await;
    cri.pull_image(BUSYBOX_IMAGE).await.expect("PullImage");
    let reply = cri
        .image
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo")
        .into_inner();
    let fs = reply
        .image_filesystems
        .first()
        .expect("one image filesystem");
    let mountpoint = &fs.fs_id.as_ref().expect("fs_id").mountpoint;
    assert!(
        mountpoint.ends_with("io.containerd.snapshotter.v1.overlayfs"),
        "{fs:?}"
    );
    assert!(fs.timestamp > 0, "{fs:?}");
    if !reference {
        // containerd reports its snapshot sizes on its own schedule (every 10 s).
        assert!(
            fs.used_bytes.as_ref().is_some_and(|u| u.value > 0),
            "{fs:?}"
        );
        assert!(
            fs.inodes_used.as_ref().is_some_and(|u| u.value > 0),
            "{fs:?}"
        );
    }
}

/// `base64` of `text` (coreutils).
fn base64(text: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", "printf %s \"$1\" | base64 -w0", "sh", text])
        .output()
        .expect("run base64");
    assert!(out.status.success(), "base64 failed");
    String::from_utf8(out.stdout).expect("base64 prints ASCII")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_pulls_by_tag_latest_and_digest_name_the_image_as_containerd() {
    pulls_by_tag_latest_and_digest_name_the_image_as_containerd(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_pulls_by_tag_latest_and_digest_name_the_image_as_containerd() {
    pulls_by_tag_latest_and_digest_name_the_image_as_containerd(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_status_of_an_absent_image_is_empty() {
    status_of_an_absent_image_is_empty(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_status_of_an_absent_image_is_empty() {
    status_of_an_absent_image_is_empty(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_image_user_gives_uid_or_username() {
    image_user_gives_uid_or_username(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_image_user_gives_uid_or_username() {
    image_user_gives_uid_or_username(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_remove_image_removes_every_name() {
    remove_image_removes_every_name(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_remove_image_removes_every_name() {
    remove_image_removes_every_name(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_pull_with_basic_auth() {
    pull_with_basic_auth(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_pull_with_basic_auth() {
    pull_with_basic_auth(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_hosts_are_tried_in_order_and_name_the_original_registry() {
    hosts_are_tried_in_order_and_name_the_original_registry(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_hosts_are_tried_in_order_and_name_the_original_registry() {
    hosts_are_tried_in_order_and_name_the_original_registry(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_bad_references_are_invalid_arguments() {
    bad_references_are_invalid_arguments(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_bad_references_are_invalid_arguments() {
    bad_references_are_invalid_arguments(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_image_fs_info_reports_the_snapshotter_filesystem() {
    image_fs_info_reports_the_snapshotter_filesystem(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_image_fs_info_reports_the_snapshotter_filesystem() {
    image_fs_info_reports_the_snapshotter_filesystem(true).await;
}
