//! `containerd.services.diff.v1.Diff`: Apply unpacks a layer blob from the content store onto
//! a snapshot's mounts; Diff writes the layer between two mount sets into the content store.
//! The service only takes the namespace, validates, calls the [`LayerDiffer`], converts and
//! maps the error (containerd `plugins/services/diff/local.go` over `core/diff/apply` and
//! `diff/walking`). The differ reads and writes the daemon's content store through
//! `berth_core::layer_content::layer_differ`, which in-daemon unpack uses as well.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use berth_core::layer_content::layer_differ;
use berth_core::metadata::plugin::content_view;
use berth_core::namespaced_content::NamespacedContent;
use berth_proto::containerd::services::diff::v1::diff_server::{Diff, DiffServer, SERVICE_NAME};
use berth_proto::containerd::services::diff::v1::{
    ApplyRequest, ApplyResponse, DiffRequest, DiffResponse,
};
use berth_proto::containerd::types::Descriptor;
use berth_registry::{types, Classify, ErrorKind, Registration};
use berth_snapshotters::apply::{
    diff_compression, CompareOptions, DiffError, LayerDescriptor, LayerDiffer,
};
use berth_snapshotters::snapshotter::Mount;
use berth_wellknown::media_type;
use tonic::{Request, Response, Status};

use crate::grpc::GrpcService;
use crate::status::to_status;
use crate::{blocking, namespace};

/// Why a Diff service call failed.
#[derive(Debug, thiserror::Error)]
pub enum DiffServiceError {
    /// A required request field is missing.
    #[error("{0} is required")]
    Missing(&'static str),
    /// Applying or computing the layer failed.
    #[error(transparent)]
    Diff(#[from] DiffError),
}

impl Classify for DiffServiceError {
    fn kind(&self) -> ErrorKind {
        match self {
            DiffServiceError::Missing(_) => ErrorKind::InvalidArgument,
            DiffServiceError::Diff(e) => e.kind(),
        }
    }
}

/// The Diff service.
#[derive(Debug, Clone)]
pub struct DiffService {
    differ: LayerDiffer,
}

impl DiffService {
    /// A service over the namespaced content store, mounting under `tmp_dir`.
    pub fn new(content: NamespacedContent, tmp_dir: PathBuf) -> Self {
        DiffService {
            differ: layer_differ(content, tmp_dir),
        }
    }

    /// The differ the service calls.
    pub fn differ(&self) -> &LayerDiffer {
        &self.differ
    }
}

/// A layer descriptor on the wire.
fn descriptor_to_proto(d: LayerDescriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size as i64,
        annotations: HashMap::new(),
    }
}

#[tonic::async_trait]
impl Diff for DiffService {
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let ns = namespace::from_request(&req)?;
        let req = req.into_inner();
        let desc = req
            .diff
            .ok_or_else(|| to_status(&DiffServiceError::Missing("diff descriptor")))?;
        let span = tracing::Span::current();
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
        let layer = LayerDescriptor {
            media_type: desc.media_type,
            digest: desc.digest,
            // Zero or less: the size is not known, and not checked.
            size: u64::try_from(desc.size).unwrap_or(0),
        };
        let mounts: Vec<Mount> = req.mounts.into_iter().map(Mount::from).collect();
        let applied = blocking::call(&self.differ, move |d| d.apply(&ns, &layer, &mounts)).await?;
        Ok(Response::new(ApplyResponse {
            applied: Some(descriptor_to_proto(applied)),
        }))
    }

    async fn diff(&self, req: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        let ns = namespace::from_request(&req)?;
        let lease = namespace::lease_from_request(&req)?;
        let req = req.into_inner();
        let media_type = if req.media_type.is_empty() {
            media_type::OCI_LAYER_GZIP.to_owned()
        } else {
            req.media_type
        };
        let compression = diff_compression(&media_type).map_err(|e| to_status(&e))?;
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
        span.record("media_type", media_type.as_str());
        span.record("ref", reference.as_str());
        let opts = CompareOptions {
            media_type,
            compression,
            reference,
            lease,
            labels: req.labels.into_iter().collect(),
        };
        let left: Vec<Mount> = req.left.into_iter().map(Mount::from).collect();
        let right: Vec<Mount> = req.right.into_iter().map(Mount::from).collect();
        let desc =
            blocking::call(&self.differ, move |d| d.compare(&ns, &left, &right, opts)).await?;
        Ok(Response::new(DiffResponse {
            diff: Some(descriptor_to_proto(desc)),
        }))
    }
}

