//! A small, deterministic OCI image built from the Debian `busybox-static` binary, written as an
//! OCI layout tar that `ctr images import` accepts (the Rust counterpart of
//! `shared/tools/wire-trace/mk-tiny-image.py`).
//!
//! Every tar header has a fixed mtime, owner and mode, and the gzip headers carry no timestamp or
//! file name, so the same busybox binary always yields the same digests.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use berth_wellknown::{annotation, media_type};
use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

/// The busybox binary the image is built from (Debian `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// Modification time of every tar entry (2023-11-14T22:13:20Z).
const MTIME: u64 = 1_700_000_000;

/// Commands linked to busybox in `bin/` of the first layer.
const APPLETS: [&str; 16] = [
    "sh", "ls", "cat", "echo", "sleep", "true", "false", "id", "env", "ps", "top", "mkdir", "rm",
    "touch", "wc", "head",
];

/// The contents of `etc/hello` in the second layer.
pub const HELLO: &[u8] = b"hello from layer 2\n";

/// One layer of a [`TestImage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// `sha256:<hex>` of the gzip blob.
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
    /// Size of the gzip blob in bytes.
    pub size: u64,
}

/// An OCI layout tar on disk and the digests of what is in it.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// The full image name (`io.containerd.image.name` annotation).
    pub name: String,
    /// Path of the OCI layout tar.
    pub archive: PathBuf,
    /// `sha256:<hex>` of `index.json` as written in the archive.
    pub index_digest: String,
    /// `sha256:<hex>` of the image manifest.
    pub manifest_digest: String,
    /// Size of the image manifest in bytes.
    pub manifest_size: u64,
    /// `sha256:<hex>` of the image config.
    pub config_digest: String,
    /// The two layers, bottom first.
    pub layers: Vec<LayerInfo>,
    /// Every blob under `blobs/sha256/`, by digest.
    pub blobs: BTreeMap<String, Vec<u8>>,
}

impl TestImage {
    /// The digests of the manifest, config and layers: the blobs an image import stores besides
    /// the index, which containerd's importer re-encodes.
    pub fn image_blob_digests(&self) -> Vec<String> {
        let mut all = vec![self.manifest_digest.clone(), self.config_digest.clone()];
        all.extend(self.layers.iter().map(|l| l.digest.clone()));
        all
    }

    /// The bytes of blob `digest`; panics when the archive has no such blob.
    pub fn blob(&self, digest: &str) -> &[u8] {
        self.blobs
            .get(digest)
            .unwrap_or_else(|| panic!("no blob {digest} in {}", self.archive.display()))
    }
}

/// `len` bytes that do not compress (xorshift64 output from `seed`), for layers whose size
/// must survive gzip.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// One entry of a layer tar.
enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
}

/// A ustar header with fixed owner and mtime.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(size);
    h
}

/// An uncompressed tar of `entries`, in order.
fn layer_tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let result = match *entry {
            Entry::Dir(path) => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                builder.append_data(&mut h, format!("{path}/"), &[][..])
            }
            Entry::File(path, data, mode) => {
                let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
                builder.append_data(&mut h, path, data)
            }
            Entry::Symlink(path, target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                builder.append_link(&mut h, path, target)
            }
        };
        result.expect("append to an in-memory tar");
    }
    builder.into_inner().expect("finish an in-memory tar")
}

/// Gzip of `data` with no mtime or file name in the header, so the output depends only on the
/// input.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc: GzEncoder<Vec<u8>> = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    enc.write_all(data).expect("gzip into memory");
    enc.finish().expect("finish gzip into memory")
}

/// A JSON string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The tag of `name` (after the last `:` that follows the last `/`), or `latest`.
fn tag_of(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) if !name.contains('@') => tag,
        _ => "latest",
    }
}

