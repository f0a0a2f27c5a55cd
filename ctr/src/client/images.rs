//! Reading images from the content store: children of a descriptor, the manifest for a
//! platform, the config's diff IDs, sizes and platforms (containerd `images/image.go`).

use std::collections::BTreeSet;

use anyhow::{bail, Context as _, Result};
use berth_proto::containerd::services::images::v1::{GetImageRequest, Image};
use serde::de::DeserializeOwned;
use tonic::Code;

use super::{content, Client};
use crate::error::{Object, RpcResultExt};
use crate::oci::{self, Descriptor, ImageConfig, Index, Manifest, Platform};

/// `Images.Get`.
pub async fn get(client: &Client, name: &str) -> Result<Image> {
    let resp = client
        .images()
        .get(client.req(GetImageRequest {
            name: name.to_owned(),
        }))
        .await
        .rpc(client, "get", Object::image(name))?;
    resp.into_inner()
        .image
        .with_context(|| format!("image {name:?}: empty reply from the daemon"))
}

/// The image's target as an OCI descriptor.
pub fn target(image: &Image) -> Descriptor {
    image
        .target
        .as_ref()
        .map(Descriptor::from)
        .unwrap_or_default()
}

/// Reads and parses a JSON blob.
pub async fn read_json<T: DeserializeOwned>(client: &Client, desc: &Descriptor) -> Result<T> {
    let data = content::read_blob(client, &desc.digest).await?;
    serde_json::from_slice(&data)
        .with_context(|| format!("cannot parse {} {} as JSON", desc.media_type, desc.digest))
}

/// Which children to follow below an index.
#[derive(Debug, Clone)]
pub enum PlatformFilter {
    All,
    Only(Platform),
}

impl PlatformFilter {
    /// Default: the host platform.
    pub fn host() -> Self {
        Self::Only(Platform::host())
    }

    fn keeps(&self, desc: &Descriptor) -> bool {
        match (self, &desc.platform) {
            (Self::All, _) | (_, None) => true,
            (Self::Only(p), Some(dp)) => p.matches(dp),
        }
    }
}

/// Children of `desc` (containerd `images.Children` + `FilterPlatforms`): manifests of an
/// index, config and layers of a manifest, nothing for anything else.
pub async fn children(
    client: &Client,
    desc: &Descriptor,
    filter: &PlatformFilter,
) -> Result<Vec<Descriptor>> {
    if oci::is_index(&desc.media_type) {
        let index: Index = read_json(client, desc).await?;
        Ok(index
            .manifests
            .into_iter()
            .filter(|m| filter.keeps(m))
            .collect())
    } else if oci::is_manifest(&desc.media_type) {
        let manifest: Manifest = read_json(client, desc).await?;
        let mut out = vec![manifest.config];
        out.extend(manifest.layers);
        Ok(out)
    } else {
        Ok(Vec::new())
    }
}

/// Every descriptor reachable from `root` (root first, depth first), following `filter`.
pub async fn walk(
    client: &Client,
    root: &Descriptor,
    filter: &PlatformFilter,
) -> Result<Vec<Descriptor>> {
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    let mut seen = BTreeSet::new();
    while let Some(desc) = stack.pop() {
        if !seen.insert(desc.digest.clone()) {
            continue;
        }
        let kids = children(client, &desc, filter).await?;
        out.push(desc);
        stack.extend(kids.into_iter().rev());
    }
    Ok(out)
}

/// The manifest for `platform` below `target` (containerd `images.Manifest`).
pub async fn manifest(
    client: &Client,
    target: &Descriptor,
    platform: &Platform,
) -> Result<(Descriptor, Manifest)> {
    let filter = PlatformFilter::Only(platform.clone());
    let mut queue = vec![target.clone()];
    while let Some(desc) = queue.pop() {
        if oci::is_manifest(&desc.media_type) {
            let manifest: Manifest = read_json(client, &desc).await?;
            if desc.platform.is_none() && !oci::is_manifest(&target.media_type) {
                // Unannotated manifest in an index: check its config's platform.
                let config: ImageConfig = read_json(client, &manifest.config).await?;
                let p = Platform {
                    os: config.os,
                    architecture: config.architecture,
                    variant: config.variant,
                    ..Default::default()
                };
                if !p.os.is_empty() && !platform.matches(&p) {
                    continue;
                }
            }
            return Ok((desc, manifest));
        }
        if oci::is_index(&desc.media_type) {
            let mut kids = children(client, &desc, &filter).await?;
            kids.reverse();
            queue.extend(kids);
        }
    }
    bail!(
        "no manifest for platform {} in {} (not found)",
        platform.format(),
        target.digest
    )
}

