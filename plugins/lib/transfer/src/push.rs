//! Push: upload an image's blobs (layers, configs), then its manifests and index, as ctr
//! `images push` does (containerd `remotes/handlers.go` `PushContent`, `remotes/docker/pusher.go`).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use oci_client::errors::OciDistributionError;
use oci_client::Client;
use tonic::codegen::http::HeaderValue;

use crate::error::{StoreError, TransferError};
use crate::manifest::{parse_index, parse_manifest, select_entries};
use crate::progress::{NoProgress, Progress, ShowProgress};
use crate::registry::{ImageRef, RegistryOptions};
use crate::store::{Cx, Stores};
use crate::types::{is_index, is_non_distributable, Descriptor, Platform};

/// How to push (ctr `images push` flags).
#[derive(Clone)]
pub struct PushOptions {
    /// Registry connection and credentials.
    pub registry: RegistryOptions,
    /// Push only this platform's manifest of an index (ctr `--platform`). `None` pushes the
    /// whole index when every manifest it lists is in the content store, else the host's.
    pub platform: Option<Platform>,
    /// Progress callbacks.
    pub progress: Arc<dyn Progress>,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            registry: RegistryOptions::default(),
            platform: None,
            progress: Arc::new(NoProgress),
        }
    }
}

impl fmt::Debug for PushOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushOptions")
            .field("registry", &self.registry)
            .field("platform", &self.platform)
            .field("progress", &ShowProgress)
            .finish()
    }
}

/// The size of the chunks a blob is uploaded in (oci-client sends one PATCH per chunk).
const UPLOAD_CHUNK: usize = 4 << 20;

/// Pushes the local image `image_name` to `reference` (docker-normalized; a tag or a digest)
/// and returns the descriptor of the manifest or index pushed as `reference`.
///
/// Blobs the registry already has are not uploaded again; manifests go after the blobs they
/// name, and an index after its manifests, so the registry can verify each one.
pub async fn push(
    image_name: &str,
    reference: &str,
    opts: &PushOptions,
    stores: &Stores<'_>,
) -> Result<Descriptor, TransferError> {
    let cx = Cx::new(stores.namespace);
    let dest = ImageRef::parse(reference)?;
    let image = stores
        .images
        .get(&cx, image_name)
        .await
        .map_err(|e| TransferError::store("get image", image_name, e))?
        .ok_or_else(|| TransferError::NotFound {
            what: format!("image {image_name}"),
        })?;

    let client = opts.registry.client();
    let auth = opts.registry.auth();
    client
        .store_auth_if_needed(dest.reference.resolve_registry(), &auth)
        .await;
    let pusher = Pusher {
        client,
        dest,
        stores: *stores,
        cx,
        opts,
    };
    let root = pusher.choose_root(image_name, &image.target).await?;
    let plan = pusher.plan(&root).await?;

    stream::iter(plan.blobs.iter().map(|b| pusher.push_blob(b)))
        .buffer_unordered(opts.registry.parallelism())
        .try_collect::<Vec<()>>()
        .await?;
    for (desc, bytes) in &plan.manifests {
        let is_root = desc.digest == root.digest;
        pusher.push_manifest(desc, bytes, is_root).await?;
    }
    Ok(root)
}

/// One push in progress.
struct Pusher<'a> {
    client: Client,
    dest: ImageRef,
    stores: Stores<'a>,
    cx: Cx,
    opts: &'a PushOptions,
}

/// What a push uploads.
struct Plan {
    /// Configs and layers, each once.
    blobs: Vec<Descriptor>,
    /// Manifests and indexes with their bytes, children before parents.
    manifests: Vec<(Descriptor, Vec<u8>)>,
}

