//! The CRI tests' images: a pause image around the static pause program and busybox images
//! with users and groups, built in memory from `busybox-static` and pushed to a local registry
//! under their upstream names (`registry.k8s.io/pause`, `docker.io/library/busybox`).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use berth_wellknown::media_type;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use serde_json::json;

use crate::image::BUSYBOX;
use crate::layers::{digest_of, gzip, raw_tar, RawEntry};

/// The sandbox image the test daemon is configured with.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.8";

/// Other tags of the same pause image (containerd's and critest's defaults).
pub const PAUSE_TAGS: [&str; 3] = ["3.6", "3.8", "3.9"];

/// Busybox with `/etc/passwd` and `/etc/group` (see [`PASSWD`], [`GROUP`]); no `USER`.
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:latest";

/// The same image as [`BUSYBOX_IMAGE`] under another tag.
pub const BUSYBOX_TAGGED_IMAGE: &str = "docker.io/library/busybox:1.36";

/// Busybox whose config says `USER 1000` (numeric uid).
pub const BUSYBOX_UID_IMAGE: &str = "docker.io/library/busybox:user-uid";

/// Busybox whose config says `USER user1` (a name from its `/etc/passwd`).
pub const BUSYBOX_USERNAME_IMAGE: &str = "docker.io/library/busybox:user-name";

/// Busybox whose config says `USER 1000:3000` (uid and gid).
pub const BUSYBOX_UID_GID_IMAGE: &str = "docker.io/library/busybox:user-uid-gid";

/// Busybox whose config declares `VOLUME /data` and holds `/data/seed`.
pub const BUSYBOX_VOLUME_IMAGE: &str = "docker.io/library/busybox:volume";

/// The `/etc/passwd` of the busybox images: root, `user1` (uid 1000, primary gid 1000),
/// `user2` (uid 1001, primary gid 1001) and `nobody` (65534).
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
    user1:x:1000:1000:user one:/home/user1:/bin/sh\n\
    user2:x:1001:1001:user two:/home/user2:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

/// The `/etc/group` of the busybox images: `user1`'s own group 1000, `group2` (gid 2000) and
/// `group3` (gid 3000) listing `user1` as a member (the supplementary groups a runtime adds for
/// uid 1000), `user2`'s group 1001 and `nogroup`.
pub const GROUP: &str = "root:x:0:\n\
    daemon:x:1:\n\
    user1:x:1000:\n\
    user2:x:1001:\n\
    group2:x:2000:user1\n\
    group3:x:3000:user1\n\
    nogroup:x:65534:\n";

/// uid of `user1`.
pub const USER1_UID: u32 = 1000;

/// The supplementary groups `user1` gets from [`GROUP`].
pub const USER1_GROUPS: [u32; 2] = [2000, 3000];

/// Contents of `/data/seed` in [`BUSYBOX_VOLUME_IMAGE`].
pub const VOLUME_SEED: &[u8] = b"seeded by the image\n";

/// `PATH` in the image configs (Docker's default).
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The config fields of a test image (Docker's `config` object in the image config).
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `User` ("" for none).
    pub user: String,
    /// `Env` besides `PATH`.
    pub env: Vec<String>,
    /// `WorkingDir` ("" for none).
    pub working_dir: String,
    /// `Volumes` (paths).
    pub volumes: Vec<String>,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
}

/// An image built in memory: its blobs and the digests a runtime reports for it.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The image manifest bytes.
    pub manifest: Vec<u8>,
    /// `sha256:<hex>` of the manifest (the repo digest).
    pub manifest_digest: String,
    /// The config bytes.
    pub config: Vec<u8>,
    /// `sha256:<hex>` of the config (the image id a CRI runtime reports).
    pub config_digest: String,
    /// The gzip layers, bottom first.
    pub layers: Vec<Vec<u8>>,
    /// The sum of the config and layer sizes (what containerd's CRI reports as the size is the
    /// unpacked size; this is only a lower bound for sanity checks).
    pub blob_size: u64,
}

