//! `ImageStore` → `ImageExportStream` (containerd 1.7 `pkg/transfer/archive` export and
//! `pkg/transfer/local/export.go`): the image named by the `ImageStore` is written as an OCI
//! layout tar (`oci-layout`, `blobs/<alg>/<hex>`, `index.json`, and a Docker `manifest.json`
//! unless `skip_compatibility_manifest`) to the client's Streaming stream as `Data` messages
//! of at most 32 KiB, within the `WindowUpdate` credit the client grants (containerd's
//! `SendStream`); the stream is closed at the end. The tar is written on a blocking thread
//! reading the blobs from the content store's files.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;

use berth_proto::containerd::types::transfer::{
    Data, ImageExportStream, ImageStore as ApiImageStore, WindowUpdate,
};
use berth_transfer::archive::{IMAGE_NAME, REF_NAME};
use berth_transfer::manifest::{parse_index, parse_manifest, select_entries};
use berth_transfer::types::{is_index, is_manifest};
use berth_transfer::{Cx, Descriptor};
use berth_wellknown::media_type;
use prost::Message as _;
use prost_types::Any;
use tokio::sync::mpsc;

use super::import::{DATA_TYPE, WINDOW_UPDATE_TYPE};
use super::{platform_from_api, ProgressSink, TransferService, TransferServiceError};
use crate::streaming::{type_name, ManagedStream};

/// The largest `Data` message (containerd's `maxRead`).
const MAX_DATA: usize = 32 * 1024;
/// Chunks of tar in flight between the writer thread and the stream.
const QUEUE: usize = 16;

fn failed(reason: impl Into<String>) -> TransferServiceError {
    TransferServiceError::Export(reason.into())
}

/// A [`Write`] sending what is written as chunks to the async side.
struct ChunkWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn flush_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(MAX_DATA));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stream closed"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(MAX_DATA - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_DATA {
            self.flush_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_buf()
    }
}

/// Sends the chunks as `Data` within the client's window (containerd's `SendStream`).
async fn send(
    stream: &ManagedStream,
    mut rx: mpsc::Receiver<Vec<u8>>,
) -> Result<(), TransferServiceError> {
    let mut remaining: i64 = 0;
    while let Some(chunk) = rx.recv().await {
        while remaining < i64::try_from(chunk.len()).unwrap_or(i64::MAX) {
            let msg = stream.recv().await?;
            if type_name(&msg.type_url) != WINDOW_UPDATE_TYPE {
                tracing::warn!(type_url = %msg.type_url, "ignoring an unknown object on the export stream");
                continue;
            }
            let update = WindowUpdate::decode(msg.value.as_slice())
                .map_err(|e| failed(format!("WindowUpdate does not decode: {e}")))?;
            remaining += i64::from(update.update);
        }
        remaining -= i64::try_from(chunk.len()).unwrap_or(i64::MAX);
        let data = Data { data: chunk };
        stream
            .send(Any {
                type_url: DATA_TYPE.to_owned(),
                value: data.encode_to_vec(),
            })
            .await?;
    }
    Ok(())
}

/// Docker's `manifest.json` entry of one manifest.
#[derive(serde::Serialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn blob_path(digest: &str) -> String {
    digest.replacen(':', "/", 1)
}

impl TransferService {
    /// ImageStore → ImageExportStream.
    pub(super) async fn export(
        &self,
        ns: &str,
        store: ApiImageStore,
        dest: ImageExportStream,
        progress: &Arc<ProgressSink>,
    ) -> Result<(), TransferServiceError> {
        if dest.stream.is_empty() {
            return Err(TransferServiceError::Missing("destination.stream"));
        }
        let stream = self.streams.get(ns, &dest.stream)?;
        let result = self.export_on(ns, &stream, store, dest, progress).await;
        stream.close();
        result
    }