/// The `io.containerd.grpc.v1.diff` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "diff")
        .serves(&[SERVICE_NAME])
        .reloadable()
        .requires(&[types::METADATA, types::CONTENT, types::SNAPSHOTTER])
        .init(|ctx| {
            let content = content_view(ctx)?;
            let tmp_dir = ctx.create_state()?;
            // Temp mounts a killed daemon left mounted here: nobody else will release them.
            // Once per process: the plugin is reloadable, and a later init must not detach an
            // earlier instance's mounts in use.
            static SWEPT: std::sync::Once = std::sync::Once::new();
            let mut stale = 0;
            SWEPT.call_once(|| stale = berth_snapshotters::mount::cleanup_temp_mounts(&tmp_dir));
            if stale > 0 {
                tracing::info!(count = stale, dir = %tmp_dir.display(), "released stale temp mounts");
            }
            let svc = DiffService::new(content, tmp_dir);
            Ok(Arc::new(GrpcService::new(DiffServer::new(svc))))
        })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use std::collections::BTreeMap;
    use std::io::{self, Read, Write};
    use std::path::Path;

    use berth_core::content::{ContentStore, Digest as BlobDigest};
    use berth_core::MetadataStore;
    use berth_integration::require_root;
    use berth_proto::containerd::types::Mount as ProtoMount;
    use berth_snapshotters::apply::{apply_layer, ApplyOptions};
    use sha2::{Digest as _, Sha256};
    use tonic::Code;

    use super::*;
    use crate::namespace::NAMESPACE_HEADER;
    use berth_wellknown::label;

    const NS: &str = "default";

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
        let mut r = apply_req(media_type::OCI_LAYER, "sha256:00", 1, vec![m]);
        r.diff = None;
        let err = env.svc.apply(req(r)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = env
            .svc
            .apply(Request::new(apply_req(
                media_type::OCI_LAYER,
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
        // Applying with numeric owners needs root.
        if !require_root() {
            return;
        }
        let tar = layer();
        let gz = gzip(&tar);
        let mut zst = Vec::new();
        zstd::stream::copy_encode(tar.as_slice(), &mut zst, 3).unwrap();
        let cases: [(&str, &[u8]); 4] = [
            (media_type::OCI_LAYER, &tar),
            (media_type::OCI_LAYER_GZIP, &gz),
            (media_type::OCI_LAYER_ZSTD, &zst),
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
            assert_eq!(applied.media_type, media_type::OCI_LAYER);
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
        // Applying with numeric owners needs root.
        if !require_root() {
            return;
        }
        let env = env();
        let gz = gzip(&layer());
        let digest = env.put(&gz);
        let (m, _) = overlay_mount(&env);

        let err = env
            .svc
            .apply(req(apply_req(
                media_type::OCI_LAYER_GZIP,
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
                media_type::OCI_LAYER_GZIP,
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
        // Applying with numeric owners needs root.
        if !require_root() {
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
                media_type::OCI_LAYER_GZIP,
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
        // Bind mounts need root.
        if !require_root() {
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
        assert_eq!(desc.media_type, media_type::OCI_LAYER_GZIP);
        let info = env.content.info(NS, &desc.digest).unwrap();
        assert_eq!(info.size as i64, desc.size);
        assert_eq!(info.labels.get("x").map(String::as_str), Some("y"));
        let diff_id = info.labels.get(label::UNCOMPRESSED).unwrap().clone();

        // Nothing stays mounted in the temp dir.
        assert_eq!(fs::read_dir(env.dir.path().join("tmp")).unwrap().count(), 0);

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
                media_type: media_type::OCI_LAYER.into(),
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
