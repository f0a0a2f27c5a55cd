//! Applying a layer blob from a content store onto a snapshot's mounts (containerd
//! `diff/apply` `fsApplier.Apply`): the blob is verified against its digest as it is read,
//! decompressed on one thread and unpacked on another, straight into the upperdir when the
//! mounts are a single overlay.

use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_wellknown::media_type;
use sha2::{Digest as _, Sha256};

use super::{
    apply_layer, detect_compression, media_type_compression, ApplyError, ApplyOptions, ApplyResult,
    BlobReader, Compression, DiffError, LayerContent, LayerDescriptor, WhiteoutMode,
};
use crate::mount::TempMount;
use crate::snapshotter::Mount;

/// Applies layers from a content store onto mounts and writes the layer between two mount
/// sets into it ([`LayerDiffer::compare`]): the work behind the Diff service, for in-daemon
/// callers as well. Every method blocks; async callers run it through `spawn_blocking`.
#[derive(Debug, Clone)]
pub struct LayerDiffer {
    pub(super) content: Arc<dyn LayerContent>,
    /// Where temporary mounts are made.
    pub(super) tmp_dir: PathBuf,
}

impl LayerDiffer {
    /// A differ over `content`, mounting under `tmp_dir`.
    pub fn new(content: Arc<dyn LayerContent>, tmp_dir: PathBuf) -> Self {
        LayerDiffer { content, tmp_dir }
    }

    /// Applies the layer blob `layer` of namespace `ns` onto `mounts` and returns the
    /// descriptor of the uncompressed tar (its digest is the diffID). A blob that is not what
    /// its digest says is DataLoss, even when the archive broke off before its end.
    pub fn apply(
        &self,
        ns: &str,
        layer: &LayerDescriptor,
        mounts: &[Mount],
    ) -> Result<LayerDescriptor, DiffError> {
        let compression = media_type_compression(&layer.media_type)?;
        let (blob, size) = self.content.open(ns, &layer.digest)?;
        if layer.size > 0 && layer.size != size {
            return Err(DiffError::SizeMismatch {
                digest: layer.digest.clone(),
                expected: layer.size,
                actual: size,
            });
        }
        let verdict: Verdict = Arc::default();
        let verifying = VerifyingReader {
            inner: blob,
            hasher: Sha256::new(),
            count: 0,
            digest: layer.digest.clone(),
            size,
            verdict: verdict.clone(),
        };
        let applied = decompress_while_applying(
            move || decompress(verifying, compression),
            |reader| apply_to_mounts(reader, mounts, &self.tmp_dir),
        );
        let mut verdict = verdict.lock().ok().and_then(|mut v| v.take());
        if verdict.is_none() && applied.is_err() {
            // The apply stopped before the blob's end (a decoder or tar error): hash the whole
            // blob, so that a corrupt blob reads as DataLoss and not as a bad archive.
            verdict = self.verify_blob(ns, &layer.digest);
        }
        let corrupt = |detail: String| DiffError::Corrupt {
            digest: layer.digest.clone(),
            detail,
        };
        let applied = match (verdict, applied) {
            (Some(Err(detail)), _) => return Err(corrupt(detail)),
            (_, Err(e)) => return Err(e),
            (None, Ok(_)) => return Err(corrupt("data follows the end of the layer".into())),
            (Some(Ok(())), Ok(a)) => a,
        };
        Ok(LayerDescriptor {
            media_type: media_type::OCI_LAYER.to_owned(),
            digest: applied.diff_id,
            size: applied.size,
        })
    }

    /// Hashes a whole blob: `Some(Err)` when it does not match its digest, `None` when it
    /// cannot be read.
    fn verify_blob(&self, ns: &str, digest: &str) -> Option<Result<(), String>> {
        let (mut blob, _) = self.content.open(ns, digest).ok()?;
        let mut hasher = Sha256::new();
        io::copy(&mut blob, &mut hasher).ok()?;
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        Some(if actual == digest {
            Ok(())
        } else {
            Err(format!("content digest {actual} does not match"))
        })
    }
}

/// The upperdir and lowerdirs of an overlay mount (containerd `getOverlayPath`).
fn overlay_dirs(options: &[String]) -> Option<(PathBuf, Vec<PathBuf>)> {
    let mut upper = None;
    let mut lowers = Vec::new();
    for o in options {
        if let Some(u) = o.strip_prefix("upperdir=") {
            upper = Some(PathBuf::from(u));
        } else if let Some(l) = o.strip_prefix("lowerdir=") {
            lowers = l.split(':').map(PathBuf::from).collect();
        }
    }
    upper.map(|u| (u, lowers))
}

/// Whether this process runs in a user namespace, where overlay whiteout devices cannot be
/// made (containerd issue 3762).
fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"],
        Err(_) => false,
    }
}