/// Builds an OCI image for linux/amd64 from layers of `layers_entries` and `config`.
pub fn build_image(layers_entries: &[Vec<RawEntry>], config: &ImageConfig) -> BuiltImage {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for entries in layers_entries {
        let tar = raw_tar(entries);
        diff_ids.push(digest_of(&tar));
        layers.push(gzip(&tar));
    }
    let mut env = vec![PATH_ENV.to_owned()];
    env.extend(config.env.iter().cloned());
    let mut cfg = serde_json::Map::new();
    cfg.insert("Env".into(), json!(env));
    if !config.entrypoint.is_empty() {
        cfg.insert("Entrypoint".into(), json!(config.entrypoint));
    }
    if !config.cmd.is_empty() {
        cfg.insert("Cmd".into(), json!(config.cmd));
    }
    if !config.user.is_empty() {
        cfg.insert("User".into(), json!(config.user));
    }
    if !config.working_dir.is_empty() {
        cfg.insert("WorkingDir".into(), json!(config.working_dir));
    }
    if !config.volumes.is_empty() {
        let volumes: serde_json::Map<String, serde_json::Value> = config
            .volumes
            .iter()
            .map(|v| (v.clone(), json!({})))
            .collect();
        cfg.insert("Volumes".into(), serde_json::Value::Object(volumes));
    }
    if !config.labels.is_empty() {
        cfg.insert("Labels".into(), json!(config.labels));
    }
    let config_json = json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_bytes = serde_json::to_vec(&config_json).expect("a JSON value serializes");
    let config_digest = digest_of(&config_bytes);
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            json!({
                "mediaType": media_type::OCI_LAYER_GZIP,
                "digest": digest_of(l),
                "size": l.len(),
            })
        })
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": {
            "mediaType": media_type::OCI_CONFIG,
            "digest": config_digest,
            "size": config_bytes.len(),
        },
        "layers": layer_descs,
    }))
    .expect("a JSON value serializes");
    let blob_size = config_bytes.len() as u64 + layers.iter().map(|l| l.len() as u64).sum::<u64>();
    BuiltImage {
        manifest_digest: digest_of(&manifest),
        manifest,
        config: config_bytes,
        config_digest,
        layers,
        blob_size,
    }
}

/// The applets `busybox --list` names, so that every command of the binary is on `PATH`.
fn busybox_applets() -> Vec<String> {
    let out = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BUSYBOX} --list (busybox-static): {e}"));
    assert!(out.status.success(), "{BUSYBOX} --list failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
        .map(str::to_owned)
        .collect()
}

/// A directory entry with `mode`.
fn dir_with_mode(name: &str, mode: u32) -> RawEntry {
    let mut entry = RawEntry::dir(name);
    entry.mode = mode;
    entry
}

/// The busybox root filesystem: the usual top-level directories (`/tmp` sticky and
/// world-writable), `bin/busybox` with a hard link per applet, [`PASSWD`], [`GROUP`], and home
/// directories of `user1` and `user2` owned by them.
///
/// Debian's busybox-static runs applets inside its shell without a `PATH` lookup: `sh -c ls`
/// runs `ls` even when `/bin/ls` is masked. A test of a masked or unreadable file executes it
/// by path (`ExecSync ["/bin/ls"]`) or reads it (`cat`).
pub fn busybox_rootfs() -> Vec<RawEntry> {
    let busybox =
        fs::read(BUSYBOX).unwrap_or_else(|e| panic!("cannot read {BUSYBOX} (busybox-static): {e}"));
    let mut entries: Vec<RawEntry> = [
        "bin", "dev", "etc", "home", "proc", "root", "run", "sys", "usr", "usr/bin", "var",
    ]
    .into_iter()
    .map(RawEntry::dir)
    .collect();
    entries.push(dir_with_mode("tmp", 0o1777));
    for (home, id) in [("home/user1", 1000), ("home/user2", 1001)] {
        let mut dir = RawEntry::dir(home);
        dir.uid = id;
        dir.gid = id;
        entries.push(dir);
    }
    entries.push(RawEntry::file("bin/busybox", &busybox, 0o755));
    // Hard links, as in the busybox image: masking one applet's path (MaskedPaths) must not
    // mask the binary behind every other one. Their mode is the binary's: appliers chmod the
    // shared inode to a link's mode.
    entries.extend(busybox_applets().iter().map(|a| {
        let mut link = RawEntry::hardlink(&format!("bin/{a}"), "bin/busybox");
        link.mode = 0o755;
        link
    }));
    entries.push(RawEntry::file("etc/passwd", PASSWD.as_bytes(), 0o644));
    entries.push(RawEntry::file("etc/group", GROUP.as_bytes(), 0o644));
    entries
}

/// The busybox image with `config` (its `Cmd` defaults to `sh`).
pub fn busybox_image(config: ImageConfig) -> BuiltImage {
    let mut config = config;
    if config.cmd.is_empty() && config.entrypoint.is_empty() {
        config.cmd = vec!["sh".to_owned()];
    }
    build_image(&[busybox_rootfs()], &config)
}

