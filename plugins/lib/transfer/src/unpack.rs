//! Unpacking an image whose blobs are in the content store into a snapshotter, as containerd's
//! unpacker does: one snapshot per layer, named by its chain ID, then the config labelled with
//! the top snapshot (`containerd.io/gc.ref.snapshot.<snapshotter>`) so that GC keeps the
//! snapshots while the image is kept. A pull applies each layer as its download completes
//! ([`Unpacker::layer`]); an import, whose blobs are all in already, unpacks a whole manifest
//! ([`unpack_manifest`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use berth_wellknown::label;

use crate::error::TransferError;
use crate::manifest::{parse_config, parse_manifest, Manifest};
use crate::progress::Progress;
use crate::store::{Cx, Stores};
use crate::types::{chain_ids, Descriptor};

/// Unpacks layers into `stores.snapshots` under `cx` (which carries the transfer's lease).
pub struct Unpacker<'a> {
    /// The stores, in the transfer's namespace.
    pub stores: Stores<'a>,
    /// The namespace and lease every call is made with.
    pub cx: &'a Cx,
    /// Told of each unpacked layer.
    pub progress: &'a dyn Progress,
}

/// A manifest and its config, read and checked for unpacking.
#[derive(Debug)]
pub struct Unpackable {
    /// The manifest.
    pub manifest: Manifest,
    /// Its config's diff IDs, one per layer.
    pub diff_ids: Vec<String>,
    /// The chain IDs of the layers, bottom first.
    pub chain: Vec<String>,
}

impl fmt::Debug for Unpacker<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unpacker")
            .field("stores", &self.stores)
            .field("cx", &self.cx)
            .finish_non_exhaustive()
    }
}

