//! `ImageImportStream` → `ImageStore` (containerd 1.7 `pkg/transfer/archive` and
//! `pkg/transfer/local/import.go`): the client streams an OCI layout tar as `Data` messages on
//! a Streaming stream, this side granting `WindowUpdate` credits as containerd's
//! `ReceiveStream` does (64 KiB whenever fewer are outstanding; the client sends at most
//! 32 KiB a message and ends with the end of its stream). The tar is read on a blocking
//! thread as it arrives; each `blobs/<alg>/<hex>` goes straight into the content store under
//! a lease, `index.json` after it; then the index is walked (children labelled for GC, the
//! `ImageStore`'s platforms kept), the kept image manifests of each `unpacks` entry's platform
//! are unpacked into its snapshotter (the default when it names none; InvalidArgument before
//! any byte is read when it is not loaded), and the images it names are recorded.
//!
//! A Docker archive (`docker save`: `manifest.json` and no `oci-layout`) is taken as
//! containerd takes one (module [`docker`]): its other files are stored as they come, then its
//! manifests and index are made and recorded as an OCI layout's.
//!
//! Names: the `ImageStore.name` names the index; each index entry is named from its
//! `io.containerd.image.name` or `org.opencontainers.image.ref.name` annotation under the
//! prefix of the first prefix `extra_references` entry (`import-<date>` without one), and
//! `add_digest` adds `<prefix>@<digest>`.
//!
//! A broken archive (truncated, not OCI layout, a blob that does not match its digest) is
//! InvalidArgument naming the problem; the ingest in progress is aborted and the lease
//! deleted, so nothing is left behind.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use berth_proto::containerd::types::transfer::{
    Data, ImageImportStream, ImageStore as ApiImageStore, UnpackConfiguration, WindowUpdate,
};
use berth_transfer::archive::{clean_name, link_target};
use berth_transfer::manifest::{parse_index, parse_manifest, select_entries};
use berth_transfer::types::{is_index, is_manifest, rfc3339};
use berth_transfer::unpack::unpack_manifest;
use berth_transfer::{ContentStore, Cx, Descriptor, Image, Ingest, Platform};
use berth_wellknown::{label, media_type};
use prost::Message as _;
use prost_types::Any;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::{platform_from_api, save, ProgressSink, TransferService, TransferServiceError};
use crate::streaming::{type_name, ManagedStream, StreamError};

mod docker;

/// Type URL of `Data`.
pub const DATA_TYPE: &str = "containerd.types.transfer.Data";
/// Type URL of `WindowUpdate`.
pub const WINDOW_UPDATE_TYPE: &str = "containerd.types.transfer.WindowUpdate";
/// The credit granted whenever fewer bytes are outstanding (containerd's `windowSize`).
pub const WINDOW: i32 = 64 * 1024;

/// Media types an import stream may declare (empty: a tar).
const ARCHIVE_MEDIA_TYPES: &[&str] = &[
    "",
    "application/x-tar",
    media_type::OCI_LAYER,
    media_type::DOCKER_LAYER,
];
/// The largest `index.json` (or other non-blob file) read into memory.
const MAX_SMALL_FILE: u64 = 16 << 20;
/// The size of the chunks a blob goes to the content store in.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the stream, the tar reader and the content store.
const QUEUE: usize = 16;
/// The reader's error when the content side stopped first (whose error is then reported).
const CANCELLED: &str = "import cancelled";
/// How long the import lease lives if the daemon dies before deleting it.
const LEASE_EXPIRY_SECS: u64 = 24 * 3600;

/// What the tar reader found.
#[derive(Debug)]
enum Entry {
    Layout(String),
    /// Docker's `manifest.json`.
    DockerManifest(Vec<u8>),
    Blob {
        name: String,
        digest: String,
        size: u64,
    },
    /// A regular file that is not an OCI blob: its digest is known at its end.
    File {
        name: String,
        size: u64,
    },
    /// A symbolic link and the archive path it leads to.
    Link {
        name: String,
        target: String,
    },
    Chunk(Vec<u8>),
    BlobEnd,
    Index(Vec<u8>),
}