/// Builds the busybox test image named `name` (say `docker.io/library/bb:latest`) and writes it
/// as `<dir>/<file-safe name>.tar`. Panics when `/bin/busybox` cannot be read or the archive
/// cannot be written.
///
/// The archive holds `oci-layout`, `index.json` (one manifest, platform linux/amd64, annotated
/// with `io.containerd.image.name` = `name` and `org.opencontainers.image.ref.name` = the tag)
/// and `blobs/sha256/<hex>` for the manifest, the config and two gzip layers: the first with
/// `bin etc proc sys dev tmp root`, `bin/busybox` and applet symlinks, `etc/passwd` and
/// `etc/group`; the second with `etc/hello`.
///
/// JSON documents are written in the byte form Go's `encoding/json` gives the OCI structs (field
/// order of the Go types, sorted maps, no spaces), so containerd's importer, which re-encodes
/// `index.json` when storing it, stores the same index bytes.
pub fn build_busybox_image(dir: &Path, name: &str) -> TestImage {
    let busybox =
        fs::read(BUSYBOX).unwrap_or_else(|e| panic!("cannot read {BUSYBOX} (busybox-static): {e}"));

    let mut first: Vec<Entry<'_>> = ["bin", "etc", "proc", "sys", "dev", "tmp", "root"]
        .into_iter()
        .map(Entry::Dir)
        .collect();
    first.push(Entry::File("bin/busybox", &busybox, 0o755));
    let applet_paths: Vec<String> = APPLETS.iter().map(|a| format!("bin/{a}")).collect();
    first.extend(
        applet_paths
            .iter()
            .map(|p| Entry::Symlink(p.as_str(), "busybox")),
    );
    first.push(Entry::File(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    ));
    first.push(Entry::File("etc/group", b"root:x:0:\n", 0o644));
    let second = [Entry::Dir("etc"), Entry::File("etc/hello", HELLO, 0o644)];

    let mut blobs = BTreeMap::new();
    let mut layers = Vec::new();
    for entries in [&first[..], &second[..]] {
        let tar = layer_tar(entries);
        let gz = gzip(&tar);
        let info = LayerInfo {
            digest: sha256_digest(&gz),
            diff_id: sha256_digest(&tar),
            size: gz.len() as u64,
        };
        blobs.insert(info.digest.clone(), gz);
        layers.push(info);
    }

    let diff_ids: Vec<String> = layers.iter().map(|l| js(&l.diff_id)).collect();
    let config = format!(
        concat!(
            r#"{{"created":"2024-01-01T00:00:00Z","architecture":"amd64","os":"linux","#,
            r#""config":{{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"#,
            r#""Cmd":["/bin/sh"],"WorkingDir":"/"}},"#,
            r#""rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#
        ),
        diff_ids.join(",")
    )
    .into_bytes();
    let config_digest = sha256_digest(&config);

    let layer_descs: Vec<String> = layers
        .iter()
        .map(|l| {
            format!(
                r#"{{"mediaType":{},"digest":{},"size":{}}}"#,
                js(media_type::OCI_LAYER_GZIP),
                js(&l.digest),
                l.size
            )
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":{},"config":{{"mediaType":{},"digest":{},"size":{}}},"layers":[{}]}}"#,
        js(media_type::OCI_MANIFEST),
        js(media_type::OCI_CONFIG),
        js(&config_digest),
        config.len(),
        layer_descs.join(",")
    )
    .into_bytes();
    let manifest_digest = sha256_digest(&manifest);
    let manifest_size = manifest.len() as u64;

    // Go's ocispec.Index / Descriptor field order; annotation keys sorted as Go sorts map keys.
    let index = format!(
        concat!(
            r#"{{"schemaVersion":2,"mediaType":{},"manifests":[{{"mediaType":{},"digest":{},"size":{},"#,
            r#""annotations":{{{}:{},{}:{}}},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        ),
        js(media_type::OCI_INDEX),
        js(media_type::OCI_MANIFEST),
        js(&manifest_digest),
        manifest_size,
        js(annotation::IMAGE_NAME),
        js(name),
        js(annotation::REF_NAME),
        js(tag_of(name)),
    )
    .into_bytes();
    let index_digest = sha256_digest(&index);

    blobs.insert(config_digest.clone(), config);
    blobs.insert(manifest_digest.clone(), manifest);

    let archive = write_layout(dir, name, &index, &blobs);

    TestImage {
        name: name.to_owned(),
        archive,
        index_digest,
        manifest_digest,
        manifest_size,
        config_digest,
        layers,
        blobs,
    }
}

/// Writes an OCI layout tar `dir/<name with _ for non-alphanumerics>.tar` holding `index` and
/// `blobs`; its path.
fn write_layout(
    dir: &Path,
    name: &str,
    index: &[u8],
    blobs: &BTreeMap<String, Vec<u8>>,
) -> PathBuf {
    let file_name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let archive = dir.join(format!("{file_name}.tar"));
    let mut out = tar::Builder::new(
        File::create(&archive)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", archive.display())),
    );
    let mut add = |path: &str, data: &[u8]| {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        out.append_data(&mut h, path, data)
            .unwrap_or_else(|e| panic!("cannot write {path} to {}: {e}", archive.display()));
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", index);
    for (digest, data) in blobs {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digests");
        add(&format!("blobs/sha256/{hex}"), data);
    }
    out.into_inner()
        .and_then(|mut f| f.flush())
        .unwrap_or_else(|e| panic!("cannot finish {}: {e}", archive.display()));
    archive
}

impl TestImage {
    /// The same layers under image name `name` with the config changed by `edit` (e.g. to add
    /// `ExposedPorts`), written as an OCI layout tar in `dir`; the archive's path.
    pub fn with_config(
        &self,
        dir: &Path,
        name: &str,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> PathBuf {
        let mut config: serde_json::Value =
            serde_json::from_slice(self.blob(&self.config_digest)).expect("config JSON");
        edit(&mut config);
        let config = serde_json::to_vec(&config).expect("encode config");
        let config_digest = sha256_digest(&config);
        let mut manifest: serde_json::Value =
            serde_json::from_slice(self.blob(&self.manifest_digest)).expect("manifest JSON");
        manifest["config"]["digest"] = config_digest.clone().into();
        manifest["config"]["size"] = config.len().into();
        let manifest = serde_json::to_vec(&manifest).expect("encode manifest");
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "manifests": [{
                "mediaType": media_type::OCI_MANIFEST,
                "digest": sha256_digest(&manifest),
                "size": manifest.len(),
                "annotations": {(annotation::IMAGE_NAME): name, (annotation::REF_NAME): tag_of(name)},
                "platform": {"architecture": "amd64", "os": "linux"},
            }],
        }))
        .expect("encode index");
        let mut blobs: BTreeMap<String, Vec<u8>> = self
            .layers
            .iter()
            .map(|l| (l.digest.clone(), self.blob(&l.digest).to_vec()))
            .collect();
        blobs.insert(config_digest, config);
        blobs.insert(sha256_digest(&manifest), manifest);
        write_layout(dir, name, &index, &blobs)
    }
}

/// The regular files of the tar at `path`, by entry path (directories and links are skipped).
/// Panics when the file is not a readable tar.
pub fn read_archive(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let file = File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut archive = tar::Archive::new(file);
    let mut files = BTreeMap::new();
    let entries = archive
        .entries()
        .unwrap_or_else(|e| panic!("{} is not a tar: {e}", path.display()));
    for entry in entries {
        let mut entry = entry.unwrap_or_else(|e| panic!("bad entry in {}: {e}", path.display()));
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry
            .path()
            .unwrap_or_else(|e| panic!("bad entry path in {}: {e}", path.display()))
            .to_string_lossy()
            .into_owned();
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .unwrap_or_else(|e| panic!("cannot read {name} in {}: {e}", path.display()));
        files.insert(name, data);
    }
    files
}

/// The entry paths of the tar stream `data`, in order, with `/` after directories as stored.
pub fn tar_entry_paths(data: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(data);
    archive
        .entries()
        .expect("a tar stream")
        .map(|e| {
            let e = e.expect("a tar entry");
            String::from_utf8_lossy(&e.path_bytes()).into_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;
    use serde_json::Value;

    use super::*;

    const NAME: &str = "docker.io/library/bb:latest";

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(data).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn builds_deterministically() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let one = build_busybox_image(a.path(), NAME);
        let two = build_busybox_image(b.path(), NAME);
        assert_eq!(one.index_digest, two.index_digest);
        assert_eq!(one.manifest_digest, two.manifest_digest);
        assert_eq!(one.config_digest, two.config_digest);
        assert_eq!(one.layers, two.layers);
        assert_eq!(
            fs::read(&one.archive).unwrap(),
            fs::read(&two.archive).unwrap()
        );
        // A different name changes only the index.
        let other = build_busybox_image(a.path(), "example.com/x/y:v1");
        assert_ne!(other.index_digest, one.index_digest);
        assert_eq!(other.manifest_digest, one.manifest_digest);
        assert_ne!(other.archive, one.archive);
    }

    #[test]
    fn archive_has_layout_index_and_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let img = build_busybox_image(dir.path(), NAME);
        let files = read_archive(&img.archive);
        let mut expected: Vec<String> = vec!["index.json".into(), "oci-layout".into()];
        for digest in img.image_blob_digests() {
            expected.push(format!("blobs/sha256/{}", &digest[7..]));
        }
        expected.sort();
        assert_eq!(files.keys().cloned().collect::<Vec<_>>(), expected);
        for (path, data) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(sha256_digest(data), format!("sha256:{hex}"));
            }
        }
        assert_eq!(sha256_digest(&files["index.json"]), img.index_digest);

        let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(m["digest"], img.manifest_digest.as_str());
        assert_eq!(m["mediaType"], media_type::OCI_MANIFEST);
        assert_eq!(m["annotations"][annotation::IMAGE_NAME], NAME);
        assert_eq!(m["annotations"][annotation::REF_NAME], "latest");
        assert_eq!(m["platform"]["os"], "linux");
        assert_eq!(m["platform"]["architecture"], "amd64");

        let manifest: Value = serde_json::from_slice(img.blob(&img.manifest_digest)).unwrap();
        assert_eq!(manifest["config"]["digest"], img.config_digest.as_str());
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);
        let config: Value = serde_json::from_slice(img.blob(&img.config_digest)).unwrap();
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["os"], "linux");
        assert_eq!(config["config"]["Cmd"][0], "/bin/sh");
        let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(diff_ids, [&img.layers[0].diff_id, &img.layers[1].diff_id]);
    }

    #[test]
    fn layers_hold_the_expected_entries() {
        let dir = tempfile::tempdir().unwrap();
        let img = build_busybox_image(dir.path(), NAME);
        let first = gunzip(img.blob(&img.layers[0].digest));
        assert_eq!(sha256_digest(&first), img.layers[0].diff_id);
        let paths = tar_entry_paths(&first);
        for p in [
            "bin/",
            "etc/",
            "proc/",
            "sys/",
            "dev/",
            "tmp/",
            "root/",
            "bin/busybox",
            "bin/sh",
            "bin/head",
            "etc/passwd",
            "etc/group",
        ] {
            assert!(paths.iter().any(|x| x == p), "{p} missing from {paths:?}");
        }
        let mut archive = tar::Archive::new(&first[..]);
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            if path == "bin/busybox" {
                assert_eq!(entry.header().mode().unwrap(), 0o755);
            }
            if path == "bin/sh" {
                assert_eq!(entry.header().entry_type(), tar::EntryType::Symlink);
                assert_eq!(
                    entry.link_name().unwrap().unwrap().to_str(),
                    Some("busybox")
                );
            }
            assert_eq!(entry.header().mtime().unwrap(), MTIME);
        }

        let second = gunzip(img.blob(&img.layers[1].digest));
        assert_eq!(tar_entry_paths(&second), ["etc/", "etc/hello"]);
        let mut archive = tar::Archive::new(&second[..]);
        let mut hello = archive.entries().unwrap().nth(1).unwrap().unwrap();
        let mut text = Vec::new();
        hello.read_to_end(&mut text).unwrap();
        assert_eq!(text, HELLO);
    }

    #[test]
    fn tag_is_taken_from_the_last_path_component() {
        assert_eq!(tag_of("docker.io/library/bb:latest"), "latest");
        assert_eq!(tag_of("localhost:5000/bb"), "latest");
        assert_eq!(tag_of("localhost:5000/bb:v2"), "v2");
    }
}
