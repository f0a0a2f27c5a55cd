//! Pull: resolve a reference, fetch the index, manifests, config and layers into the content
//! store under a lease, unpack the layers into the snapshotter while later layers still
//! download, and create or update the image record (containerd `pull.go`, `unpacker.go`,
//! `remotes/handlers.go`, `images/handlers.go`).

use std::collections::BTreeMap;
use std::fmt;
use std::pin::pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use berth_errdefs::ErrorKind;
use berth_wellknown::{label, media_type};
use futures::future::{self, Either};
use futures::stream::{self, StreamExt, TryStreamExt};
use oci_client::client::BlobResponse;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use tokio::sync::mpsc;

use crate::error::{StoreError, TransferError};
use crate::hosts::RegistryHost;
use crate::manifest::{parse_index, parse_manifest, select_entries, sniff_media_type};
use crate::progress::{NoProgress, Progress, ShowProgress};
use crate::refusal;
use crate::registry::{ImageRef, RegistryOptions};
use crate::store::{ContentWriter, Cx, Ingest, Stores, LEASE_EXPIRY};
use crate::types::{ingest_ref, is_index, is_manifest, sha256_digest, Descriptor, Image, Platform};
use crate::unpack::Unpacker;

/// The largest store write a download makes: received chunks are gathered up to this size
/// (the size of one `Content.Write` message, as containerd's client copies in 1 MiB buffers).
const STORE_BATCH: usize = crate::grpc::WRITE_CHUNK;

/// What to pull and how (ctr `images pull` flags).
#[derive(Clone)]
pub struct PullOptions {
    /// Registry connection and credentials.
    pub registry: RegistryOptions,
    /// The platform to fetch (and unpack) from an index; `None` is this host's.
    pub platform: Option<Platform>,
    /// Fetch every manifest of an index (only the selected platform is unpacked).
    pub all_platforms: bool,
    /// Unpack the layers into the snapshotter of [`Stores::snapshots`].
    pub unpack: bool,
    /// Labels set on the image record.
    pub labels: BTreeMap<String, String>,
    /// Progress callbacks.
    pub progress: Arc<dyn Progress>,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            registry: RegistryOptions::default(),
            platform: None,
            all_platforms: false,
            unpack: true,
            labels: BTreeMap::new(),
            progress: Arc::new(NoProgress),
        }
    }
}

impl fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullOptions")
            .field("registry", &self.registry)
            .field("platform", &self.platform)
            .field("all_platforms", &self.all_platforms)
            .field("unpack", &self.unpack)
            .field("labels", &self.labels)
            .field("progress", &ShowProgress)
            .finish()
    }
}

/// Pulls `reference` (docker-normalized: `busybox` is `docker.io/library/busybox:latest`) into
/// `stores` and returns the image record.
///
/// Blobs already in the content store are not fetched again, and an ingest left by an
/// interrupted pull resumes from its offset with a ranged request (restarting the blob when
/// the registry ignores the range). Everything is written under a lease with
/// `containerd.io/gc.expire` = now + 24 h; the lease is deleted when the pull succeeds and kept
/// (until it expires) when it fails, so that a retry finds the blobs committed so far.
pub async fn pull(
    reference: &str,
    opts: &PullOptions,
    stores: &Stores<'_>,
) -> Result<Image, TransferError> {
    let mut image_ref = ImageRef::parse(reference)?;
    let registry = image_ref.registry().to_owned();
    let endpoints = opts.registry.endpoints(&registry);
    let resolved = resolve(&image_ref, &endpoints, opts).await?;
    let (client, auth) = if resolved.endpoint.capabilities.pull {
        point_at(&mut image_ref, &resolved.endpoint);
        (resolved.client, resolved.auth)
    } else {
        // Resolved where blobs may not be fetched: the first endpoint that may serve them.
        let ep = endpoints
            .iter()
            .find(|h| h.capabilities.pull && h.standard_path())
            .ok_or_else(|| TransferError::NoEndpoint {
                registry: registry.clone(),
                capability: "pull",
            })?;
        let client = opts.registry.client_for(ep);
        let auth = opts.registry.auth_for(&ep.host);
        point_at(&mut image_ref, ep);
        client
            .store_auth_if_needed(image_ref.reference.resolve_registry(), &auth)
            .await;
        (client, auth)
    };
    let (root_bytes, root_digest) = (resolved.bytes, resolved.digest);
    let root = Descriptor::new(
        &sniff_media_type(&root_bytes, &root_digest)?,
        &root_digest,
        root_bytes.len() as u64,
    );
    tracing::debug!(name = %image_ref.name, digest = %root.digest, media_type = %root.media_type, endpoint = %resolved.endpoint.url(), "resolved");

    let base = Cx::new(stores.namespace);
    let lease = format!("berth-pull-{}", uuid::Uuid::new_v4().simple());
    let expire = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + LEASE_EXPIRY.as_secs();
    let lease_labels =
        BTreeMap::from([(label::GC_EXPIRE.to_owned(), crate::types::rfc3339(expire))]);
    stores
        .leases
        .create(&base, &lease, &lease_labels)
        .await
        .map_err(|e| TransferError::store("create lease", &lease, e))?;

    let puller = Puller {
        client,
        auth,
        image_ref,
        stores: *stores,
        cx: base.with_lease(&lease),
        opts,
    };
    let image = puller.run(root, root_bytes.to_vec()).await?;
    if let Err(e) = stores.leases.delete(&base, &lease).await {
        tracing::warn!(lease, "cannot delete pull lease: {e}");
    }
    Ok(image)
}