/// A [`Read`] over the chunks the stream delivers (on the blocking thread).
struct ChunkReader {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Why the archive is refused.
fn bad(reason: impl Into<String>) -> TransferServiceError {
    TransferServiceError::Archive(reason.into())
}

/// The digest a `blobs/<alg>/<hex>` path names.
fn blob_digest(name: &str) -> Option<String> {
    let rest = name.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    let valid = alg == "sha256"
        && hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    valid.then(|| format!("{alg}:{hex}"))
}

/// Reads the tar (blocking), passing what matters to `out`.
fn read_tar(reader: impl Read, out: &mpsc::Sender<Entry>) -> Result<(), TransferServiceError> {
    let send = |e: Entry| out.blocking_send(e).map_err(|_| bad(CANCELLED));
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("cannot read the archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("cannot read an archive entry: {e}")))?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            let path = entry
                .path()
                .map_err(|e| bad(format!("archive entry name: {e}")))?;
            let name = clean_name(&path.to_string_lossy());
            if let Ok(Some(target)) = entry.link_name() {
                let target = link_target(&name, &target.to_string_lossy());
                send(Entry::Link { name, target })?;
            }
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| bad(format!("archive entry name: {e}")))?;
        let name = clean_name(&path.to_string_lossy());
        let size = entry.size();
        let read_small = |entry: &mut tar::Entry<'_, _>| -> Result<Vec<u8>, TransferServiceError> {
            if size > MAX_SMALL_FILE {
                return Err(bad(format!(
                    "{name}: {size} bytes is more than the {MAX_SMALL_FILE} allowed"
                )));
            }
            let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            entry
                .read_to_end(&mut data)
                .map_err(|e| bad(format!("{name}: truncated archive: {e}")))?;
            Ok(data)
        };
        match name.as_str() {
            "oci-layout" => {
                #[derive(serde::Deserialize)]
                struct Layout {
                    #[serde(rename = "imageLayoutVersion")]
                    version: String,
                }
                let data = read_small(&mut entry)?;
                let layout: Layout = serde_json::from_slice(&data)
                    .map_err(|e| bad(format!("oci-layout does not parse: {e}")))?;
                send(Entry::Layout(layout.version))?;
            }
            "manifest.json" => send(Entry::DockerManifest(read_small(&mut entry)?))?,
            "index.json" => send(Entry::Index(read_small(&mut entry)?))?,
            _ => {
                match blob_digest(&name) {
                    Some(digest) => send(Entry::Blob {
                        name: name.clone(),
                        digest,
                        size,
                    })?,
                    None => send(Entry::File {
                        name: name.clone(),
                        size,
                    })?,
                }
                let mut left = size;
                while left > 0 {
                    let n = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
                    let mut chunk = vec![0; n];
                    entry.read_exact(&mut chunk).map_err(|e| {
                        bad(format!(
                            "{name}: truncated archive ({} of {size} bytes): {e}",
                            size - left
                        ))
                    })?;
                    left -= n as u64;
                    send(Entry::Chunk(chunk))?;
                }
                send(Entry::BlobEnd)?;
            }
        }
    }
    Ok(())
}