    async fn export_on(
        &self,
        ns: &str,
        stream: &ManagedStream,
        store: ApiImageStore,
        dest: ImageExportStream,
        progress: &Arc<ProgressSink>,
    ) -> Result<(), TransferServiceError> {
        if store.name.is_empty() {
            return Err(TransferServiceError::Missing("source.name"));
        }
        if !dest.media_type.is_empty()
            && dest.media_type != "application/x-tar"
            && dest.media_type != media_type::OCI_LAYER
        {
            return Err(TransferServiceError::Invalid {
                field: "destination.media_type",
                reason: format!("unsupported archive media type {:?}", dest.media_type),
            });
        }
        let local = self.stores(super::DEFAULT_SNAPSHOTTER);
        let stores = local.stores(ns);
        let cx = Cx::new(ns);
        let image = stores
            .images
            .get(&cx, &store.name)
            .await
            .map_err(|e| failed(format!("image {:?}: {e}", store.name)))?
            .ok_or_else(|| TransferServiceError::NotFound(format!("image {:?}", store.name)))?;
        let platform = if dest.all_platforms {
            None
        } else {
            dest.platforms
                .first()
                .map(platform_from_api)
                .or_else(|| Some(berth_transfer::Platform::host()))
        };
        // Every blob to write, and the Docker entries of the manifests.
        let mut blobs: Vec<Descriptor> = Vec::new();
        let mut docker: Vec<DockerEntry> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![image.target.clone()];
        while let Some(desc) = stack.pop() {
            if !seen.insert(desc.digest.clone()) {
                continue;
            }
            let read = || async {
                stores
                    .content
                    .read(&cx, &desc.digest)
                    .await
                    .map_err(|e| failed(format!("{}: {e}", desc.digest)))
            };
            if is_index(&desc.media_type) {
                let idx =
                    parse_index(&read().await?, &desc.digest).map_err(|e| failed(e.to_string()))?;
                stack.extend(
                    select_entries(&idx, platform.as_ref())
                        .into_iter()
                        .cloned()
                        .rev(),
                );
            } else if is_manifest(&desc.media_type) {
                let m = parse_manifest(&read().await?, &desc.digest)
                    .map_err(|e| failed(e.to_string()))?;
                let layers: Vec<Descriptor> = m
                    .layers
                    .into_iter()
                    .filter(|l| {
                        !(dest.skip_non_distributable && l.media_type.contains("nondistributable"))
                    })
                    .collect();
                docker.push(DockerEntry {
                    config: blob_path(&m.config.digest),
                    repo_tags: vec![image.name.clone()],
                    layers: layers.iter().map(|l| blob_path(&l.digest)).collect(),
                });
                stack.push(m.config);
                stack.extend(layers);
            }
            blobs.push(desc);
        }
        let mut entry = image.target.clone();
        entry
            .annotations
            .insert(IMAGE_NAME.to_owned(), image.name.clone());
        entry.annotations.insert(
            REF_NAME.to_owned(),
            image
                .name
                .rsplit_once(':')
                .filter(|(_, tag)| !tag.contains('/'))
                .map_or("latest", |(_, tag)| tag)
                .to_owned(),
        );
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "manifests": [entry],
        });
        let index = serde_json::to_vec(&index).map_err(|e| failed(e.to_string()))?;
        let manifest_json = if dest.skip_compatibility_manifest {
            None
        } else {
            Some(serde_json::to_vec(&docker).map_err(|e| failed(e.to_string()))?)
        };

        let (tx, rx) = mpsc::channel(QUEUE);
        let content = self.content.clone();
        let namespace = ns.to_owned();
        let writer = tokio::task::spawn_blocking(move || -> Result<(), TransferServiceError> {
            let out = ChunkWriter {
                tx,
                buf: Vec::with_capacity(MAX_DATA),
            };
            let mut tar = tar::Builder::new(out);
            let add = |tar: &mut tar::Builder<ChunkWriter>,
                       path: &str,
                       size: u64,
                       data: &mut dyn std::io::Read|
             -> Result<(), TransferServiceError> {
                let mut header = tar::Header::new_ustar();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o444);
                header.set_size(size);
                header.set_mtime(0);
                tar.append_data(&mut header, path, data)
                    .map_err(|e| failed(format!("{path}: {e}")))
            };
            let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
            add(
                &mut tar,
                "oci-layout",
                layout.len() as u64,
                &mut &layout[..],
            )?;
            for desc in &blobs {
                let (file, size) = content
                    .open(&namespace, &desc.digest)
                    .map_err(|e| failed(format!("{}: {e}", desc.digest)))?;
                add(
                    &mut tar,
                    &format!("blobs/{}", blob_path(&desc.digest)),
                    size,
                    &mut std::io::Read::take(file, size),
                )?;
            }
            add(&mut tar, "index.json", index.len() as u64, &mut &index[..])?;
            if let Some(m) = &manifest_json {
                add(&mut tar, "manifest.json", m.len() as u64, &mut &m[..])?;
            }
            let mut out = tar
                .into_inner()
                .map_err(|e| failed(format!("cannot finish the archive: {e}")))?;
            out.flush().map_err(|e| failed(e.to_string()))
        });
        let sent = send(stream, rx).await;
        let written = writer
            .await
            .unwrap_or_else(|e| Err(failed(format!("archive writer failed: {e}"))));
        sent?;
        written?;
        progress.event("exported", &image.name);
        tracing::info!(image = %image.name, "exported");
        Ok(())
    }
}