/// The root manifest or index of a reference, and where it came from.
struct Resolved {
    endpoint: RegistryHost,
    client: Client,
    auth: RegistryAuth,
    bytes: Vec<u8>,
    digest: String,
}

/// Asks each endpoint that may resolve (a tag) or pull (a digest) for the root manifest, in
/// order; the first answer wins. When none answers, the first endpoint's error is returned,
/// as containerd's resolver does.
async fn resolve(
    image_ref: &ImageRef,
    endpoints: &[RegistryHost],
    opts: &PullOptions,
) -> Result<Resolved, TransferError> {
    let by_digest = image_ref.reference.digest().is_some();
    let capability = if by_digest { "pull" } else { "resolve" };
    let mut first_err = None;
    let mut tried = 0;
    for ep in endpoints {
        let able = if by_digest {
            ep.capabilities.pull
        } else {
            ep.capabilities.resolve
        };
        if !able {
            continue;
        }
        if !ep.standard_path() {
            tracing::warn!(endpoint = %ep.url(), "registry endpoint skipped: only the /v2 path is supported");
            continue;
        }
        tried += 1;
        let mut r = image_ref.clone();
        point_at(&mut r, ep);
        let client = opts.registry.client_for(ep);
        let auth = opts.registry.auth_for(&ep.host);
        client
            .store_auth_if_needed(r.reference.resolve_registry(), &auth)
            .await;
        match client
            .pull_manifest_raw(&r.reference, &auth, &media_type::MANIFESTS)
            .await
        {
            Ok((bytes, digest)) => {
                return Ok(Resolved {
                    endpoint: ep.clone(),
                    client,
                    auth,
                    bytes: bytes.to_vec(),
                    digest,
                })
            }
            Err(e) => {
                let refused = match &e {
                    oci_client::errors::OciDistributionError::UnauthorizedError { url } => {
                        Some(url.clone())
                    }
                    _ => None,
                };
                let mut err =
                    TransferError::from_oci(e, &ep.host, &format!("manifest {}", image_ref.name));
                if let (Some(url), TransferError::Unauthorized { detail, .. }) = (refused, &mut err)
                {
                    let skip_verify = opts.registry.skip_verify;
                    if let Some(words) = refusal::registry_words(ep, skip_verify, &url, &auth).await
                    {
                        detail.push_str(": ");
                        detail.push_str(&words);
                    }
                }
                tracing::debug!(endpoint = %ep.url(), "resolving failed: {err}");
                first_err.get_or_insert(err);
            }
        }
    }
    Err(match first_err {
        Some(e) => e,
        None => {
            debug_assert_eq!(tried, 0);
            TransferError::NoEndpoint {
                registry: image_ref.registry().to_owned(),
                capability,
            }
        }
    })
}

/// Makes `image_ref` fetch from `endpoint` (a mirror keeps the repository path; the name and
/// distribution source stay the original registry's).
fn point_at(image_ref: &mut ImageRef, endpoint: &RegistryHost) {
    if endpoint.host != image_ref.registry() {
        image_ref
            .reference
            .set_mirror_registry(endpoint.host.clone());
    }
}

/// One pull in progress.
struct Puller<'a> {
    client: Client,
    auth: RegistryAuth,
    image_ref: ImageRef,
    stores: Stores<'a>,
    cx: Cx,
    opts: &'a PullOptions,
}

/// A manifest chosen for fetching, and whether its layers are unpacked.
struct Chosen {
    desc: Descriptor,
    unpack: bool,
}

