//! `containerd.services.diff.v1.Diff`: Apply unpacks a layer blob from the content store onto
//! a snapshot's mounts; Diff writes the layer between two mount sets into the content store.
//! containerd `services/diff/local.go` over `diff/apply` and `diff/walking`.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_core::content::ContentStore;
use berth_core::metadata::plugin::Config as MetadataConfig;
use berth_core::namespaced_content::{NamespacedContent, NamespacedContentError, NamespacedWriter};
use berth_core::MetadataStore;
use berth_proto::containerd::services::diff::v1::diff_server::{Diff, DiffServer};
use berth_proto::containerd::services::diff::v1::{
    ApplyRequest, ApplyResponse, DiffRequest, DiffResponse,
};
use berth_proto::containerd::types::{Descriptor, Mount as ProtoMount};
use berth_registry::{types, Classify, ErrorKind, Registration};
use berth_snapshotters::apply::{
    apply_layer, detect_compression, media_type_compression, write_diff, ApplyError, ApplyOptions,
    ApplyResult, Compression, WhiteoutMode, MEDIA_TYPE_LAYER, MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_LAYER_ZSTD,
};
use berth_snapshotters::error::SnapshotError;
use berth_snapshotters::mount::TempMount;
use berth_snapshotters::snapshotter::Mount;
use sha2::{Digest as _, Sha256};
use tonic::{Request, Response, Status};

use crate::grpc::GrpcService;
use crate::status::to_status;
use crate::{blocking, namespace};

