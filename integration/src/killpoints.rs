//! Helpers of the kill-point suite (`tests/kill_points.rs`): a seeded pseudo-random generator
//! whose seed is printed and can be replayed, busybox images whose top layer differs per image
//! (so that every import writes new content), and probes of what a daemon leaves on the host
//! (shim processes, mounts, runc state, cgroups, sockets).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::command::run_with_timeout;
use crate::image::BUSYBOX;
use crate::layers::{digest_of, gzip, raw_tar, RawEntry};
pub use crate::procs::{arg_after, pid_alive, shim_processes};

/// A small, fast, seeded generator (splitmix64): the same seed gives the same sequence on every
/// machine, which is all a replayable test needs.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// An index into a slice of `len` items; panics when `len` is 0.
    pub fn index(&mut self, len: usize) -> usize {
        assert!(len > 0, "index into an empty slice");
        usize::try_from(self.below(len as u64)).expect("below len fits in usize")
    }

    /// A duration uniformly in `0..=max`, at microsecond resolution.
    pub fn duration_up_to(&mut self, max: Duration) -> Duration {
        let micros = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.below(micros.saturating_add(1)))
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// The seed named by the environment variable `var` (decimal, or hex with `0x`), else one made
/// from the clock and the process id. The second value says whether it came from `var`.
/// Panics when `var` is set but is not a number.
pub fn seed_from_env(var: &str) -> (u64, bool) {
    if let Ok(text) = std::env::var(var) {
        let text = text.trim();
        let parsed = match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => text.parse(),
        };
        let seed = parsed.unwrap_or_else(|e| panic!("{var}={text:?} is not a u64: {e}"));
        return (seed, true);
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // Fold the 128-bit nanosecond count and the pid; the seed only needs to differ per run.
    let seed = (nanos as u64) ^ ((nanos >> 64) as u64) ^ (u64::from(std::process::id()) << 32);
    (seed, false)
}

/// Commands linked to busybox in the base layer.
const APPLETS: [&str; 6] = ["sh", "sleep", "true", "echo", "cat", "ls"];

/// Path, inside the image, of the file the top layer adds.
pub const VARIANT_FILE: &str = "etc/variant";

/// One busybox image as an OCI layout tar: a shared base layer (busybox and applets) and a top
/// layer holding [`VARIANT_FILE`] with bytes of its own.
#[derive(Debug, Clone)]
pub struct VariantImage {
    /// Full image name (the `io.containerd.image.name` annotation).
    pub name: String,
    /// The OCI layout tar.
    pub archive: PathBuf,
    /// `sha256:<hex>` of the archive's `index.json` (ctr's importer stores it as a blob too).
    pub index_digest: String,
    /// `sha256:<hex>` of the manifest (the image's target after import).
    pub manifest_digest: String,
    /// `sha256:<hex>` of the config.
    pub config_digest: String,
    /// Digests of the gzip layer blobs, base first.
    pub layer_digests: Vec<String>,
    /// Chain IDs of the layers, base first (names of the committed snapshots after unpack).
    pub chain_ids: Vec<String>,
    /// The contents of [`VARIANT_FILE`].
    pub variant: Vec<u8>,
}

/// Builds [`VariantImage`]s in a directory; the base layer is compressed once.
#[derive(Debug)]
pub struct ImageFactory {
    dir: PathBuf,
    base_gz: Vec<u8>,
    base_diff_id: String,
}

impl ImageFactory {
    /// A factory writing tars into `dir`. Panics when `/bin/busybox` cannot be read.
    pub fn new(dir: &Path) -> Self {
        let busybox = fs::read(BUSYBOX)
            .unwrap_or_else(|e| panic!("cannot read {BUSYBOX} (busybox-static): {e}"));
        let mut entries: Vec<RawEntry> = ["bin", "etc", "tmp", "proc", "sys", "dev", "root"]
            .into_iter()
            .map(RawEntry::dir)
            .collect();
        entries.push(RawEntry::file("bin/busybox", &busybox, 0o755));
        entries.extend(
            APPLETS
                .iter()
                .map(|a| RawEntry::symlink(&format!("bin/{a}"), "busybox")),
        );
        let tar = raw_tar(&entries);
        Self {
            dir: dir.to_owned(),
            base_diff_id: digest_of(&tar),
            base_gz: gzip(&tar),
        }
    }

    /// The bytes of `/bin/busybox` as the base layer holds them.
    pub fn busybox() -> Vec<u8> {
        fs::read(BUSYBOX).unwrap_or_else(|e| panic!("cannot read {BUSYBOX}: {e}"))
    }