/// Unpacks onto the mounts: straight into the upperdir of a single overlay mount with overlay
/// whiteouts (containerd `diff/apply/apply_linux.go`), else through a temporary mount of them.
fn apply_to_mounts(
    reader: impl Read,
    mounts: &[Mount],
    tmp_dir: &Path,
) -> Result<ApplyResult, DiffError> {
    if let [m] = mounts {
        if m.mount_type == "overlay" && !in_user_namespace() {
            if let Some((upper, parents)) = overlay_dirs(&m.options) {
                let opts = ApplyOptions {
                    whiteout: WhiteoutMode::Overlay,
                    parents,
                };
                return Ok(apply_layer(reader, &upper, &opts)?);
            }
        }
    }
    let tm = TempMount::new_in(tmp_dir, mounts)?;
    let applied = apply_layer(reader, tm.path(), &ApplyOptions::default());
    let closed = tm.close();
    let applied = applied?;
    closed?;
    Ok(applied)
}

/// Runs `apply` on this thread over the bytes that a second thread reads, verifies and
/// decompresses from `open_layer`'s reader, connected by a pipe: inflating a layer takes about
/// as long as writing its files, so on two cores this nearly halves an apply. A read or
/// decompression error fails the apply even when the bytes before it happened to end the
/// archive cleanly.
fn decompress_while_applying<O, F>(open_layer: O, apply: F) -> Result<ApplyResult, DiffError>
where
    O: FnOnce() -> io::Result<BlobReader> + Send,
    F: FnOnce(io::PipeReader) -> Result<ApplyResult, DiffError>,
{
    let (reader, mut writer) = io::pipe().map_err(DiffError::Pipe)?;
    widen_pipe(&writer);
    std::thread::scope(|scope| {
        let producer = std::thread::Builder::new()
            .name("layer-reader".into())
            .spawn_scoped(scope, move || io::copy(&mut open_layer()?, &mut writer))
            .map_err(DiffError::Thread)?;
        let applied = apply(reader);
        let produced = match producer.join() {
            Ok(produced) => produced,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match produced {
            // The apply stopped reading (it failed): its own error says why.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => applied,
            // The decoder's error is the cause; the archive's own error would only be its
            // effect.
            Err(e) => Err(ApplyError::Read(e).into()),
            Ok(_) => applied,
        }
    })
}

/// Pipe capacity for a layer: fewer wake-ups between the two threads than the 64 KiB default.
const LAYER_PIPE_BYTES: i32 = 1 << 20;

/// Grows the pipe's buffer; the default size only costs more context switches.
fn widen_pipe(writer: &io::PipeWriter) {
    use nix::fcntl::{fcntl, FcntlArg};
    if let Err(e) = fcntl(writer, FcntlArg::F_SETPIPE_SZ(LAYER_PIPE_BYTES)) {
        tracing::debug!(error = %e, "cannot grow the layer pipe");
    }
}

/// The result of checking a blob against its digest, set when its end is reached.
type Verdict = Arc<Mutex<Option<Result<(), String>>>>;

/// Hashes and counts a blob as it is read and, at its end, checks it against the expected
/// digest and size; a mismatch fails the read and is recorded in the verdict.
struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    digest: String,
    size: u64,
    verdict: Verdict,
}

impl<R> VerifyingReader<R> {
    fn fail(&self, detail: String) -> io::Error {
        if let Ok(mut v) = self.verdict.lock() {
            *v = Some(Err(detail.clone()));
        }
        io::Error::new(io::ErrorKind::InvalidData, detail)
    }