/// The label naming a compressed layer's diffID (containerd `labels.LabelUncompressed`).
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// Why a Diff service call failed.
#[derive(Debug, thiserror::Error)]
pub enum DiffServiceError {
    /// A required request field is missing.
    #[error("{0} is required")]
    Missing(&'static str),
    /// The descriptor's size is not the stored blob's.
    #[error("blob {digest}: descriptor size {expected} does not match stored size {actual}")]
    SizeMismatch {
        /// The blob.
        digest: String,
        /// The descriptor's size.
        expected: u64,
        /// The stored size.
        actual: u64,
    },
    /// The stored bytes are not what the digest promises.
    #[error("blob {digest}: {detail}")]
    Corrupt {
        /// The blob.
        digest: String,
        /// What was wrong.
        detail: String,
    },
    /// Diff was asked for a media type it cannot write.
    #[error("unsupported diff media type {0:?}")]
    UnsupportedMediaType(String),
    /// Unpacking or computing the layer failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Mounting or unmounting failed.
    #[error(transparent)]
    Mount(#[from] SnapshotError),
    /// The content store refused.
    #[error(transparent)]
    Content(#[from] NamespacedContentError),
    /// Compressing the layer into the content store failed.
    #[error("write layer blob: {0}")]
    Write(#[source] io::Error),
}

impl Classify for DiffServiceError {
    fn kind(&self) -> ErrorKind {
        match self {
            DiffServiceError::Missing(_) => ErrorKind::InvalidArgument,
            DiffServiceError::SizeMismatch { .. } => ErrorKind::FailedPrecondition,
            DiffServiceError::Corrupt { .. } => ErrorKind::DataLoss,
            DiffServiceError::UnsupportedMediaType(_) => ErrorKind::NotImplemented,
            DiffServiceError::Apply(e) => e.kind(),
            DiffServiceError::Mount(e) => e.kind(),
            DiffServiceError::Content(e) => e.kind(),
            DiffServiceError::Write(_) => ErrorKind::Internal,
        }
    }
}

/// The Diff service.
#[derive(Debug, Clone)]
pub struct DiffService {
    content: NamespacedContent,
    /// Where temporary mounts are made.
    tmp_dir: PathBuf,
}

fn mount_from_proto(m: ProtoMount) -> Mount {
    Mount {
        mount_type: m.r#type,
        source: m.source,
        target: m.target,
        options: m.options,
    }
}

/// The mounts with `ro` added, for reading both sides of a diff (containerd
/// `WithReadonlyTempMount`).
fn read_only(mounts: Vec<Mount>) -> Vec<Mount> {
    mounts
        .into_iter()
        .map(|mut m| {
            m.options.retain(|o| o != "rw");
            if !m.options.iter().any(|o| o == "ro") {
                m.options.push("ro".into());
            }
            m
        })
        .collect()
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
) -> Result<ApplyResult, DiffServiceError> {
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

/// Runs `apply` on one blocking thread over the bytes that another thread reads, verifies
/// and decompresses from `open_layer`'s reader, connected by a pipe: inflating a layer takes
/// about as long as writing its files, so on two cores this nearly halves an apply. A read or
/// decompression error fails the apply even when the bytes before it happened to end the
/// archive cleanly.
async fn decompress_while_applying<O, F>(
    open_layer: O,
    apply: F,
) -> Result<Result<ApplyResult, DiffServiceError>, Status>
where
    O: FnOnce() -> io::Result<LayerReader> + Send + 'static,
    F: FnOnce(io::PipeReader) -> Result<ApplyResult, DiffServiceError> + Send + 'static,
{
    let (reader, mut writer) =
        io::pipe().map_err(|e| Status::internal(format!("create a pipe for the layer: {e}")))?;
    widen_pipe(&writer);
    let producer = blocking::run(move || io::copy(&mut open_layer()?, &mut writer));
    let consumer = blocking::run(move || apply(reader));
    let (produced, applied) = tokio::join!(producer, consumer);
    let applied = applied?;
    Ok(match produced? {
        // The apply stopped reading (it failed): its own error says why.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => applied,
        // The decoder's error is the cause; the archive's own error would only be its effect.
        Err(e) => Err(ApplyError::Read(e).into()),
        Ok(_) => applied,
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

/// Hashes a whole blob: `Some(Err)` when it does not match its digest, `None` when it cannot
/// be read.
fn verify_blob(content: &NamespacedContent, ns: &str, digest: &str) -> Option<Result<(), String>> {
    let (mut file, _) = content.open(ns, digest).ok()?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).ok()?;
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    Some(if actual == digest {
        Ok(())
    } else {
        Err(format!("content digest {actual} does not match"))
    })
}

type LayerReader = Box<dyn Read + Send>;

/// Wraps the compressed stream in the decoder its compression needs; `Detect` looks at the
/// first bytes. Concatenated gzip members and zstd frames are read to the end, as containerd
/// does.
fn decompress<R>(reader: R, compression: Compression) -> io::Result<LayerReader>
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

/// Writes into an ingest at increasing offsets.
struct ContentSink {
    writer: NamespacedWriter,
    offset: u64,
}

impl Write for ContentSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.offset = self
            .writer
            .write_at(self.offset, buf)
            .map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the layer between the two mounted trees, compressed, into `sink`; returns the
/// diffID.
fn write_compressed(
    lower: &Path,
    upper: &Path,
    compression: Compression,
    sink: &mut BufWriter<ContentSink>,
) -> Result<String, DiffServiceError> {
    let diff_id = match compression {
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(&mut *sink, flate2::Compression::default());
            let res = write_diff(lower, upper, &mut gz)?;
            gz.finish().map_err(DiffServiceError::Write)?;
            res.diff_id
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(&mut *sink, 3)
                .map_err(DiffServiceError::Write)?;
            let res = write_diff(lower, upper, &mut enc)?;
            enc.finish().map_err(DiffServiceError::Write)?;
            res.diff_id
        }
        Compression::None | Compression::Detect => write_diff(lower, upper, &mut *sink)?.diff_id,
    };
    sink.flush().map_err(DiffServiceError::Write)?;
    Ok(diff_id)
}

/// What one Diff call asks for.
struct DiffJob {
    ns: String,
    reference: String,
    lease: Option<String>,
    media_type: String,
    compression: Compression,
    left: Vec<Mount>,
    right: Vec<Mount>,
    labels: BTreeMap<String, String>,
}

impl DiffService {
    /// A service over the namespaced content store, mounting under `tmp_dir`.
    pub fn new(content: NamespacedContent, tmp_dir: PathBuf) -> Self {
        DiffService { content, tmp_dir }
    }

    /// Applies the layer blob `desc` of namespace `ns` from the content store onto `mounts`
    /// and returns the descriptor of the uncompressed tar (its digest is the diffID): the work
    /// of `Diff.Apply`, for in-daemon callers (the local transfer stores) as well.
    pub async fn apply_layer_from_content(
        &self,
        ns: String,
        desc: Descriptor,
        mounts: Vec<Mount>,
    ) -> Result<Descriptor, Status> {
        let compression = media_type_compression(&desc.media_type).map_err(|e| to_status(&e))?;

        let content = self.content.clone();
        let digest = desc.digest.clone();
        let ns_for_check = ns.clone();
        let (file, size) = blocking::run(move || content.open(&ns, &digest))
            .await?
            .map_err(|e| to_status(&e))?;
        if desc.size > 0 && desc.size as u64 != size {
            return Err(to_status(&DiffServiceError::SizeMismatch {
                digest: desc.digest,
                expected: desc.size as u64,
                actual: size,
            }));
        }
        let verdict: Verdict = Arc::default();
        let verifying = VerifyingReader {
            inner: file,
            hasher: Sha256::new(),
            count: 0,
            digest: desc.digest.clone(),
            size,
            verdict: verdict.clone(),
        };
        let corrupt = |detail: String| {
            to_status(&DiffServiceError::Corrupt {
                digest: desc.digest.clone(),
                detail,
            })
        };
        let tmp_dir = self.tmp_dir.clone();
        let applied = decompress_while_applying(
            move || decompress(verifying, compression),
            move |reader| apply_to_mounts(reader, &mounts, &tmp_dir),
        )
        .await?;
        let mut verdict = verdict.lock().ok().and_then(|mut v| v.take());
        if verdict.is_none() && applied.is_err() {
            // The apply stopped before the blob's end (a decoder or tar error): hash the whole
            // blob, so that a corrupt blob reads as DataLoss and not as a bad archive.
            let content = self.content.clone();
            let (ns, digest) = (ns_for_check, desc.digest.clone());
            verdict = blocking::run(move || verify_blob(&content, &ns, &digest)).await?;
        }
        let applied = match (verdict, applied) {
            (Some(Err(detail)), _) => return Err(corrupt(detail)),
            (_, Err(e)) => return Err(to_status(&e)),
            (None, Ok(_)) => return Err(corrupt("data follows the end of the layer".into())),
            (Some(Ok(())), Ok(a)) => a,
        };
        Ok(Descriptor {
            media_type: MEDIA_TYPE_LAYER.to_owned(),
            digest: applied.diff_id,
            size: applied.size as i64,
            annotations: HashMap::new(),
        })
    }

    /// Mounts both sides read-only, writes the layer into an ingest and commits it with the
    /// `uncompressed` label (containerd `diff/walking` `Compare`).
    fn compare(&self, job: DiffJob) -> Result<Descriptor, DiffServiceError> {
        let lower = TempMount::new_in(&self.tmp_dir, &job.left)?;
        let upper = TempMount::new_in(&self.tmp_dir, &job.right)?;
        let writer = self
            .content
            .writer(&job.ns, &job.reference, 0, None, job.lease.as_deref())?;
        let mut sink = BufWriter::with_capacity(1 << 20, ContentSink { writer, offset: 0 });
        let written = write_compressed(lower.path(), upper.path(), job.compression, &mut sink);
        let closed = lower.close().and(upper.close());
        let sink = sink
            .into_inner()
            .map_err(|e| DiffServiceError::Write(e.into_error()));
        let (diff_id, sink) = match (written, closed, sink) {
            (Ok(d), Ok(()), Ok(s)) => (d, s),
            (written, closed, _) => {
                if let Err(e) = self.content.abort(&job.ns, &job.reference) {
                    tracing::warn!(reference = %job.reference, error = %e, "abort diff ingest");
                }
                written?;
                closed?;
                return Err(DiffServiceError::Write(io::Error::other("flush failed")));
            }
        };
        let size = sink.offset;
        let digest = sink.writer.digest().to_string();
        let mut labels = job.labels;
        labels.insert(LABEL_UNCOMPRESSED.to_owned(), diff_id);
        match sink.writer.commit(size, None, labels.clone()) {
            Ok(_) => {}
            // The namespace holds this layer already: make sure it carries the label.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
                self.content.update(&job.ns, &digest, labels, &paths)?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Descriptor {
            media_type: job.media_type,
            digest,
            size: size as i64,
            annotations: HashMap::new(),
        })
    }
}

#[tonic::async_trait]
impl Diff for DiffService {
    #[tracing::instrument(skip_all, fields(namespace, digest, media_type))]
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let ns = namespace::from_request(&req)?;
        let req = req.into_inner();
        let desc = req
            .diff
            .ok_or_else(|| to_status(&DiffServiceError::Missing("diff descriptor")))?;
        let span = tracing::Span::current();
        span.record("namespace", ns.as_str());
        span.record("digest", desc.digest.as_str());
        span.record("media_type", desc.media_type.as_str());
        if req.mounts.is_empty() {
            return Err(to_status(&DiffServiceError::Missing("mounts")));
        }
        if !req.payloads.is_empty() {
            tracing::debug!(
                count = req.payloads.len(),
                "stream processor payloads ignored"
            );
        }
        let mounts: Vec<Mount> = req.mounts.into_iter().map(mount_from_proto).collect();
        let applied = self.apply_layer_from_content(ns, desc, mounts).await?;
        Ok(Response::new(ApplyResponse {
            applied: Some(applied),
        }))
    }

    #[tracing::instrument(skip_all, fields(namespace, media_type, r#ref))]
    async fn diff(&self, req: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        let ns = namespace::from_request(&req)?;
        let lease = namespace::lease_from_request(&req)?;
        let req = req.into_inner();
        let media_type = if req.media_type.is_empty() {
            MEDIA_TYPE_LAYER_GZIP.to_owned()
        } else {
            req.media_type
        };
        // containerd's walking differ writes these three only.
        let compression = match media_type.as_str() {
            MEDIA_TYPE_LAYER => Compression::None,
            MEDIA_TYPE_LAYER_GZIP => Compression::Gzip,
            MEDIA_TYPE_LAYER_ZSTD => Compression::Zstd,
            _ => {
                return Err(to_status(&DiffServiceError::UnsupportedMediaType(
                    media_type,
                )))
            }
        };
        if req.left.is_empty() || req.right.is_empty() {
            return Err(to_status(&DiffServiceError::Missing(
                "left and right mounts",
            )));
        }
        let reference = if req.r#ref.is_empty() {
            format!("diff-{}", uuid::Uuid::new_v4().simple())
        } else {
            req.r#ref
        };
        let span = tracing::Span::current();
        span.record("namespace", ns.as_str());
        span.record("media_type", media_type.as_str());
        span.record("ref", reference.as_str());
        let job = DiffJob {
            ns,
            reference,
            lease,
            media_type,
            compression,
            left: read_only(req.left.into_iter().map(mount_from_proto).collect()),
            right: read_only(req.right.into_iter().map(mount_from_proto).collect()),
            labels: req.labels.into_iter().collect(),
        };
        let svc = self.clone();
        let desc = blocking::run(move || svc.compare(job))
            .await?
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(DiffResponse { diff: Some(desc) }))
    }
}

/// The `io.containerd.grpc.v1.diff` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "diff")
        .requires(&[types::METADATA, types::CONTENT, types::SNAPSHOTTER])
        .init(|ctx| {
            let meta: Arc<MetadataStore> = ctx.get_single(types::METADATA)?;
            let store: Arc<ContentStore> = ctx.get_single(types::CONTENT)?;
            let shared = ctx
                .daemon_config()
                .plugins
                .get("io.containerd.metadata.v1.sled")
                .and_then(|v| v.clone().try_into::<MetadataConfig>().ok())
                .unwrap_or_default()
                .content_sharing_policy
                != "isolated";
            let tmp_dir = ctx.create_state()?;
            let svc = DiffService::new(NamespacedContent::new(meta, store, shared), tmp_dir);
            Ok(Arc::new(GrpcService::new(DiffServer::new(svc))))
        })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use berth_core::content::Digest as BlobDigest;
    use tonic::Code;

    use super::*;
    use crate::namespace::NAMESPACE_HEADER;

    const NS: &str = "default";

    fn requires_root(what: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        let reason = format!("{what} needs root");
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{reason}");
        }
        println!("skipped: {reason}");
        false
    }

    struct Env {
        dir: tempfile::TempDir,
        content: NamespacedContent,
        svc: DiffService,
    }

    fn env() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(MetadataStore::open(&dir.path().join("meta")).unwrap());
        let store = Arc::new(ContentStore::open(&dir.path().join("content")).unwrap());
        let content = NamespacedContent::new(meta, store, true);
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let svc = DiffService::new(content.clone(), tmp);
        Env { dir, content, svc }
    }

