//! The index of a Docker archive (`docker save`), as containerd's `archive.ImportIndex` makes
//! it when the archive has `manifest.json` and no `oci-layout`: for each image a Docker
//! schema 2 manifest (its config, and its layer tars typed by their first bytes: gzip or zstd
//! is `tar.gzip`, else `tar`), with the platform of its config; one index entry per `RepoTags`
//! name (normalized, `io.containerd.image.name` and `org.opencontainers.image.ref.name`), or an
//! unnamed entry without tags. Manifests and the index are JSON as Go writes it, so the
//! digests are containerd's for the same archive.

use std::collections::{BTreeMap, HashMap};
use std::io::SeekFrom;

use anyhow::{bail, Context as _, Result};
use berth_transfer::archive::{
    normalize_docker_name, oci_ref_name, parse_docker_manifest, DOCKER_MANIFEST_LIMIT, IMAGE_NAME,
    REF_NAME,
};
use berth_wellknown::media_type;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::archive::{Scan, TarFile};
use crate::client::content::{self, WriteSpec};
use crate::client::Client;
use crate::oci::{Descriptor, ImageConfig, Index, Manifest, Platform};

/// Writes the manifests and the index of the Docker archive whose `manifest.json` is
/// `manifest`, every file of which is in the content store already (`digests`: archive path
/// → digest); returns the index.
pub async fn index(
    client: &Client,
    file: &mut tokio::fs::File,
    scan: &Scan,
    digests: &HashMap<String, String>,
    manifest: &TarFile,
) -> Result<Descriptor> {
    if manifest.size > DOCKER_MANIFEST_LIMIT {
        bail!(
            "manifest.json is {} bytes, more than {DOCKER_MANIFEST_LIMIT}",
            manifest.size
        );
    }
    let images = parse_docker_manifest(&read_at(file, manifest, manifest.size).await?)
        .map_err(anyhow::Error::msg)?;
    let blob = |path: &str, what: &str| -> Result<(&TarFile, Descriptor)> {
        let f = scan
            .file(path)
            .with_context(|| format!("{what} {path:?} not found"))?;
        Ok((
            f,
            Descriptor {
                digest: digests[&f.name].clone(),
                size: i64::try_from(f.size)?,
                ..Default::default()
            },
        ))
    };
    let mut index = Index {
        schema_version: 2,
        ..Default::default()
    };
    for image in images {
        let (config_file, mut config) = blob(&image.config, "image config")?;
        config.media_type = media_type::DOCKER_CONFIG.to_owned();
        let mut layers = Vec::with_capacity(image.layers.len());
        for path in &image.layers {
            let (f, mut layer) = blob(path, "layer")?;
            let head = read_at(file, f, 4).await?;
            let compressed = head.starts_with(&[0x1f, 0x8b]) || head == [0x28, 0xb5, 0x2f, 0xfd];
            layer.media_type = if compressed {
                media_type::DOCKER_LAYER_GZIP
            } else {
                media_type::DOCKER_LAYER
            }
            .to_owned();
            layers.push(layer);
        }
        let image_config: ImageConfig =
            serde_json::from_slice(&read_at(file, config_file, config_file.size).await?)
                .with_context(|| format!("image config {:?}", image.config))?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: media_type::DOCKER_MANIFEST.to_owned(),
            config,
            layers,
        };
        let mut desc = write_json(client, &manifest, media_type::DOCKER_MANIFEST).await?;
        // containerd 1.6's `images.Platforms` of a manifest: its config's OS and architecture.
        let normal = berth_transfer::Platform {
            os: image_config.os,
            architecture: image_config.architecture,
            variant: String::new(),
        }
        .normalized();
        desc.platform = Some(Platform {
            os: normal.os,
            architecture: normal.architecture,
            ..Default::default()
        });
        match image.repo_tags.filter(|t| !t.is_empty()) {
            None => index.manifests.push(desc),
            Some(tags) => {
                for tag in tags {
                    let name = normalize_docker_name(&tag).map_err(anyhow::Error::msg)?;
                    let mut named = desc.clone();
                    named.annotations = BTreeMap::from([
                        (IMAGE_NAME.to_owned(), name.clone()),
                        (REF_NAME.to_owned(), oci_ref_name(&name)),
                    ]);
                    index.manifests.push(named);
                }
            }
        }
    }
    write_json(client, &index, media_type::OCI_INDEX).await
}

/// The first `len` bytes of the archive's file `f`.
async fn read_at(file: &mut tokio::fs::File, f: &TarFile, len: u64) -> Result<Vec<u8>> {
    file.seek(SeekFrom::Start(f.offset)).await?;
    let mut out = Vec::new();
    (&mut *file)
        .take(len.min(f.size))
        .read_to_end(&mut out)
        .await
        .with_context(|| format!("read {:?} from the archive", f.name))?;
    Ok(out)
}

/// Writes `value` as Go's `json.Marshal` would (compact) under `manifest-<digest>`.
async fn write_json<T: serde::Serialize>(
    client: &Client,
    value: &T,
    media_type: &str,
) -> Result<Descriptor> {
    let bytes = serde_json::to_vec(value)?;
    let digest = berth_transfer::types::sha256_digest(&bytes);
    let spec = WriteSpec {
        reference: format!("manifest-{digest}"),
        total: i64::try_from(bytes.len())?,
        expected: digest.clone(),
        ..Default::default()
    };
    content::write_blob(client, &spec, &bytes[..]).await?;
    Ok(Descriptor {
        media_type: media_type.to_owned(),
        digest,
        size: i64::try_from(bytes.len())?,
        ..Default::default()
    })
}