    fn finish(&self) -> Result<(), io::Error> {
        if self.count != self.size {
            return Err(self.fail(format!("read {} bytes, expected {}", self.count, self.size)));
        }
        let actual = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
        if actual != self.digest {
            return Err(self.fail(format!("content digest {actual} does not match")));
        }
        if let Ok(mut v) = self.verdict.lock() {
            *v = Some(Ok(()));
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.finish()?;
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if self.count > self.size {
            return Err(self.fail(format!("more than the expected {} bytes", self.size)));
        }
        Ok(n)
    }
}

/// Wraps the compressed stream in the decoder its compression needs; `Detect` looks at the
/// first bytes. Concatenated gzip members and zstd frames are read to the end, as containerd
/// does.
fn decompress<R>(reader: R, compression: Compression) -> io::Result<BlobReader>
where
    R: Read + Send + 'static,
{
    let mut buffered = io::BufReader::with_capacity(128 * 1024, reader);
    let compression = match compression {
        Compression::Detect => detect_compression(buffered.fill_buf()?),
        c => c,
    };
    Ok(match compression {
        Compression::None | Compression::Detect => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::io::Write as _;

    use berth_registry::{Classify, ErrorKind};

    use super::*;
    use crate::apply::{ContentFailure, LayerWriter};
    use berth_testutil::require_root_for;

    #[derive(Debug, thiserror::Error)]
    #[error("blob {0}: not found")]
    struct Missing(String);

    impl Classify for Missing {
        fn kind(&self) -> ErrorKind {
            ErrorKind::NotFound
        }
    }

    /// Blobs in memory, read only.
    #[derive(Debug, Default)]
    struct Blobs(Mutex<HashMap<String, Vec<u8>>>);

    impl Blobs {
        fn put(&self, digest: &str, data: &[u8]) {
            self.0
                .lock()
                .unwrap()
                .insert(digest.to_owned(), data.to_vec());
        }
    }

    impl LayerContent for Blobs {
        fn open(&self, _ns: &str, digest: &str) -> Result<(BlobReader, u64), ContentFailure> {
            let blobs = self.0.lock().unwrap();
            let data = blobs
                .get(digest)
                .ok_or_else(|| ContentFailure::new(Missing(digest.to_owned())))?;
            Ok((Box::new(io::Cursor::new(data.clone())), data.len() as u64))
        }

        fn writer(
            &self,
            _ns: &str,
            reference: &str,
            _lease: Option<&str>,
        ) -> Result<Box<dyn LayerWriter>, ContentFailure> {
            Err(ContentFailure::new(Missing(reference.to_owned())))
        }

        fn abort(&self, _ns: &str, reference: &str) -> Result<(), ContentFailure> {
            Err(ContentFailure::new(Missing(reference.to_owned())))
        }

        fn set_labels(
            &self,
            _ns: &str,
            digest: &str,
            _labels: BTreeMap<String, String>,
        ) -> Result<(), ContentFailure> {
            Err(ContentFailure::new(Missing(digest.to_owned())))
        }
    }

    fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    fn gzip_layer() -> (Vec<u8>, Vec<u8>) {
        let mut b = tar::Builder::new(Vec::new());
        let data = b"applied by the differ\n";
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, "motd", &data[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        (tar, gz.finish().unwrap())
    }

    struct Env {
        dir: tempfile::TempDir,
        blobs: Arc<Blobs>,
        differ: LayerDiffer,
    }

    fn env() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(Blobs::default());
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let differ = LayerDiffer::new(blobs.clone(), tmp);
        Env { dir, blobs, differ }
    }

    impl Env {
        /// A single overlay mount whose upperdir takes the layer without mounting.
        fn overlay(&self) -> (Vec<Mount>, PathBuf) {
            let p = |n: &str| {
                let d = self.dir.path().join(n);
                std::fs::create_dir_all(&d).unwrap();
                d.display().to_string()
            };
            let upper = p("upper");
            let m = Mount {
                mount_type: "overlay".into(),
                source: "overlay".into(),
                target: String::new(),
                options: vec![
                    format!("workdir={}", p("work")),
                    format!("upperdir={upper}"),
                    format!("lowerdir={}", p("lower")),
                ],
            };
            (vec![m], PathBuf::from(upper))
        }
    }

    fn layer(media_type: &str, digest: &str, size: usize) -> LayerDescriptor {
        LayerDescriptor {
            media_type: media_type.into(),
            digest: digest.into(),
            size: size as u64,
        }
    }

    #[test]
    fn apply_verifies_inflates_and_reports_the_diff_id() {
        if !require_root_for("applying with numeric owners") {
            return;
        }
        let env = env();
        let (tar, gz) = gzip_layer();
        let digest = sha(&gz);
        env.blobs.put(&digest, &gz);
        let (mounts, upper) = env.overlay();
        let applied = env
            .differ
            .apply(
                "ns",
                &layer(media_type::OCI_LAYER_GZIP, &digest, gz.len()),
                &mounts,
            )
            .unwrap();
        assert_eq!(applied, layer(media_type::OCI_LAYER, &sha(&tar), tar.len()));
        assert_eq!(
            std::fs::read(upper.join("motd")).unwrap(),
            b"applied by the differ\n"
        );
    }

    #[test]
    fn apply_names_a_corrupt_blob_data_loss() {
        if !require_root_for("applying with numeric owners") {
            return;
        }
        let env = env();
        let (_, gz) = gzip_layer();
        let digest = sha(&gz);
        let mut bad = gz.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        env.blobs.put(&digest, &bad);
        let (mounts, _) = env.overlay();
        let err = env
            .differ
            .apply(
                "ns",
                &layer(media_type::OCI_LAYER_GZIP, &digest, gz.len()),
                &mounts,
            )
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
        assert!(matches!(err, DiffError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains(&digest), "{err}");
    }

    #[test]
    fn apply_refuses_before_reading() {
        let env = env();
        let (_, gz) = gzip_layer();
        let digest = sha(&gz);
        env.blobs.put(&digest, &gz);
        let (mounts, upper) = env.overlay();
        let cases = [
            (
                layer(media_type::OCI_LAYER_GZIP, &digest, gz.len() + 1),
                ErrorKind::FailedPrecondition,
            ),
            (
                layer("application/json", &digest, gz.len()),
                ErrorKind::NotImplemented,
            ),
            (
                layer(media_type::OCI_LAYER_GZIP, "sha256:00", 1),
                ErrorKind::NotFound,
            ),
        ];
        for (desc, kind) in cases {
            let err = env.differ.apply("ns", &desc, &mounts).unwrap_err();
            assert_eq!(err.kind(), kind, "{desc:?}: {err}");
        }
        assert_eq!(std::fs::read_dir(upper).unwrap().count(), 0);
    }
}