/// Receives the client's `Data` into `tx`, granting window credits (containerd's
/// `ReceiveStream`). Ends at the end of the client's stream.
async fn receive(
    stream: &ManagedStream,
    tx: mpsc::Sender<Vec<u8>>,
) -> Result<(), TransferServiceError> {
    let mut window: i32 = 0;
    loop {
        if window < WINDOW {
            let update = WindowUpdate { update: WINDOW };
            let msg = Any {
                type_url: WINDOW_UPDATE_TYPE.to_owned(),
                value: update.encode_to_vec(),
            };
            // The client may have ended already: what it sent is still read.
            if stream.send(msg).await.is_ok() {
                window += WINDOW;
            }
        }
        let msg = match stream.recv().await {
            Ok(msg) => msg,
            Err(StreamError::Closed(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if type_name(&msg.type_url) != DATA_TYPE {
            tracing::warn!(type_url = %msg.type_url, "ignoring an unknown object on the import stream");
            continue;
        }
        let data = Data::decode(msg.value.as_slice())
            .map_err(|e| bad(format!("Data does not decode: {e}")))?;
        window = window.saturating_sub(i32::try_from(data.data.len()).unwrap_or(i32::MAX));
        if tx.send(data.data).await.is_err() {
            // The reader stopped; its error is the one reported.
            return Ok(());
        }
    }
}

/// What the archive held.
#[derive(Debug, Default)]
struct Ingested {
    layout: Option<String>,
    /// Docker's `manifest.json`.
    docker: Option<Vec<u8>>,
    index: Option<Descriptor>,
    /// The regular files that are not OCI blobs, and the links.
    files: docker::Files,
}

impl TransferService {
    /// ImageImportStream → ImageStore.
    pub(super) async fn import(
        &self,
        ns: &str,
        source: ImageImportStream,
        store: ApiImageStore,
        progress: &std::sync::Arc<ProgressSink>,
    ) -> Result<(), TransferServiceError> {
        if source.stream.is_empty() {
            return Err(TransferServiceError::Missing("source.stream"));
        }
        let stream = self.streams.get(ns, &source.stream)?;
        // However the import ends, the stream ends with it (the client stops sending).
        let result = self.import_on(ns, &stream, source, store, progress).await;
        stream.close();
        result
    }

    async fn import_on(
        &self,
        ns: &str,
        stream: &ManagedStream,
        source: ImageImportStream,
        store: ApiImageStore,
        progress: &std::sync::Arc<ProgressSink>,
    ) -> Result<(), TransferServiceError> {
        if !ARCHIVE_MEDIA_TYPES.contains(&source.media_type.as_str()) {
            return Err(TransferServiceError::Invalid {
                field: "source.media_type",
                reason: format!(
                    "unsupported archive media type {:?} (supported: an uncompressed tar, {:?})",
                    source.media_type,
                    &ARCHIVE_MEDIA_TYPES[1..]
                ),
            });
        }
        for u in &store.unpacks {
            self.unpack_snapshotter(u)?;
        }
        for extra in &store.extra_references {
            if !extra.is_prefix && !extra.add_digest {
                continue;
            }
            if extra.name.is_empty() {
                return Err(TransferServiceError::Missing(
                    "destination.extra_references.name",
                ));
            }
        }
        let local = self.stores(super::DEFAULT_SNAPSHOTTER);
        let stores = local.stores(ns);
        let base = Cx::new(ns);
        let lease = format!("berth-import-{}", uuid::Uuid::new_v4().simple());
        let expire = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            + LEASE_EXPIRY_SECS;
        let lease_labels = BTreeMap::from([(label::GC_EXPIRE.to_owned(), rfc3339(expire))]);
        let store_err = |op: &'static str, target: &str, e| TransferServiceError::Transfer {
            op: "import",
            reference: source.stream.clone(),
            cause: berth_transfer::TransferError::store(op, target, e),
        };
        stores
            .leases
            .create(&base, &lease, &lease_labels)
            .await
            .map_err(|e| store_err("create lease", &lease, e))?;
        let cx = base.with_lease(&lease);
        progress.event("Importing from stream", &source.stream);
        let result = self.import_leased(ns, &cx, stream, &store, progress).await;
        if let Err(e) = stores.leases.delete(&base, &lease).await {
            tracing::warn!(lease, "cannot delete import lease: {e}");
        }
        result
    }

    async fn import_leased(
        &self,
        ns: &str,
        cx: &Cx,
        stream: &ManagedStream,
        store: &ApiImageStore,
        progress: &std::sync::Arc<ProgressSink>,
    ) -> Result<(), TransferServiceError> {
        let (data_tx, data_rx) = mpsc::channel(QUEUE);
        let (entry_tx, entry_rx) = mpsc::channel(QUEUE);
        let reader = tokio::task::spawn_blocking(move || {
            let reader = ChunkReader {
                rx: data_rx,
                buf: Vec::new(),
                pos: 0,
            };
            read_tar(reader, &entry_tx)
        });
        let (received, ingested) =
            tokio::join!(receive(stream, data_tx), self.ingest(ns, cx, entry_rx));
        let read = reader
            .await
            .unwrap_or_else(|e| Err(bad(format!("archive reader failed: {e}"))));
        // The reader's error explains the others (a stopped ingest, a stopped stream), unless
        // it stopped because the content side had failed.
        if let Err(e) = &received {
            tracing::warn!(error = %e, "import stream failed");
        }
        let ingested = match (read, ingested) {
            (Err(TransferServiceError::Archive(m)), Err(e)) if m == CANCELLED => return Err(e),
            (Err(e), _) | (Ok(()), Err(e)) => return Err(e),
            (Ok(()), Ok(ingested)) => ingested,
        };
        received?;
        match ingested.layout.as_deref() {
            Some("1.0.0") => {}
            Some(other) => return Err(bad(format!("unsupported OCI layout version {other:?}"))),
            None => {
                let Some(manifest) = &ingested.docker else {
                    return Err(bad("unrecognized image format: no oci-layout file"));
                };
                let local = self.stores(super::DEFAULT_SNAPSHOTTER);
                let content = local.stores(ns).content;
                let index = docker::write_index(content, cx, manifest, &ingested.files).await?;
                return self.record(ns, cx, &index, store, progress).await;
            }
        }
        let index = ingested
            .index
            .ok_or_else(|| bad("missing index.json in the OCI layout"))?;
        self.record(ns, cx, &index, store, progress).await
    }

    /// Writes the blobs and `index.json` the reader finds into the content store.
    async fn ingest(
        &self,
        ns: &str,
        cx: &Cx,
        mut rx: mpsc::Receiver<Entry>,
    ) -> Result<Ingested, TransferServiceError> {
        let local = self.stores(super::DEFAULT_SNAPSHOTTER);
        let content = &local.stores(ns).content;
        let mut found = Ingested::default();
        let mut open: Option<OpenBlob> = None;
        let mut file: Option<docker::FileIngest> = None;
        let result = async {
            while let Some(entry) = rx.recv().await {
                match entry {
                    Entry::Layout(v) => found.layout = Some(v),
                    Entry::DockerManifest(m) => found.docker = Some(m),
                    Entry::Link { name, target } => {
                        found.files.links.insert(name, target);
                    }
                    Entry::File { name, size } => {
                        file = Some(
                            docker::FileIngest::open(
                                &self.content,
                                ns,
                                cx.lease.as_deref(),
                                name,
                                size,
                            )
                            .await?,
                        );
                    }
                    Entry::Blob { name, digest, size } => {
                        let reference = format!("import-{digest}");
                        let desc = Descriptor::new("application/octet-stream", &digest, size);
                        let mut blob = OpenBlob {
                            reference,
                            writer: None,
                            has_all: false,
                        };
                        match content.writer(cx, &blob.reference, &desc).await {
                            Ok(Ingest::Present) => {}
                            Ok(Ingest::Writer(mut w)) => {
                                // Every byte is there already (a complete ingest, or bytes
                                // this namespace does not record yet, claimed): only the
                                // commit, which records the blob here, is left.
                                blob.has_all = w.offset() == size;
                                if !blob.has_all && w.offset() > 0 {
                                    w.truncate().await.map_err(|e| store_err(&name, e))?;
                                }
                                blob.writer = Some(w);
                            }
                            Err(e) if e.is_already_exists() => {}
                            Err(e) => return Err(store_err(&name, e)),
                        }
                        open = Some(blob);
                    }
                    Entry::Chunk(data) if file.is_some() => {
                        if let Some(f) = file.as_mut() {
                            f.write(data).await?;
                        }
                    }
                    Entry::BlobEnd if file.is_some() => {
                        if let Some(f) = file.take() {
                            let (name, stored) = f.commit().await?;
                            found.files.stored.insert(name, stored);
                        }
                    }
                    Entry::Chunk(data) => {
                        if let Some(blob) = open.as_mut().filter(|b| !b.has_all) {
                            if let Some(w) = blob.writer.as_mut() {
                                match w.write(&data).await {
                                    Ok(()) => {}
                                    // The bytes are there (committed meanwhile, or claimed):
                                    // nothing more to write, the commit records the blob.
                                    Err(e) if e.is_already_exists() => blob.has_all = true,
                                    Err(e) => return Err(store_err(&blob.reference, e)),
                                }
                            }
                        }
                    }
                    Entry::BlobEnd => {
                        if let Some(OpenBlob {
                            reference,
                            writer: Some(w),
                            ..
                        }) = open.take()
                        {
                            match w.commit(BTreeMap::new()).await {
                                Err(e) if !e.is_already_exists() => {
                                    return Err(bad(format!("{reference}: {e}")))
                                }
                                _ => {}
                            }
                        }
                    }
                    Entry::Index(data) => {
                        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
                        let desc =
                            Descriptor::new(media_type::OCI_INDEX, &digest, data.len() as u64);
                        put_bytes(*content, cx, &format!("import-{digest}"), &desc, &data)
                            .await
                            .map_err(|e| store_err("index.json", e))?;
                        found.index = Some(desc);
                    }
                }
            }
            Ok(())
        }
        .await;
        // Stop the reader before waiting for anything else.
        drop(rx);
        let unfinished = match (open.take(), file.take()) {
            (
                Some(OpenBlob {
                    reference,
                    writer: Some(w),
                    ..
                }),
                _,
            ) => {
                drop(w);
                Some(reference)
            }
            (_, Some(f)) => Some(f.reference()),
            _ => None,
        };
        if let Some(reference) = unfinished {
            let content = self.content.clone();
            let ns = ns.to_owned();
            let reference2 = reference.clone();
            let aborted = crate::blocking::run(move || content.abort(&ns, &reference2)).await;
            if let Ok(Err(e)) = aborted {
                tracing::warn!(reference, "cannot abort the import ingest: {e}");
            }
        }
        result.map(|()| found)
    }

    /// Walks the index (GC labels on every parent) and records the images it names.
    async fn record(
        &self,
        ns: &str,
        cx: &Cx,
        index: &Descriptor,
        store: &ApiImageStore,
        progress: &std::sync::Arc<ProgressSink>,
    ) -> Result<(), TransferServiceError> {
        let local = self.stores(super::DEFAULT_SNAPSHOTTER);
        let stores = local.stores(ns);
        let content = stores.content;
        let platform = store.platforms.first().map(platform_from_api);
        let read = |d: Descriptor| async move {
            content
                .read(cx, &d.digest)
                .await
                .map_err(|e| bad(format!("{}: {e}", d.digest)))
        };
        let root = parse_index(&read(index.clone()).await?, &index.digest)
            .map_err(|e| bad(format!("index.json: {e}")))?;
        let mut images: Vec<Image> = Vec::new();
        let labels: BTreeMap<String, String> = store.labels.clone().into_iter().collect();
        let image = |name: String, target: &Descriptor| Image {
            name,
            target: target.clone(),
            labels: labels.clone(),
        };
        if !store.name.is_empty() {
            images.push(image(store.name.clone(), index));
        }
        let prefix_ref = store.extra_references.iter().find(|r| r.is_prefix);
        let prefix = match prefix_ref {
            Some(r) => r.name.clone(),
            None => {
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                format!("import-{}", &rfc3339(secs)[..10])
            }
        };
        for m in &root.manifests {
            let name = berth_transfer::archive::image_name(&m.annotations, &prefix, false);
            if let Some(name) = &name {
                images.push(image(name.clone(), m));
            }
            for extra in store.extra_references.iter().filter(|r| r.add_digest) {
                let base = if extra.is_prefix {
                    &extra.name
                } else {
                    &prefix
                };
                images.push(image(format!("{base}@{}", m.digest), m));
            }
        }
        if images.is_empty() {
            return Err(bad("the archive's index names no image"));
        }

        // Label every parent with its children, keeping the wanted platform; the image
        // manifests kept, with their platforms, are the ones an unpack may choose.
        let mut manifests: Vec<Descriptor> = Vec::new();
        let mut stack = vec![index.clone()];
        let mut seen = BTreeSet::new();
        while let Some(desc) = stack.pop() {
            if !seen.insert(desc.digest.clone()) {
                continue;
            }
            let mut labels = BTreeMap::new();
            let children: Vec<Descriptor> =
                if desc.digest == index.digest || is_index(&desc.media_type) {
                    let idx = if desc.digest == index.digest {
                        root.clone()
                    } else {
                        parse_index(&read(desc.clone()).await?, &desc.digest)
                            .map_err(|e| bad(format!("{}: {e}", desc.digest)))?
                    };
                    let kept: Vec<Descriptor> = select_entries(&idx, platform.as_ref())
                        .into_iter()
                        .cloned()
                        .collect();
                    manifests.extend(kept.iter().filter(|c| is_manifest(&c.media_type)).cloned());
                    for (i, c) in kept.iter().enumerate() {
                        labels.insert(
                            format!("{}{i}", label::GC_REF_CONTENT_MANIFEST),
                            c.digest.clone(),
                        );
                    }
                    kept
                } else if is_manifest(&desc.media_type) {
                    let m = parse_manifest(&read(desc.clone()).await?, &desc.digest)
                        .map_err(|e| bad(format!("{}: {e}", desc.digest)))?;
                    labels.insert(
                        label::GC_REF_CONTENT_CONFIG.to_owned(),
                        m.config.digest.clone(),
                    );
                    for (i, l) in m.layers.iter().enumerate() {
                        labels.insert(
                            format!("{}{i}", label::GC_REF_CONTENT_LAYER),
                            l.digest.clone(),
                        );
                    }
                    let mut all = vec![m.config];
                    all.extend(m.layers);
                    all
                } else {
                    Vec::new()
                };
            for c in &children {
                match content.info(cx, &c.digest).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Err(bad(format!(
                            "{} (a child of {}) is not in the archive",
                            c.digest, desc.digest
                        )))
                    }
                    Err(e) => return Err(bad(format!("{}: {e}", c.digest))),
                }
            }
            if !labels.is_empty() {
                content
                    .update_labels(cx, &desc.digest, &labels)
                    .await
                    .map_err(|e| bad(format!("{}: {e}", desc.digest)))?;
            }
            stack.extend(children.into_iter().rev());
        }
        if seen.len() <= 1 {
            return Err(bad("no images for this platform in the archive"));
        }
        for u in &store.unpacks {
            self.unpack(ns, cx, u, &manifests, progress).await?;
        }
        for record in &images {
            save(stores.images, ns, record, true)
                .await
                .map_err(|cause| TransferServiceError::Transfer {
                    op: "import",
                    reference: record.name.clone(),
                    cause,
                })?;
            progress.event("saved", &record.name);
        }
        tracing::info!(images = images.len(), index = %index.digest, "imported");
        Ok(())
    }
    /// Unpacks each of `manifests` for the platform of `u` (the host's when it names none)
    /// into its snapshotter, as containerd's import unpacks the images it records for each
    /// `unpacks` entry; InvalidArgument when the archive has none for that platform.
    async fn unpack(
        &self,
        ns: &str,
        cx: &Cx,
        u: &UnpackConfiguration,
        manifests: &[Descriptor],
        progress: &std::sync::Arc<ProgressSink>,
    ) -> Result<(), TransferServiceError> {
        let snapshotter = self.unpack_snapshotter(u)?;
        let want = u
            .platform
            .as_ref()
            .map_or_else(Platform::host, platform_from_api);
        let mut chosen: Vec<&Descriptor> = manifests
            .iter()
            .filter(|m| m.platform.as_ref().is_none_or(|p| want.matches(p)))
            .collect();
        chosen.sort_by(|a, b| a.digest.cmp(&b.digest));
        chosen.dedup_by(|a, b| a.digest == b.digest);
        if chosen.is_empty() {
            return Err(bad(format!(
                "no image for platform {want} in the archive to unpack"
            )));
        }
        let local = self.stores(&snapshotter);
        for manifest in chosen {
            unpack_manifest(local.stores(ns), cx, manifest, &**progress)
                .await
                .map_err(|cause| TransferServiceError::Transfer {
                    op: "unpack",
                    reference: manifest.digest.clone(),
                    cause,
                })?;
            tracing::info!(manifest = %manifest.digest, snapshotter, "unpacked");
        }
        Ok(())
    }
}