impl Pusher<'_> {
    fn registry(&self) -> &str {
        self.dest.registry()
    }

    async fn read(&self, digest: &str) -> Result<Vec<u8>, TransferError> {
        self.stores
            .content
            .read(&self.cx, digest)
            .await
            .map_err(|e| match e.is_not_found() {
                true => TransferError::NotFound {
                    what: format!("content {digest}"),
                },
                false => TransferError::store("read content", digest, e),
            })
    }

    async fn present(&self, digest: &str) -> Result<bool, TransferError> {
        Ok(self
            .stores
            .content
            .info(&self.cx, digest)
            .await
            .map_err(|e| TransferError::store("content info", digest, e))?
            .is_some())
    }

    /// Is the manifest `desc` and every distributable blob it names in the content store?
    async fn complete(&self, desc: &Descriptor) -> Result<bool, TransferError> {
        if !self.present(&desc.digest).await? {
            return Ok(false);
        }
        let manifest = parse_manifest(&self.read(&desc.digest).await?, &desc.digest)?;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !is_non_distributable(&blob.media_type) && !self.present(&blob.digest).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The descriptor to push as the reference: the image target, or one platform's manifest
    /// of it (asked for, or because the index is only partly in the content store).
    async fn choose_root(
        &self,
        image_name: &str,
        target: &Descriptor,
    ) -> Result<Descriptor, TransferError> {
        if !is_index(&target.media_type) {
            return Ok(target.clone());
        }
        let index = parse_index(&self.read(&target.digest).await?, &target.digest)?;
        if self.opts.platform.is_none() {
            let mut all = true;
            for m in &index.manifests {
                if is_index(&m.media_type) || !self.complete(m).await? {
                    all = false;
                    break;
                }
            }
            if all {
                return Ok(target.clone());
            }
        }
        let want = self.opts.platform.clone().unwrap_or_else(Platform::host);
        let chosen = select_entries(&index, Some(&want))
            .into_iter()
            .find(|d| !is_index(&d.media_type))
            .cloned();
        match chosen {
            Some(m) if self.complete(&m).await? => {
                if self.opts.platform.is_none() {
                    tracing::info!(
                        image = image_name,
                        "index only partly present: pushing the {want} manifest"
                    );
                }
                Ok(m)
            }
            Some(m) => Err(TransferError::NotFound {
                what: format!("content of manifest {} ({want}) of {image_name}", m.digest),
            }),
            None => Err(TransferError::NoMatchingPlatform {
                reference: image_name.to_owned(),
                platform: want.to_string(),
            }),
        }
    }

    /// Lists what to upload under `root`.
    async fn plan(&self, root: &Descriptor) -> Result<Plan, TransferError> {
        let mut plan = Plan {
            blobs: Vec::new(),
            manifests: Vec::new(),
        };
        let mut seen = BTreeSet::new();
        let root_bytes = self.read(&root.digest).await?;
        if is_index(&root.media_type) {
            let index = parse_index(&root_bytes, &root.digest)?;
            for m in &index.manifests {
                if is_index(&m.media_type) {
                    return Err(TransferError::InvalidContent {
                        what: "index",
                        digest: root.digest.clone(),
                        reason: "nested indexes are not supported by push".to_owned(),
                    });
                }
                let bytes = self.read(&m.digest).await?;
                self.add_manifest(&mut plan, &mut seen, m, bytes)?;
            }
            plan.manifests.push((root.clone(), root_bytes));
        } else {
            self.add_manifest(&mut plan, &mut seen, root, root_bytes)?;
        }
        Ok(plan)
    }

    fn add_manifest(
        &self,
        plan: &mut Plan,
        seen: &mut BTreeSet<String>,
        desc: &Descriptor,
        bytes: Vec<u8>,
    ) -> Result<(), TransferError> {
        let manifest = parse_manifest(&bytes, &desc.digest)?;
        for blob in manifest
            .layers
            .iter()
            .chain(std::iter::once(&manifest.config))
        {
            if is_non_distributable(&blob.media_type) {
                continue;
            }
            if seen.insert(blob.digest.clone()) {
                plan.blobs.push(blob.clone());
            }
        }
        plan.manifests.push((desc.clone(), bytes));
        Ok(())
    }

    /// Uploads one blob unless the registry has it.
    async fn push_blob(&self, desc: &Descriptor) -> Result<(), TransferError> {
        let p = &self.opts.progress;
        let reference = self.dest.at(&desc.digest);
        let what = format!("blob {}", desc.digest);
        let oci = |e| TransferError::from_oci(e, self.registry(), &what);
        p.on_start(desc);
        if self
            .client
            .blob_exists(&reference, &desc.digest)
            .await
            .map_err(oci)?
        {
            p.on_exists(desc);
            return Ok(());
        }
        let source = self
            .stores
            .content
            .reader(&self.cx, &desc.digest)
            .await
            .map_err(|e| TransferError::store("read content", &desc.digest, e))?;
        let progress = Arc::clone(p);
        let counted = desc.clone();
        let upload = rechunk(source).map(move |r| {
            r.inspect(|b| progress.on_bytes(&counted, b.len() as u64))
                .map_err(|e| OciDistributionError::GenericError(Some(format!("read content: {e}"))))
        });
        self.client
            .push_blob_stream(&self.dest.reference, upload, &desc.digest, Some(desc.size))
            .await
            .map_err(oci)?;
        p.on_done(desc);
        Ok(())
    }

    /// Uploads a manifest or index: by digest, or as the reference when it is the root.
    async fn push_manifest(
        &self,
        desc: &Descriptor,
        bytes: &[u8],
        is_root: bool,
    ) -> Result<(), TransferError> {
        let p = &self.opts.progress;
        p.on_start(desc);
        let reference = if is_root {
            self.dest.reference.clone()
        } else {
            self.dest.at(&desc.digest)
        };
        let content_type =
            HeaderValue::from_str(&desc.media_type).map_err(|_| TransferError::InvalidContent {
                what: "manifest",
                digest: desc.digest.clone(),
                reason: format!("media type {:?} is not a header value", desc.media_type),
            })?;
        self.client
            .push_manifest_raw(&reference, bytes.to_vec(), content_type)
            .await
            .map_err(|e| {
                TransferError::from_oci(e, self.registry(), &format!("manifest {}", desc.digest))
            })?;
        p.on_bytes(desc, bytes.len() as u64);
        p.on_done(desc);
        Ok(())
    }
}

