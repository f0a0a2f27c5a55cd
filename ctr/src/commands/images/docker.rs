//! The index of a Docker archive (`docker save`), as containerd's `archive.ImportIndex` makes
//! it when the archive has `manifest.json` and no `oci-layout`: for each image a Docker
//! schema 2 manifest (its config, and its layer tars typed by their first bytes: gzip or zstd
//! is `tar.gzip`, else `tar`), with the platform of its config; one index entry per `RepoTags`
//! name (normalized, `io.containerd.image.name` and `org.opencontainers.image.ref.name`), or an
//! unnamed entry without tags. Manifests and the index are JSON as Go writes it, so the
//! digests are containerd's for the same archive.

use std::collections::HashMap;
use std::io::SeekFrom;

use anyhow::{bail, Context as _, Result};
use berth_transfer::archive::{
    docker_index_json, docker_manifest_json, is_compressed, parse_docker_manifest, DockerEntry,
    StoredFile, DOCKER_MANIFEST_LIMIT,
};
use berth_wellknown::media_type;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::archive::{Scan, TarFile};
use crate::client::content::{self, WriteSpec};
use crate::client::Client;
use crate::oci::{Descriptor, ImageConfig};

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
    let mut entries = Vec::with_capacity(images.len());
    for image in images {
        let stored = |path: &str, what: &str| -> Result<(TarFile, StoredFile)> {
            let f = scan
                .file(path)
                .with_context(|| format!("{what} {path:?} not found"))?;
            Ok((
                f.clone(),
                StoredFile {
                    digest: digests[&f.name].clone(),
                    size: f.size,
                    compressed: false,
                },
            ))
        };
        let (config_file, config) = stored(&image.config, "image config")?;
        let mut layers = Vec::with_capacity(image.layers.len());
        for path in &image.layers {
            let (f, mut layer) = stored(path, "layer")?;
            layer.compressed = is_compressed(&read_at(file, &f, 4).await?);
            layers.push(layer);
        }
        let image_config: ImageConfig =
            serde_json::from_slice(&read_at(file, &config_file, config_file.size).await?)
                .with_context(|| format!("image config {:?}", image.config))?;
        let desc = write_json(
            client,
            docker_manifest_json(&config, &layers),
            media_type::DOCKER_MANIFEST,
        )
        .await?;
        entries.push(DockerEntry {
            digest: desc.digest,
            size: u64::try_from(desc.size)?,
            os: image_config.os,
            architecture: image_config.architecture,
            repo_tags: image.repo_tags,
        });
    }
    let index = docker_index_json(&entries).map_err(anyhow::Error::msg)?;
    write_json(client, index, media_type::OCI_INDEX).await
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

/// Writes the JSON `bytes` under `manifest-<digest>`.
async fn write_json(client: &Client, bytes: Vec<u8>, media_type: &str) -> Result<Descriptor> {
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