/// The blob an import is writing.
struct OpenBlob {
    /// Its ingest reference.
    reference: String,
    /// `None` when the namespace records the blob already.
    writer: Option<Box<dyn berth_transfer::ContentWriter>>,
    /// The writer holds every byte: the archive's are skipped and the commit records it.
    has_all: bool,
}

/// Stores `data` as `desc` through the ingest `reference` unless the namespace has it: a
/// writer that holds every byte already (a complete ingest, or bytes claimed from the store)
/// is only committed, which records the blob here.
async fn put_bytes(
    content: &dyn ContentStore,
    cx: &Cx,
    reference: &str,
    desc: &Descriptor,
    data: &[u8],
) -> Result<(), berth_transfer::StoreError> {
    let mut w = match content.writer(cx, reference, desc).await {
        Ok(Ingest::Writer(w)) => w,
        Ok(Ingest::Present) => return Ok(()),
        Err(e) if e.is_already_exists() => return Ok(()),
        Err(e) => return Err(e),
    };
    if w.offset() != data.len() as u64 {
        if w.offset() > 0 {
            w.truncate().await?;
        }
        match w.write(data).await {
            // The bytes are there (claimed): the commit records them.
            Err(e) if e.is_already_exists() => {}
            written => written?,
        }
    }
    match w.commit(BTreeMap::new()).await {
        Err(e) if e.is_already_exists() => Ok(()),
        committed => committed,
    }
}