impl Puller<'_> {
    fn progress(&self) -> &dyn Progress {
        &*self.opts.progress
    }

    /// The host blobs come from (a mirror's when the pull goes through one), for messages.
    fn registry(&self) -> &str {
        match self.image_ref.reference.namespace() {
            Some(_) => self.image_ref.reference.resolve_registry(),
            None => self.image_ref.registry(),
        }
    }

    async fn run(&self, root: Descriptor, root_bytes: Vec<u8>) -> Result<Image, TransferError> {
        let want = self.opts.platform.clone().unwrap_or_else(Platform::host);
        let mut chosen: Vec<Chosen> = Vec::new();
        // Breadth-first walk of the index tree; `pending` holds documents already fetched.
        let mut pending: Vec<(Descriptor, Vec<u8>)> = vec![(root.clone(), root_bytes)];
        while let Some((desc, bytes)) = pending.pop() {
            if is_index(&desc.media_type) {
                let index = parse_index(&bytes, &desc.digest)?;
                let labels: BTreeMap<String, String> = index
                    .manifests
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        (
                            format!("{}{i}", label::GC_REF_CONTENT_MANIFEST),
                            m.digest.clone(),
                        )
                    })
                    .collect();
                self.put_bytes(&desc, &bytes, labels).await?;
                let filter = (!self.opts.all_platforms).then_some(&want);
                let entries = select_entries(&index, filter);
                if entries.is_empty() {
                    return Err(TransferError::NoMatchingPlatform {
                        reference: self.image_ref.name.clone(),
                        platform: want.to_string(),
                    });
                }
                for entry in entries {
                    let child = self.manifest_bytes(entry).await?;
                    if is_manifest(&entry.media_type) {
                        let matches = entry.platform.as_ref().is_none_or(|p| want.matches(p));
                        let unpack =
                            self.opts.unpack && matches && !chosen.iter().any(|c| c.unpack);
                        chosen.push(Chosen {
                            desc: entry.clone(),
                            unpack,
                        });
                        self.put_manifest(entry, &child).await?;
                    } else {
                        pending.push((entry.clone(), child));
                    }
                }
            } else {
                chosen.push(Chosen {
                    desc: desc.clone(),
                    unpack: self.opts.unpack,
                });
                self.put_manifest(&desc, &bytes).await?;
            }
        }

        for manifest in &chosen {
            self.fetch_image(manifest).await?;
        }

        let image = Image {
            name: self.image_ref.name.clone(),
            target: root,
            labels: self.opts.labels.clone(),
        };
        self.save_image(&image).await
    }

    /// Creates the image record, or points the existing one at the new target.
    async fn save_image(&self, image: &Image) -> Result<Image, TransferError> {
        let images = self.stores.images;
        match images.create(&self.cx, image).await {
            Ok(saved) => Ok(saved),
            Err(e) if e.is_already_exists() => {
                let mut paths = vec!["target".to_owned()];
                paths.extend(image.labels.keys().map(|k| format!("labels.{k}")));
                images
                    .update(&self.cx, image, &paths)
                    .await
                    .map_err(|e| TransferError::store("update image", &image.name, e))
            }
            Err(e) => Err(TransferError::store("create image", &image.name, e)),
        }
    }

    /// The bytes of the manifest or index `desc`: from the content store when present (no
    /// request), else from the registry by digest.
    async fn manifest_bytes(&self, desc: &Descriptor) -> Result<Vec<u8>, TransferError> {
        let content = self.stores.content;
        if content
            .info(&self.cx, &desc.digest)
            .await
            .map_err(|e| TransferError::store("content info", &desc.digest, e))?
            .is_some()
        {
            return content
                .read(&self.cx, &desc.digest)
                .await
                .map_err(|e| TransferError::store("read content", &desc.digest, e));
        }
        let reference = self.image_ref.at(&desc.digest);
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&reference, &self.auth, &media_type::MANIFESTS)
            .await
            .map_err(|e| {
                TransferError::from_oci(e, self.registry(), &format!("manifest {}", desc.digest))
            })?;
        check_bytes(desc, &bytes)?;
        Ok(bytes.to_vec())
    }

    /// Stores a manifest with its `gc.ref.content` labels (config, `l.<i>`).
    async fn put_manifest(&self, desc: &Descriptor, bytes: &[u8]) -> Result<(), TransferError> {
        let manifest = parse_manifest(bytes, &desc.digest)?;
        let mut labels = BTreeMap::from([(
            label::GC_REF_CONTENT_CONFIG.to_owned(),
            manifest.config.digest.clone(),
        )]);
        for (i, layer) in manifest.layers.iter().enumerate() {
            labels.insert(
                format!("{}{i}", label::GC_REF_CONTENT_LAYER),
                layer.digest.clone(),
            );
        }
        self.put_bytes(desc, bytes, labels).await
    }

    /// Fetches the config and layers of one manifest, unpacking as layers arrive when asked.
    async fn fetch_image(&self, chosen: &Chosen) -> Result<(), TransferError> {
        let content = self.stores.content;
        let bytes = content
            .read(&self.cx, &chosen.desc.digest)
            .await
            .map_err(|e| TransferError::store("read content", &chosen.desc.digest, e))?;
        let manifest = parse_manifest(&bytes, &chosen.desc.digest)?;
        self.fetch_blob(&manifest.config, BTreeMap::new()).await?;
        let layers = &manifest.layers;

        if !chosen.unpack {
            // Collected first: a lazy `map` over borrowed layers makes the pull future fail
            // rustc's `Send` proof in generic callers (rust-lang/rust#102211), and the daemon
            // side (the CRI) needs a `Send` future.
            let fetches: Vec<_> = layers
                .iter()
                .map(|l| self.fetch_blob(l, BTreeMap::new()))
                .collect();
            return stream::iter(fetches)
                .buffer_unordered(self.opts.registry.parallelism())
                .try_collect::<Vec<()>>()
                .await
                .map(|_| ());
        }

        let unpacker = Unpacker {
            stores: self.stores,
            cx: &self.cx,
            progress: self.progress(),
        };
        let image = unpacker.prepare(manifest).await?;
        let layers = &image.manifest.layers;

        // Downloads run `parallelism` at a time and report each finished index; the unpacker
        // applies layer i as soon as layers 0..=i are in, while later ones still download.
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<usize>();
        let fetches: Vec<_> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let tx = done_tx.clone();
                async move {
                    self.fetch_blob(l, BTreeMap::new()).await?;
                    // The unpacker may have failed and gone: nothing to tell then.
                    let _ = tx.send(i);
                    Ok::<(), TransferError>(())
                }
            })
            .collect();
        drop(done_tx);
        let downloads = async move {
            stream::iter(fetches)
                .buffer_unordered(self.opts.registry.parallelism())
                .try_collect::<Vec<()>>()
                .await
                .map(|_| ())
        };
        let unpacking = async {
            let mut ready = vec![false; layers.len()];
            for (i, layer) in layers.iter().enumerate() {
                while !ready[i] {
                    match done_rx.recv().await {
                        Some(j) => ready[j] = true,
                        // Every download finished and reported; cannot happen with i unready.
                        None => {
                            return Err(TransferError::DownloadLost {
                                layer: layer.digest.clone(),
                            })
                        }
                    }
                }
                unpacker.layer(&image, i).await?;
            }
            Ok(())
        };
        // A failed download cancels the others (their ingests stay, resumable) but not the
        // layer being unpacked: the unpacker finishes or undoes it (an extraction snapshot
        // dropped halfway would stay behind as an active snapshot), applies whatever else is
        // already complete, and stops at the first layer whose download was lost. A failed
        // unpack cancels the downloads.
        let (downloads, unpacking) = (pin!(downloads), pin!(unpacking));
        match future::select(downloads, unpacking).await {
            Either::Left((Ok(()), unpacking)) => unpacking.await?,
            Either::Left((Err(e), unpacking)) => {
                if let Err(later) = unpacking.await {
                    tracing::debug!("unpacking stopped after the failed download: {later}");
                }
                return Err(e);
            }
            Either::Right((Ok(()), downloads)) => downloads.await?,
            Either::Right((Err(e), _downloads)) => return Err(e),
        }

        unpacker.finish(&image).await
    }

    /// The labels every pulled blob gets besides `extra`: the distribution source, appended to
    /// what `existing` has (comma-joined, as `AppendDistributionSourceLabel` does).
    fn wanted_labels(
        &self,
        existing: &BTreeMap<String, String>,
        extra: BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let (key, repo) = self.image_ref.distribution_source();
        let mut wanted = extra;
        let value = match existing.get(&key).filter(|v| !v.is_empty()) {
            Some(old) if old.split(',').any(|r| r == repo) => old.clone(),
            Some(old) => format!("{old},{repo}"),
            None => repo,
        };
        wanted.insert(key, value);
        wanted
    }

    /// Adds the labels of [`Puller::wanted_labels`] that a present blob lacks.
    async fn relabel(
        &self,
        desc: &Descriptor,
        extra: BTreeMap<String, String>,
    ) -> Result<(), TransferError> {
        let content = self.stores.content;
        let existing = content
            .info(&self.cx, &desc.digest)
            .await
            .map_err(|e| TransferError::store("content info", &desc.digest, e))?
            .map(|i| i.labels)
            .unwrap_or_default();
        let missing: BTreeMap<String, String> = self
            .wanted_labels(&existing, extra)
            .into_iter()
            .filter(|(k, v)| existing.get(k) != Some(v))
            .collect();
        content
            .update_labels(&self.cx, &desc.digest, &missing)
            .await
            .map_err(|e| TransferError::store("label content", &desc.digest, e))
    }

    /// Stores `bytes` (already fetched and verified) as `desc` with `labels`.
    async fn put_bytes(
        &self,
        desc: &Descriptor,
        bytes: &[u8],
        extra: BTreeMap<String, String>,
    ) -> Result<(), TransferError> {
        let p = self.progress();
        p.on_start(desc);
        let store = |e| TransferError::store("write content", &desc.digest, e);
        let labels =
            |existing: &BTreeMap<String, String>| self.wanted_labels(existing, extra.clone());
        for attempt in 0..2 {
            let mut w = match self.open(desc).await? {
                Ingest::Present => {
                    self.relabel(desc, extra).await?;
                    p.on_exists(desc);
                    return Ok(());
                }
                Ingest::Writer(w) => w,
            };
            // A complete ingest (left by an earlier pull, or shared from another namespace)
            // only needs its commit.
            if attempt == 0 && w.offset() == desc.size {
                match w.commit(labels(&BTreeMap::new())).await {
                    Ok(()) => {
                        p.on_bytes(desc, desc.size);
                        p.on_done(desc);
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::debug!(digest = %desc.digest, "complete ingest failed to commit ({e}); rewriting it");
                        continue;
                    }
                }
            }
            if w.offset() != 0 {
                w.truncate().await.map_err(store)?;
            }
            w.write(bytes).await.map_err(store)?;
            p.on_bytes(desc, bytes.len() as u64);
            w.commit(labels(&BTreeMap::new()))
                .await
                .map_err(commit_error(desc))?;
            p.on_done(desc);
            return Ok(());
        }
        Ok(())
    }

    /// Opens an ingest for `desc`, or tells it is present.
    async fn open(&self, desc: &Descriptor) -> Result<Ingest, TransferError> {
        let content = self.stores.content;
        if content
            .info(&self.cx, &desc.digest)
            .await
            .map_err(|e| TransferError::store("content info", &desc.digest, e))?
            .is_some()
        {
            return Ok(Ingest::Present);
        }
        content
            .writer(&self.cx, &ingest_ref(desc), desc)
            .await
            .map_err(|e| TransferError::store("open content writer", &desc.digest, e))
    }

    /// Fetches the blob `desc` from the registry into the content store unless present,
    /// resuming a partial ingest; commits with `extra` and the distribution-source label.
    async fn fetch_blob(
        &self,
        desc: &Descriptor,
        extra: BTreeMap<String, String>,
    ) -> Result<(), TransferError> {
        let p = self.progress();
        p.on_start(desc);
        // A resumed ingest whose bytes do not verify is fetched once more from the start.
        for attempt in 0..2 {
            let mut w = match self.open(desc).await? {
                Ingest::Present => {
                    self.relabel(desc, extra).await?;
                    p.on_exists(desc);
                    return Ok(());
                }
                Ingest::Writer(w) => w,
            };
            let resumed = w.offset();
            if attempt > 0 || resumed > desc.size {
                w.truncate()
                    .await
                    .map_err(|e| TransferError::store("write content", &desc.digest, e))?;
            }
            self.download(desc, &mut *w).await?;
            let labels = self.wanted_labels(&BTreeMap::new(), extra.clone());
            match w.commit(labels).await {
                Ok(()) => {
                    p.on_done(desc);
                    return Ok(());
                }
                Err(e) if resumed > 0 && attempt == 0 => {
                    tracing::warn!(digest = %desc.digest, "resumed blob failed to commit ({e}); fetching it again");
                }
                Err(e) => return Err(commit_error(desc)(e)),
            }
        }
        Err(TransferError::DigestMismatch {
            digest: desc.digest.clone(),
            detail: "the blob did not verify after a full download".to_owned(),
        })
    }

    /// Streams the blob from the registry into `w`, from `w.offset()` on.
    async fn download(
        &self,
        desc: &Descriptor,
        w: &mut dyn ContentWriter,
    ) -> Result<(), TransferError> {
        let p = self.progress();
        let reference = self.image_ref.at(&desc.digest);
        let oci_desc = OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.clone(),
            size: i64::try_from(desc.size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let what = format!("blob {}", desc.digest);
        let oci = |e| TransferError::from_oci(e, self.registry(), &what);
        let store = |e| TransferError::store("write content", &desc.digest, e);
        let offset = w.offset();
        let mut stream = if offset == 0 {
            self.client
                .pull_blob_stream(&reference, &oci_desc)
                .await
                .map_err(oci)?
                .stream
        } else if offset == desc.size {
            p.on_bytes(desc, offset);
            return Ok(());
        } else {
            match self
                .client
                .pull_blob_stream_partial(&reference, &oci_desc, offset, None)
                .await
                .map_err(oci)?
            {
                BlobResponse::Partial(s) => {
                    tracing::debug!(digest = %desc.digest, offset, "resuming download");
                    p.on_bytes(desc, offset);
                    s.stream
                }
                BlobResponse::Full(s) => {
                    w.truncate().await.map_err(store)?;
                    s.stream
                }
            }
        };
        // The HTTP body arrives in chunks of a few KiB to a few hundred KiB; each store write
        // costs a gRPC message and its answer (client side) or a hop to the blocking pool
        // (daemon side), so chunks are gathered into writes of up to `STORE_BATCH` bytes.
        let mut batch: Vec<u8> = Vec::with_capacity(STORE_BATCH);
        let mut received = w.offset();
        loop {
            let next = stream.next().await;
            let ended = next.is_none();
            if let Some(chunk) = next {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        // Keep what arrived, so that a retry resumes after it.
                        if !batch.is_empty() && w.write(&batch).await.is_ok() {
                            p.on_bytes(desc, batch.len() as u64);
                        }
                        return Err(stream_error(self.registry(), desc, e));
                    }
                };
                received += chunk.len() as u64;
                if received > desc.size {
                    return Err(TransferError::DigestMismatch {
                        digest: desc.digest.clone(),
                        detail: format!("the registry sent more than {} bytes", desc.size),
                    });
                }
                batch.extend_from_slice(&chunk);
            }
            if !batch.is_empty() && (ended || batch.len() >= STORE_BATCH) {
                w.write(&batch).await.map_err(store)?;
                p.on_bytes(desc, batch.len() as u64);
                batch.clear();
            }
            if ended {
                break;
            }
        }
        if w.offset() != desc.size {
            return Err(TransferError::Network {
                registry: self.registry().to_owned(),
                detail: format!(
                    "blob {} ended after {} of {} bytes",
                    desc.digest,
                    w.offset(),
                    desc.size
                ),
            });
        }
        Ok(())
    }
}