/// The layers of an image with their diff IDs, bottom first.
#[derive(Debug, Clone)]
pub struct RootFs {
    pub config: Descriptor,
    pub layers: Vec<(Descriptor, String)>,
}

impl RootFs {
    /// Diff IDs bottom first.
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|(_, d)| d.clone()).collect()
    }

    /// Chain ID of the top layer.
    pub fn chain_id(&self) -> Option<String> {
        oci::chain_id(&self.diff_ids())
    }
}

/// Manifest, config and the layer/diffID pairs of `target` for `platform`.
pub async fn rootfs(client: &Client, target: &Descriptor, platform: &Platform) -> Result<RootFs> {
    Ok(rootfs_and_config(client, target, platform).await?.0)
}

/// [`rootfs`] and the image config's bytes, read once for both.
pub async fn rootfs_and_config(
    client: &Client,
    target: &Descriptor,
    platform: &Platform,
) -> Result<(RootFs, Vec<u8>)> {
    let (_, manifest) = manifest(client, target, platform).await?;
    let desc = &manifest.config;
    let raw = content::read_blob(client, &desc.digest).await?;
    let config: ImageConfig = serde_json::from_slice(&raw)
        .with_context(|| format!("cannot parse {} {} as JSON", desc.media_type, desc.digest))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        bail!(
            "mismatched image rootfs and manifest layers: {} diff ids, {} layers",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        );
    }
    let rootfs = RootFs {
        config: manifest.config.clone(),
        layers: manifest
            .layers
            .into_iter()
            .zip(config.rootfs.diff_ids)
            .collect(),
    };
    Ok((rootfs, raw))
}

/// Sum of the sizes of every blob of the image for `filter` (containerd `Image.Size`).
pub async fn size(client: &Client, target: &Descriptor, filter: &PlatformFilter) -> Result<i64> {
    Ok(walk(client, target, filter)
        .await?
        .iter()
        .map(|d| d.size)
        .sum())
}

/// Platforms of the image (containerd `images.Platforms`), formatted and sorted.
pub async fn platforms(client: &Client, target: &Descriptor) -> Result<Vec<String>> {
    let mut out = BTreeSet::new();
    let mut queue = vec![target.clone()];
    while let Some(desc) = queue.pop() {
        if let Some(p) = &desc.platform {
            out.insert(p.format());
            continue;
        }
        if oci::is_index(&desc.media_type) {
            queue.extend(children(client, &desc, &PlatformFilter::All).await?);
        } else if oci::is_manifest(&desc.media_type) {
            let manifest: Manifest = read_json(client, &desc).await?;
            let config: ImageConfig = read_json(client, &manifest.config).await?;
            if !config.os.is_empty() {
                out.insert(
                    Platform {
                        os: config.os,
                        architecture: config.architecture,
                        variant: config.variant,
                        ..Default::default()
                    }
                    .format(),
                );
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Result of [`check`] (containerd `images.Check`).
#[derive(Debug, Default)]
pub struct Check {
    pub available: bool,
    pub required: Vec<Descriptor>,
    pub present: Vec<Descriptor>,
    pub missing: Vec<Descriptor>,
}

/// Which blobs of the image are in the content store.
pub async fn check(client: &Client, target: &Descriptor, platform: &Platform) -> Result<Check> {
    let (mdesc, manifest) = match manifest(client, target, platform).await {
        Ok(m) => m,
        Err(err) => {
            if crate::error::code_of(&err) == Some(Code::NotFound)
                || err.to_string().contains("not found")
            {
                return Ok(Check::default());
            }
            return Err(err);
        }
    };
    let mut required = vec![target.clone()];
    if mdesc.digest != target.digest {
        required.push(mdesc);
    }
    required.push(manifest.config.clone());
    required.extend(manifest.layers.iter().cloned());
    let mut result = Check {
        available: true,
        ..Default::default()
    };
    for desc in required {
        match content::info(client, &desc.digest).await {
            Ok(_) => result.present.push(desc.clone()),
            Err(err) if crate::error::code_of(&err) == Some(Code::NotFound) => {
                result.missing.push(desc.clone())
            }
            Err(err) => return Err(err),
        }
        result.required.push(desc);
    }
    Ok(result)
}