impl Unpacker<'_> {
    /// Reads the manifest `desc` and its config from the content store (see [`Self::prepare`]).
    pub async fn read(&self, desc: &Descriptor) -> Result<Unpackable, TransferError> {
        let manifest = parse_manifest(&self.read_blob(&desc.digest).await?, &desc.digest)?;
        self.prepare(manifest).await
    }

    /// Reads `manifest`'s config from the content store and checks that they agree on the
    /// number of layers.
    pub async fn prepare(&self, manifest: Manifest) -> Result<Unpackable, TransferError> {
        let config = parse_config(
            &self.read_blob(&manifest.config.digest).await?,
            &manifest.config.digest,
        )?;
        if config.diff_ids.len() != manifest.layers.len() {
            return Err(TransferError::InvalidContent {
                what: "config",
                digest: manifest.config.digest.clone(),
                reason: format!(
                    "number of layers and diffIDs don't match: {} != {}",
                    manifest.layers.len(),
                    config.diff_ids.len()
                ),
            });
        }
        let chain = chain_ids(&config.diff_ids);
        Ok(Unpackable {
            manifest,
            diff_ids: config.diff_ids,
            chain,
        })
    }

    async fn read_blob(&self, digest: &str) -> Result<Vec<u8>, TransferError> {
        self.stores
            .content
            .read(self.cx, digest)
            .await
            .map_err(|e| TransferError::store("read content", digest, e))
    }

    /// Unpacks layer `i` of `image` onto layer `i - 1`'s snapshot (which must exist).
    pub async fn layer(&self, image: &Unpackable, i: usize) -> Result<(), TransferError> {
        let parent = if i == 0 {
            ""
        } else {
            image.chain[i - 1].as_str()
        };
        self.apply(
            &image.manifest.layers[i],
            &image.diff_ids[i],
            &image.chain[i],
            parent,
        )
        .await
    }

    /// Labels the config with the top snapshot, once every layer is unpacked.
    pub async fn finish(&self, image: &Unpackable) -> Result<(), TransferError> {
        let Some(top) = image.chain.last() else {
            return Ok(());
        };
        let key = format!(
            "{}.{}",
            label::GC_REF_SNAPSHOT,
            self.stores.snapshots.snapshotter()
        );
        let config = &image.manifest.config.digest;
        self.stores
            .content
            .update_labels(self.cx, config, &BTreeMap::from([(key, top.clone())]))
            .await
            .map_err(|e| TransferError::store("label content", config, e))
    }

    /// Unpacks one layer as containerd's unpacker does: skip when the chain ID snapshot
    /// exists; else Prepare `extract-<nanos>-<rand> <chainID>`, Apply, check the diffID,
    /// Commit as the chain ID and label the blob `containerd.io/uncompressed`.
    async fn apply(
        &self,
        layer: &Descriptor,
        diff_id: &str,
        chain_id: &str,
        parent: &str,
    ) -> Result<(), TransferError> {
        let sn = self.stores.snapshots;
        let cx = self.cx;
        let stat = |key: String| async move {
            sn.exists(cx, &key)
                .await
                .map_err(|e| TransferError::store("stat snapshot", key, e))
        };
        if stat(chain_id.to_owned()).await? {
            self.progress.on_unpacked(layer);
            return Ok(());
        }
        let mut labels: BTreeMap<String, String> = layer
            .annotations
            .iter()
            .filter(|(k, _)| k.starts_with(label::SNAPSHOT_INHERITED_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(label::SNAPSHOT_REF.to_owned(), chain_id.to_owned());

        let mut prepared = None;
        for _ in 0..3 {
            let key = format!("extract-{} {chain_id}", unique_part());
            match sn.prepare(cx, &key, parent, &labels).await {
                Ok(mounts) => {
                    prepared = Some((key, mounts));
                    break;
                }
                Err(e) if e.is_already_exists() => {
                    if stat(chain_id.to_owned()).await? {
                        // Someone else (another pull, or a shared snapshot) made it.
                        self.progress.on_unpacked(layer);
                        return Ok(());
                    }
                }
                Err(e) => return Err(TransferError::store("prepare snapshot", key, e)),
            }
        }
        let Some((key, mounts)) = prepared else {
            return Err(TransferError::ExtractionCollides {
                chain_id: chain_id.to_owned(),
            });
        };
        let abort = || async {
            if let Err(e) = sn.remove(cx, &key).await {
                tracing::warn!(key, "cannot remove extraction snapshot: {e}");
            }
        };

        let applied = match self.stores.applier.apply(cx, layer, &mounts).await {
            Ok(d) => d,
            Err(e) => {
                abort().await;
                return Err(TransferError::store("apply layer", &layer.digest, e));
            }
        };
        if applied.digest != diff_id {
            abort().await;
            return Err(TransferError::DiffIdMismatch {
                layer: layer.digest.clone(),
                got: applied.digest,
                expected: diff_id.to_owned(),
            });
        }
        match sn.commit(cx, chain_id, &key, &labels).await {
            Ok(()) => {}
            Err(e) if e.is_already_exists() => {
                abort().await;
                self.progress.on_unpacked(layer);
                return Ok(());
            }
            Err(e) => {
                abort().await;
                return Err(TransferError::store("commit snapshot", chain_id, e));
            }
        }
        self.stores
            .content
            .update_labels(
                cx,
                &layer.digest,
                &BTreeMap::from([(label::UNCOMPRESSED.to_owned(), diff_id.to_owned())]),
            )
            .await
            .map_err(|e| TransferError::store("label content", &layer.digest, e))?;
        self.progress.on_unpacked(layer);
        Ok(())
    }
}

/// Unpacks the image manifest `desc`, whose config and layers are in the content store, into
/// `stores.snapshots`: every layer bottom first, then the config's snapshot label.
pub async fn unpack_manifest(
    stores: Stores<'_>,
    cx: &Cx,
    desc: &Descriptor,
    progress: &dyn Progress,
) -> Result<(), TransferError> {
    let unpacker = Unpacker {
        stores,
        cx,
        progress,
    };
    let image = unpacker.read(desc).await?;
    for i in 0..image.manifest.layers.len() {
        unpacker.layer(&image, i).await?;
    }
    unpacker.finish(&image).await
}

/// `<nanos>-<random>`, the unique part of extraction keys (containerd's `uniquePart`).
fn unique_part() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let rand = uuid::Uuid::new_v4();
    format!("{nanos}-{}", hex::encode(&rand.as_bytes()[..4]))
}