/// Checks fetched manifest bytes against their descriptor.
fn check_bytes(desc: &Descriptor, bytes: &[u8]) -> Result<(), TransferError> {
    let actual = sha256_digest(bytes);
    if actual != desc.digest || bytes.len() as u64 != desc.size {
        return Err(TransferError::DigestMismatch {
            digest: desc.digest.clone(),
            detail: format!(
                "got {actual} ({} bytes, expected {})",
                bytes.len(),
                desc.size
            ),
        });
    }
    Ok(())
}

/// Maps a failed commit: a digest or size mismatch is the registry's fault.
fn commit_error(desc: &Descriptor) -> impl Fn(StoreError) -> TransferError + '_ {
    move |e| {
        if e.kind() == ErrorKind::FailedPrecondition {
            TransferError::DigestMismatch {
                digest: desc.digest.clone(),
                detail: e.to_string(),
            }
        } else {
            TransferError::store("commit content", &desc.digest, e)
        }
    }
}

/// Maps an error from a blob stream (`oci-client` verifies the digest of full downloads).
fn stream_error(registry: &str, desc: &Descriptor, e: std::io::Error) -> TransferError {
    if let Some(d) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<oci_client::errors::DigestError>())
    {
        return TransferError::DigestMismatch {
            digest: desc.digest.clone(),
            detail: d.to_string(),
        };
    }
    TransferError::Network {
        registry: registry.to_owned(),
        detail: format!(
            "reading blob {}: {}",
            desc.digest,
            crate::error::error_chain(&e)
        ),
    }
}