/// The pause image: `/pause` (the static program at `pause_binary`) as its entrypoint, run as
/// root, in a single layer.
pub fn pause_image(pause_binary: &Path) -> BuiltImage {
    let pause = fs::read(pause_binary)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", pause_binary.display()));
    let entries = vec![
        RawEntry::file("pause", &pause, 0o755),
        RawEntry::dir("dev"),
        RawEntry::dir("etc"),
        RawEntry::dir("proc"),
        RawEntry::dir("sys"),
    ];
    let config = ImageConfig {
        entrypoint: vec!["/pause".to_owned()],
        ..ImageConfig::default()
    };
    build_image(&[entries], &config)
}

/// Every busybox variant the test registry serves, by full name.
pub fn busybox_images() -> Vec<(&'static str, BuiltImage)> {
    let user = |u: &str| ImageConfig {
        user: u.to_owned(),
        ..ImageConfig::default()
    };
    let plain = busybox_image(ImageConfig::default());
    let mut volume_layer = vec![RawEntry::dir("data")];
    volume_layer.push(RawEntry::file("data/seed", VOLUME_SEED, 0o644));
    let volume = build_image(
        &[busybox_rootfs(), volume_layer],
        &ImageConfig {
            cmd: vec!["sh".to_owned()],
            volumes: vec!["/data".to_owned()],
            ..ImageConfig::default()
        },
    );
    vec![
        (BUSYBOX_IMAGE, plain.clone()),
        (BUSYBOX_TAGGED_IMAGE, plain),
        (BUSYBOX_UID_IMAGE, busybox_image(user("1000"))),
        (BUSYBOX_USERNAME_IMAGE, busybox_image(user("user1"))),
        (BUSYBOX_UID_GID_IMAGE, busybox_image(user("1000:3000"))),
        (BUSYBOX_VOLUME_IMAGE, volume),
    ]
}

/// Splits a full image name (`registry.k8s.io/pause:3.8`) into the registry host, the
/// repository path and the tag (`latest` when none).
pub fn split_name(name: &str) -> (&str, &str, &str) {
    let (host, rest) = name
        .split_once('/')
        .unwrap_or_else(|| panic!("{name} is not a full image name"));
    match rest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (host, repo, tag),
        _ => (host, rest, "latest"),
    }
}

/// Pushes `image` to the registry at `registry_host` (`127.0.0.1:PORT`, plain HTTP) as
/// `<repo>:<tag>` for the repository and tag of each full name in `names` (the upstream host is
/// dropped: `hosts.toml` sends it to this registry). `auth` is `(user, password)` for a registry
/// with basic auth. Panics on any registry error.
pub async fn push_image(
    registry_host: &str,
    names: &[&str],
    image: &BuiltImage,
    auth: Option<(&str, &str)>,
) {
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let registry_auth = match auth {
        Some((user, pass)) => RegistryAuth::Basic(user.to_owned(), pass.to_owned()),
        None => RegistryAuth::Anonymous,
    };
    for name in names {
        let (_, repo, tag) = split_name(name);
        let reference: Reference = format!("{registry_host}/{repo}:{tag}")
            .parse()
            .unwrap_or_else(|e| panic!("bad reference for {name}: {e}"));
        client
            .store_auth_if_needed(reference.resolve_registry(), &registry_auth)
            .await;
        let mut blobs = vec![(image.config_digest.clone(), image.config.clone())];
        blobs.extend(image.layers.iter().map(|l| (digest_of(l), l.clone())));
        for (digest, data) in blobs {
            client
                .push_blob(&reference, data, &digest)
                .await
                .unwrap_or_else(|e| panic!("push blob {digest} of {name}: {e}"));
        }
        let manifest_type = media_type::OCI_MANIFEST
            .parse()
            .expect("the OCI manifest media type is a header value");
        client
            .push_manifest_raw(&reference, image.manifest.clone(), manifest_type)
            .await
            .unwrap_or_else(|e| panic!("push manifest of {name}: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_host_repo_and_tag() {
        assert_eq!(
            split_name("registry.k8s.io/pause:3.8"),
            ("registry.k8s.io", "pause", "3.8")
        );
        assert_eq!(
            split_name("docker.io/library/busybox"),
            ("docker.io", "library/busybox", "latest")
        );
        assert_eq!(
            split_name("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000", "a/b", "latest")
        );
    }

    #[test]
    fn config_holds_user_volumes_and_diff_ids() {
        let image = build_image(
            &[vec![RawEntry::dir("x")]],
            &ImageConfig {
                user: "1000".into(),
                volumes: vec!["/data".into()],
                ..ImageConfig::default()
            },
        );
        let config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
        assert_eq!(config["config"]["User"], "1000");
        assert!(config["config"]["Volumes"]["/data"].is_object());
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
        assert_eq!(image.config_digest, digest_of(&image.config));
    }
}