    /// Writes the image `name` whose top layer holds `variant` as [`VARIANT_FILE`].
    pub fn build(&self, name: &str, variant: Vec<u8>) -> VariantImage {
        let top_tar = raw_tar(&[
            RawEntry::dir("etc"),
            RawEntry::file(VARIANT_FILE, &variant, 0o644),
        ]);
        let top_gz = gzip(&top_tar);
        let diff_ids = [self.base_diff_id.clone(), digest_of(&top_tar)];
        let chain_ids = vec![
            diff_ids[0].clone(),
            digest_of(format!("{} {}", diff_ids[0], diff_ids[1]).as_bytes()),
        ];
        let layers = [
            (digest_of(&self.base_gz), &self.base_gz),
            (digest_of(&top_gz), &top_gz),
        ];
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string()
        .into_bytes();
        let config_digest = digest_of(&config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layers.iter().map(|(digest, data)| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest,
                "size": data.len(),
            })).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes();
        let manifest_digest = digest_of(&manifest);
        let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag,
                },
                "platform": {"architecture": "amd64", "os": "linux"},
            }],
        })
        .to_string()
        .into_bytes();

        let file_name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let archive = self.dir.join(format!("{file_name}.tar"));
        let mut files: Vec<(String, &[u8])> = vec![
            (
                "oci-layout".to_owned(),
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            ),
            ("index.json".to_owned(), &index),
        ];
        for (digest, data) in [
            (&config_digest, &config),
            (&manifest_digest, &manifest),
            (&layers[0].0, layers[0].1),
            (&layers[1].0, layers[1].1),
        ] {
            let hex = digest.strip_prefix("sha256:").expect("sha256 digests");
            files.push((format!("blobs/sha256/{hex}"), data));
        }
        let entries: Vec<RawEntry> = files
            .iter()
            .map(|(path, data)| RawEntry::file(path, data, 0o644))
            .collect();
        fs::write(&archive, raw_tar(&entries))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", archive.display()));
        VariantImage {
            name: name.to_owned(),
            archive,
            index_digest: digest_of(&index),
            manifest_digest,
            config_digest,
            layer_digests: layers.iter().map(|(d, _)| d.clone()).collect(),
            chain_ids,
            variant,
        }
    }
}

/// Mount points at or under `dir`, from `/proc/self/mountinfo`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// Unix sockets at or under `dir` (recursively, not following symlinks).
pub fn sockets_under(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_socket() {
            found.push(path);
        } else if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&path) {
                stack.extend(entries.filter_map(Result::ok).map(|e| e.path()));
            }
        }
    }
    found.sort();
    found
}

/// The ids of the containers `runc --root <root> list` shows; empty when `root` does not
/// exist. Panics when runc fails on an existing root.
pub fn runc_containers(root: &Path) -> Vec<String> {
    if !root.exists() {
        return Vec::new();
    }
    let mut cmd = Command::new("runc");
    cmd.arg("--root").arg(root).args(["list", "-q"]);
    let out = run_with_timeout(cmd, Duration::from_secs(20));
    out.ok()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Cgroup directories made below `<hierarchy>/<namespace>/` in every mounted hierarchy under
/// `/sys/fs/cgroup` (each v1 controller and the cgroup2 one, whether at the top or under
/// `unified`).
pub fn cgroups_of(namespace: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let mut hierarchies = vec![base.to_owned()];
    if let Ok(entries) = fs::read_dir(base) {
        hierarchies.extend(entries.filter_map(Result::ok).map(|e| e.path()));
    }
    let mut found = Vec::new();
    for hierarchy in hierarchies {
        let Ok(entries) = fs::read_dir(hierarchy.join(namespace)) else {
            continue;
        };
        found.extend(
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    found.sort();
    found
}

/// Removes the (empty) `<hierarchy>/<namespace>` cgroup directories a test's namespace left;
/// errors are ignored (a directory still holding a cgroup stays).
pub fn remove_namespace_cgroups(namespace: &str) {
    let base = Path::new("/sys/fs/cgroup");
    let _ = fs::remove_dir(base.join(namespace));
    if let Ok(entries) = fs::read_dir(base) {
        for entry in entries.filter_map(Result::ok) {
            let _ = fs::remove_dir(entry.path().join(namespace));
        }
    }
}

/// Mounts one snapshot mount (`mount -t <kind> -o <options> <source> <target>`), returning
/// mount's error text on failure.
pub fn mount_one(
    kind: &str,
    source: &str,
    options: &[String],
    target: &Path,
) -> Result<(), String> {
    let mut cmd = Command::new("mount");
    cmd.arg("-t").arg(kind);
    if !options.is_empty() {
        cmd.arg("-o").arg(options.join(","));
    }
    cmd.arg(source).arg(target);
    let out = run_with_timeout(cmd, Duration::from_secs(20));
    if out.success() {
        Ok(())
    } else {
        Err(format!("{out}"))
    }
}

/// Unmounts `target` (lazily, so that a busy mount cannot hang the test).
pub fn unmount(target: &Path) {
    let mut cmd = Command::new("umount");
    cmd.arg("-l").arg(target);
    let _ = run_with_timeout(cmd, Duration::from_secs(20));
}