    impl Env {
        fn put(&self, data: &[u8]) -> String {
            let reference = format!("put-{}", uuid::Uuid::new_v4().simple());
            let mut w = self.content.writer(NS, &reference, 0, None, None).unwrap();
            w.write_at(0, data).unwrap();
            w.commit(data.len() as u64, None, BTreeMap::new())
                .unwrap()
                .to_string()
        }

        fn path(&self, name: &str) -> PathBuf {
            let p = self.dir.path().join(name);
            fs::create_dir_all(&p).unwrap();
            p
        }
    }

    fn req<T>(msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert(NAMESPACE_HEADER, NS.parse().unwrap());
        r
    }

    fn layer() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, "etc/", io::empty()).unwrap();
        let data = b"hello from a layer\n";
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, "etc/motd", &data[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    fn overlay_mount(env: &Env) -> (ProtoMount, PathBuf) {
        let upper = env.path("upper");
        let lower = env.path("lower");
        let work = env.path("work");
        let m = ProtoMount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                format!("workdir={}", work.display()),
                format!("upperdir={}", upper.display()),
                format!("lowerdir={}", lower.display()),
            ],
        };
        (m, upper)
    }

    fn apply_req(
        media_type: &str,
        digest: &str,
        size: usize,
        mounts: Vec<ProtoMount>,
    ) -> ApplyRequest {
        ApplyRequest {
            diff: Some(Descriptor {
                media_type: media_type.into(),
                digest: digest.into(),
                size: size as i64,
                annotations: HashMap::new(),
            }),
            mounts,
            payloads: HashMap::new(),
        }
    }

    #[tokio::test]
    async fn apply_refuses_bad_requests() {
        let env = env();
        let (m, _) = overlay_mount(&env);
        let err = env
            .svc
            .apply(req(apply_req(
                "application/json",
                "sha256:00",
                1,
                vec![m.clone()],
            )))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
        let mut r = apply_req(MEDIA_TYPE_LAYER, "sha256:00", 1, vec![m]);
        r.diff = None;
        let err = env.svc.apply(req(r)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = env
            .svc
            .apply(Request::new(apply_req(
                MEDIA_TYPE_LAYER,
                "sha256:00",
                1,
                vec![],
            )))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn apply_decompresses_into_the_overlay_upperdir() {
        if !requires_root("applying with numeric owners") {
            return;
        }
        let tar = layer();
        let gz = gzip(&tar);
        let mut zst = Vec::new();
        zstd::stream::copy_encode(tar.as_slice(), &mut zst, 3).unwrap();
        let cases: [(&str, &[u8]); 4] = [
            (MEDIA_TYPE_LAYER, &tar),
            (MEDIA_TYPE_LAYER_GZIP, &gz),
            (MEDIA_TYPE_LAYER_ZSTD, &zst),
            ("application/vnd.docker.image.rootfs.diff.tar", &gz),
        ];
        for (media_type, blob) in cases {
            let env = env();
            let digest = env.put(blob);
            let (m, upper) = overlay_mount(&env);
            let resp = env
                .svc
                .apply(req(apply_req(media_type, &digest, blob.len(), vec![m])))
                .await
                .unwrap()
                .into_inner();
            let applied = resp.applied.unwrap();
            assert_eq!(applied.media_type, MEDIA_TYPE_LAYER);
            assert_eq!(applied.digest, sha(&tar), "{media_type}");
            assert_eq!(applied.size, tar.len() as i64);
            assert_eq!(
                fs::read(upper.join("etc/motd")).unwrap(),
                b"hello from a layer\n"
            );
        }
    }

    #[tokio::test]
    async fn apply_detects_corrupt_and_mismatched_blobs() {
        if !requires_root("applying with numeric owners") {
            return;
        }
        let env = env();
        let gz = gzip(&layer());
        let digest = env.put(&gz);
        let (m, _) = overlay_mount(&env);

        let err = env
            .svc
            .apply(req(apply_req(
                MEDIA_TYPE_LAYER_GZIP,
                &digest,
                gz.len() + 1,
                vec![m.clone()],
            )))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

        // Flip the stored bytes behind the store's back: the digest no longer holds.
        let d: BlobDigest = digest.parse().unwrap();
        let path = env.content.blobs().blob_path(&d);
        let mut perms = fs::metadata(&path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        fs::set_permissions(&path, perms).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let err = env
            .svc
            .apply(req(apply_req(
                MEDIA_TYPE_LAYER_GZIP,
                &digest,
                gz.len(),
                vec![m],
            )))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::DataLoss, "{err:?}");
        assert!(err.message().contains(&digest), "{}", err.message());
    }

    #[tokio::test]
    async fn apply_fails_on_a_gzip_stream_cut_short_even_with_a_matching_digest() {
        if !requires_root("applying with numeric owners") {
            return;
        }
        let env = env();
        let gz = gzip(&layer());
        // Stored under the digest of the cut bytes: only decompression can notice.
        let cut = &gz[..gz.len() - 12];
        let digest = env.put(cut);
        let (m, _) = overlay_mount(&env);
        let err = env
            .svc
            .apply(req(apply_req(
                MEDIA_TYPE_LAYER_GZIP,
                &digest,
                cut.len(),
                vec![m],
            )))
            .await
            .unwrap_err();
        assert_eq!(
            err.message(),
            "read layer archive: incomplete deflate stream",
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn diff_round_trips_through_apply() {
        if !requires_root("bind mounts") {
            return;
        }
        let env = env();
        let lower = env.path("l");
        let upper = env.path("u");
        let target = env.path("t");
        for d in [&lower, &upper, &target] {
            fs::write(d.join("same"), b"same").unwrap();
            fs::write(d.join("gone"), b"gone").unwrap();
            filetime::set_file_mtime(d.join("same"), filetime::FileTime::from_unix_time(1, 0))
                .unwrap();
        }
        fs::remove_file(upper.join("gone")).unwrap();
        fs::create_dir(upper.join("new")).unwrap();
        fs::write(upper.join("new/file"), b"new").unwrap();
        let bind = |p: &Path| ProtoMount {
            r#type: "bind".into(),
            source: p.display().to_string(),
            target: String::new(),
            options: vec!["rbind".into()],
        };
        let mut labels = HashMap::new();
        labels.insert("x".to_owned(), "y".to_owned());
        let desc = env
            .svc
            .diff(req(DiffRequest {
                left: vec![bind(&lower)],
                right: vec![bind(&upper)],
                media_type: String::new(),
                r#ref: String::new(),
                labels,
            }))
            .await
            .unwrap()
            .into_inner()
            .diff
            .unwrap();
        assert_eq!(desc.media_type, MEDIA_TYPE_LAYER_GZIP);
        let info = env.content.info(NS, &desc.digest).unwrap();
        assert_eq!(info.size as i64, desc.size);
        assert_eq!(info.labels.get("x").map(String::as_str), Some("y"));
        let diff_id = info.labels.get(LABEL_UNCOMPRESSED).unwrap().clone();

        // Nothing stays mounted in the temp dir.
        assert_eq!(fs::read_dir(&env.svc.tmp_dir).unwrap().count(), 0);

        let (file, _) = env.content.open(NS, &desc.digest).unwrap();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(file)
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(sha(&tar), diff_id);
        let applied = apply_layer(tar.as_slice(), &target, &ApplyOptions::default()).unwrap();
        assert_eq!(applied.diff_id, diff_id);
        assert!(!target.join("gone").exists());
        assert_eq!(fs::read(target.join("new/file")).unwrap(), b"new");
        assert_eq!(fs::metadata(target.join("same")).unwrap().mtime(), 1);

        // The same diff again: the blob exists, and the call still succeeds.
        let again = env
            .svc
            .diff(req(DiffRequest {
                left: vec![bind(&lower)],
                right: vec![bind(&upper)],
                media_type: MEDIA_TYPE_LAYER.into(),
                r#ref: "fixed".into(),
                labels: HashMap::new(),
            }))
            .await
            .unwrap()
            .into_inner()
            .diff
            .unwrap();
        assert_eq!(again.digest, diff_id);

        let err = env
            .svc
            .diff(req(DiffRequest {
                left: vec![bind(&lower)],
                right: vec![bind(&upper)],
                media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip".into(),
                r#ref: String::new(),
                labels: HashMap::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
    }
}