/// Regroups a blob stream into chunks of [`UPLOAD_CHUNK`] bytes (the last may be shorter).
fn rechunk(
    source: BoxStream<'static, Result<Bytes, StoreError>>,
) -> BoxStream<'static, Result<Bytes, StoreError>> {
    stream::unfold(
        (source, BytesMut::new(), false),
        |(mut source, mut buf, mut ended)| async move {
            while !ended && buf.len() < UPLOAD_CHUNK {
                match source.next().await {
                    Some(Ok(b)) => buf.extend_from_slice(&b),
                    Some(Err(e)) => return Some((Err(e), (source, buf, true))),
                    None => ended = true,
                }
            }
            if buf.is_empty() {
                return None;
            }
            let n = buf.len().min(UPLOAD_CHUNK);
            let chunk = buf.split_to(n).freeze();
            Some((Ok(chunk), (source, buf, ended)))
        },
    )
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rechunk_regroups_without_losing_bytes() {
        let parts: Vec<Result<Bytes, StoreError>> = (0..10)
            .map(|i| Ok(Bytes::from(vec![i as u8; 1 << 20])))
            .collect();
        let out: Vec<Bytes> = rechunk(stream::iter(parts).boxed())
            .try_collect()
            .await
            .unwrap();
        let sizes: Vec<usize> = out.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [UPLOAD_CHUNK, UPLOAD_CHUNK, 2 << 20]);
        assert!(rechunk(stream::empty().boxed()).next().await.is_none());
    }
}