/// A content store failure on `target` during an import.
fn store_err(target: &str, e: berth_transfer::StoreError) -> TransferServiceError {
    TransferServiceError::Transfer {
        op: "import",
        reference: target.to_owned(),
        cause: berth_transfer::TransferError::store("write", target, e),
    }
}

#[cfg(test)]
mod tests {
    use berth_registry::Classify as _;

    use super::*;

    #[test]
    fn blob_paths_name_digests() {
        let hex = "a".repeat(64);
        assert_eq!(
            blob_digest(&format!("blobs/sha256/{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(blob_digest("blobs/sha256/xyz"), None);
        assert_eq!(blob_digest("index.json"), None);
    }

    #[test]
    fn a_truncated_tar_names_the_entry() {
        let mut b = tar::Builder::new(Vec::new());
        let hex = "b".repeat(64);
        let data = vec![7u8; 10_000];
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("blobs/sha256/{hex}"), &data[..])
            .unwrap();
        let bytes = b.into_inner().unwrap();
        let (tx, mut rx) = mpsc::channel(1024);
        let err = read_tar(&bytes[..3000], &tx).unwrap_err();
        assert_eq!(err.kind(), berth_registry::ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("truncated archive"), "{err}");
        assert!(err.to_string().contains(&hex), "{err}");
        assert!(matches!(rx.try_recv(), Ok(Entry::Blob { .. })));
    }
}
