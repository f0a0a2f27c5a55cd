//! Test inputs built once per benchmark run: the busybox image both daemons run, a raw runc
//! bundle of the same rootfs (the floor), and a large deterministic three-layer image for the
//! unpack measurement.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use berth_wellknown::{annotation, media_type};
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::command::run_with_timeout;
use crate::image::BUSYBOX;

/// Seed of the content generator: the same seed gives byte-identical layers and digests.
const SEED: u64 = 0x6265_7274_685f_6231;

/// Modification time of every tar entry.
const MTIME: u64 = 1_700_000_000;

/// Busybox applets linked in the runc bundle's rootfs.
const APPLETS: [&str; 4] = ["sh", "true", "sleep", "echo"];

/// splitmix64: tiny, fast and good enough that gzip finds no long-range structure.
#[derive(Debug)]
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// `len` bytes of lower-case hex text: four bits of entropy a byte, so a gzip layer keeps
    /// a bit over half the size, roughly what real binaries and text compress to.
    fn fill_hex(&mut self, buf: &mut Vec<u8>, len: usize) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        buf.clear();
        buf.reserve(len);
        while buf.len() < len {
            let mut word = self.next();
            for _ in 0..16 {
                if buf.len() == len {
                    break;
                }
                buf.push(HEX[(word & 0xf) as usize]);
                word >>= 4;
            }
        }
    }
}

/// A writer that hashes and counts what passes through it.
#[derive(Debug)]
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest, self.bytes)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A tar header with fixed owner and mtime.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(size);
    h
}

/// One gzip layer blob with its digests.
#[derive(Debug)]
struct Layer {
    blob: Vec<u8>,
    digest: String,
    diff_id: String,
    uncompressed: u64,
}

/// How one layer's files are sized.
#[derive(Debug, Clone, Copy)]
struct LayerShape {
    /// Share of the image's total bytes.
    share: f64,
    /// Smallest and largest file.
    min_file: u64,
    max_file: u64,
}

/// Three layers like a real image: a base of many small files, a middle of libraries, a top of
/// a few large blobs.
const SHAPES: [LayerShape; 3] = [
    LayerShape {
        share: 0.15,
        min_file: 2 << 10,
        max_file: 32 << 10,
    },
    LayerShape {
        share: 0.35,
        min_file: 64 << 10,
        max_file: 1 << 20,
    },
    LayerShape {
        share: 0.50,
        min_file: 4 << 20,
        max_file: 16 << 20,
    },
];

/// Builds layer `index` with `budget` bytes of file content.
fn build_layer(index: usize, shape: LayerShape, budget: u64, rng: &mut Prng) -> Result<Layer> {
    let gz = Hashing::new(GzEncoder::new(Vec::new(), Compression::default()));
    let mut tar = tar::Builder::new(Hashing::new(gz));
    let top = format!("layer{index}");
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut h, &top, io::empty())?;
    let mut written = 0u64;
    let mut file = 0u64;
    let mut data = Vec::new();
    while written < budget {
        // A hundred files a directory, as package trees have.
        if file.is_multiple_of(100) {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            tar.append_data(&mut h, format!("{top}/d{:04}", file / 100), io::empty())?;
        }
        let size = rng
            .range(shape.min_file, shape.max_file)
            .min(budget - written);
        rng.fill_hex(
            &mut data,
            usize::try_from(size).context("file size fits in usize")?,
        );
        let mut h = header(tar::EntryType::Regular, 0o644, size);
        let path = format!("{top}/d{:04}/f{file:06}", file / 100);
        tar.append_data(&mut h, path, data.as_slice())?;
        written += size;
        file += 1;
    }
    let plain = tar.into_inner().context("finish the layer tar")?;
    let (gz, diff_id, uncompressed) = plain.finish();
    let (encoder, _, _) = gz.finish();
    let blob = encoder.finish().context("finish the gzip stream")?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&blob)));
    Ok(Layer {
        blob,
        digest,
        diff_id,
        uncompressed,
    })
}

/// The large image for the unpack measurement.
#[derive(Debug, Clone)]
pub struct BigImage {
    /// The OCI layout tar `ctr images import` reads.
    pub archive: PathBuf,
    /// Bytes of the three uncompressed layer tars together.
    pub uncompressed: u64,
    /// Bytes of the three gzip blobs together.
    pub compressed: u64,
}

/// Writes a deterministic three-layer gzip image of about `total` bytes of file content to
/// `<dir>/big.tar`.
pub fn build_big_image(dir: &Path, name: &str, total: u64) -> Result<BigImage> {
    let mut rng = Prng(SEED);
    let mut layers = Vec::new();
    for (index, shape) in SHAPES.iter().enumerate() {
        let budget = (total as f64 * shape.share) as u64;
        layers.push(build_layer(index, *shape, budget.max(1), &mut rng)?);
    }
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))?;
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
    let layer_descs: Vec<Value> = layers
        .iter()
        .map(|l| json!({ "mediaType": media_type::OCI_LAYER_GZIP, "digest": l.digest, "size": l.blob.len() }))
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": { "mediaType": media_type::OCI_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": layer_descs,
    }))?;
    let manifest_digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest)));
    let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": [{
            "mediaType": media_type::OCI_MANIFEST,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { annotation::IMAGE_NAME: name, annotation::REF_NAME: tag },
            "platform": { "architecture": "amd64", "os": "linux" },
        }],
    }))?;

    let archive = dir.join("big.tar");
    let file = File::create(&archive).with_context(|| format!("create {}", archive.display()))?;
    let mut out = tar::Builder::new(io::BufWriter::new(file));
    let mut add = |path: &str, data: &[u8]| -> Result<()> {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        out.append_data(&mut h, path, data)
            .with_context(|| format!("write {path} to {}", archive.display()))
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    let hex_of = |d: &str| d.trim_start_matches("sha256:").to_owned();
    add(&format!("blobs/sha256/{}", hex_of(&config_digest)), &config)?;
    add(
        &format!("blobs/sha256/{}", hex_of(&manifest_digest)),
        &manifest,
    )?;
    for layer in &layers {
        add(
            &format!("blobs/sha256/{}", hex_of(&layer.digest)),
            &layer.blob,
        )?;
    }
    out.into_inner()
        .context("finish the image archive")?
        .flush()
        .context("flush the image archive")?;
    Ok(BigImage {
        archive,
        uncompressed: layers.iter().map(|l| l.uncompressed).sum(),
        compressed: layers.iter().map(|l| l.blob.len() as u64).sum(),
    })
}

/// Writes an OCI bundle at `dir` that `runc run` can start: a busybox rootfs and a config from
/// `runc spec` running `true` without a terminal, the same work `ctr run --rm IMG id true`
/// asks of the daemons.
pub fn build_runc_bundle(runc: &Path, dir: &Path) -> Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "proc", "dev", "sys", "tmp", "etc", "root"] {
        fs::create_dir_all(rootfs.join(sub))
            .with_context(|| format!("create {}", rootfs.join(sub).display()))?;
    }
    fs::copy(BUSYBOX, rootfs.join("bin/busybox")).with_context(|| format!("copy {BUSYBOX}"))?;
    for applet in APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet))
            .with_context(|| format!("link bin/{applet}"))?;
    }
    let mut cmd = Command::new(runc);
    cmd.arg("spec").arg("--bundle").arg(dir);
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    ensure!(out.success(), "runc spec failed: {out}");
    let path = dir.join("config.json");
    let text = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let mut spec: Value = serde_json::from_slice(&text).context("parse runc's config.json")?;
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(["true"]);
    spec["process"]["env"] = json!(["PATH=/bin"]);
    fs::write(&path, serde_json::to_vec_pretty(&spec)?)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(dir.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_image_is_deterministic_and_does_not_collapse() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let one = build_big_image(a.path(), "bench/big:1", 1 << 20).unwrap();
        let two = build_big_image(b.path(), "bench/big:1", 1 << 20).unwrap();
        assert_eq!(
            fs::read(&one.archive).unwrap(),
            fs::read(&two.archive).unwrap()
        );
        assert!(one.uncompressed >= 1 << 20);
        // Hex text keeps about half its size under gzip: neither raw nor collapsed.
        let ratio = one.compressed as f64 / one.uncompressed as f64;
        assert!((0.3..0.9).contains(&ratio), "compression ratio {ratio}");
    }
}
