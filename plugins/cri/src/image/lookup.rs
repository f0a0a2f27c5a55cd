//! Finding a local image by any name the kubelet uses (tag, digest, image id) and reading its
//! config: what the sandbox and container code need to start from an image.
//!
//! The image records of namespace `k8s.io` are the truth: each call lists them, and records
//! whose config digest is the same are one image, as containerd's CRI image store groups them.
//! What a record's target resolves to (the host's platform chosen from an index, down to the
//! config) is read from the content store once per target digest and kept in
//! [`DescribedTargets`]: content is addressed by digest, so that never goes stale.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use berth_core::Image as ImageRecord;
use berth_filters::Filter;
use berth_transfer::manifest::{parse_index, parse_manifest, select_entries};
use berth_transfer::types::{chain_ids, is_index, is_manifest};
use berth_transfer::{ContentStore as _, Cx, Descriptor, Platform, TransferError};
use oci_spec::image::ImageConfiguration;

use super::reference::{id_prefix, is_image_id, sort_references, Named};
use crate::blocking::blocking;
use crate::error::{CriError, Result};
use crate::service::{Cri, K8S_NAMESPACE};

/// How deep nested indexes are followed.
const MAX_INDEX_DEPTH: usize = 4;

/// A local image, unpacked into the CRI snapshotter.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// The image id: its config's digest (`sha256:...`).
    pub id: String,
    /// Every image record naming it (`docker.io/library/busybox:1.36`,
    /// `docker.io/library/busybox@sha256:...`).
    pub references: Vec<String>,
    /// The OCI image config (env, entrypoint, cmd, user, working dir, volumes, stop signal).
    pub config: ImageConfiguration,
    /// The chain id of its top layer: the parent of a container's rootfs snapshot.
    pub chain_id: String,
    /// Its size in bytes (manifest, config and layers).
    pub size: u64,
    /// The target of its records (an index or a manifest): what a new record for it points at.
    pub target: Descriptor,
}

/// The local image `reference` names (a tag, a digest reference, an image id or its unique
/// prefix; a name without a tag is `:latest`); NotFound if there is none.
#[tracing::instrument(skip(cri))]
pub async fn local_image(cri: &Cri, reference: &str) -> Result<LocalImage> {
    let images = all_images(cri).await?;
    find(images, reference)
}

/// [`local_image`], pulling it first (registry resolution from `config_path`, no credentials)
/// when it is not there: how the pause image is found.
#[tracing::instrument(skip(cri))]
pub async fn ensure_image(cri: &Cri, reference: &str) -> Result<LocalImage> {
    match local_image(cri, reference).await {
        Err(CriError::NotFound { .. }) => {}
        found => return found,
    }
    tracing::info!(reference, "image not present, pulling it");
    let id = super::pull::pull_reference(cri, reference, "image", None).await?;
    local_image(cri, &id).await
}

/// Picks the image `reference` names out of `images` (containerd's `localResolve`).
pub(crate) fn find(images: Vec<LocalImage>, reference: &str) -> Result<LocalImage> {
    let not_found = || CriError::NotFound {
        what: "image",
        id: reference.to_owned(),
    };
    if is_image_id(reference) {
        return images
            .into_iter()
            .find(|i| i.id == reference)
            .ok_or_else(not_found);
    }
    if let Ok(named) = Named::parse(reference, "image") {
        let full = named.full();
        if let Some(pos) = images.iter().position(|i| i.references.contains(&full)) {
            return images.into_iter().nth(pos).ok_or_else(not_found);
        }
    }
    // Neither an id nor a known name: a unique prefix of an id.
    let Some(prefix) = id_prefix(reference) else {
        return Err(not_found());
    };
    let mut matching = images.into_iter().filter(|i| {
        i.id.strip_prefix("sha256:")
            .is_some_and(|hex| hex.starts_with(prefix))
    });
    let first = matching.next().ok_or_else(not_found)?;
    if matching.next().is_some() {
        return Err(CriError::invalid(
            "image.image",
            format!("image id prefix {reference:?} is ambiguous"),
        ));
    }
    Ok(first)
}

/// Every image of namespace `k8s.io`: records grouped by config digest. Records whose content
/// is missing or unreadable are left out (logged), as containerd's image store does.
pub(crate) async fn all_images(cri: &Cri) -> Result<Vec<LocalImage>> {
    let records = image_records(cri).await?;
    // One description per distinct target: most records of an image share it.
    let mut described: HashMap<String, Option<Arc<Described>>> = HashMap::new();
    let mut by_id: BTreeMap<String, LocalImage> = BTreeMap::new();
    for record in records {
        let target = descriptor(&record);
        if !described.contains_key(&target.digest) {
            let d = match cri.described.get(&target.digest) {
                Some(d) => Some(d),
                None => match describe(cri, &target).await {
                    Ok(d) => Some(cri.described.insert(&target.digest, d)),
                    Err(e) => {
                        tracing::debug!(name = %record.name, "image record left out: {e}");
                        None
                    }
                },
            };
            described.insert(target.digest.clone(), d);
        }
        let Some(Some(d)) = described.get(&target.digest) else {
            continue;
        };
        by_id
            .entry(d.id.clone())
            .and_modify(|i| i.references.push(record.name.clone()))
            .or_insert_with(|| LocalImage {
                id: d.id.clone(),
                references: vec![record.name.clone()],
                config: d.config.clone(),
                chain_id: d.chain_id.clone(),
                size: d.size,
                target: target.clone(),
            });
    }
    // Targets no record names any more are forgotten.
    let live: HashSet<&str> = described.keys().map(String::as_str).collect();
    cri.described.retain(&live);
    let mut images: Vec<LocalImage> = by_id.into_values().collect();
    for image in &mut images {
        sort_references(&mut image.references);
    }
    Ok(images)
}

/// The image records of namespace `k8s.io`.
pub(crate) async fn image_records(cri: &Cri) -> Result<Vec<ImageRecord>> {
    let meta = cri.meta.clone();
    blocking(move || {
        meta.list_images(K8S_NAMESPACE, &Filter::default())
            .map_err(|e| CriError::metadata("list images", e))
    })
    .await
}

/// The transfer descriptor of a record's target.
pub(crate) fn descriptor(record: &ImageRecord) -> Descriptor {
    Descriptor {
        annotations: record.target.annotations.clone(),
        ..Descriptor::new(
            &record.target.media_type,
            &record.target.digest,
            u64::try_from(record.target.size).unwrap_or(0),
        )
    }
}

/// What each record target (by digest) resolves to on this host, kept between calls so that
/// a lookup does not read every image's manifest and config again.
#[derive(Debug, Default)]
pub struct DescribedTargets(Mutex<HashMap<String, Arc<Described>>>);

impl DescribedTargets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Described>>> {
        // The map holds no invariant a panicking holder could break.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, digest: &str) -> Option<Arc<Described>> {
        self.lock().get(digest).cloned()
    }

    fn insert(&self, digest: &str, described: Described) -> Arc<Described> {
        let d = Arc::new(described);
        self.lock().insert(digest.to_owned(), d.clone());
        d
    }

    /// Keeps only the targets in `live`.
    fn retain(&self, live: &HashSet<&str>) {
        self.lock()
            .retain(|digest, _| live.contains(digest.as_str()));
    }
}

/// What one record target resolves to on this host.
#[derive(Debug, Clone)]
struct Described {
    id: String,
    config: ImageConfiguration,
    chain_id: String,
    size: u64,
}

/// Reads `target` (an index: the host's platform chosen) down to its config.
async fn describe(cri: &Cri, target: &Descriptor) -> Result<Described> {
    let cx = Cx::new(K8S_NAMESPACE);
    let read = |digest: String| {
        let cx = cx.clone();
        async move {
            cri.transfer
                .content
                .read(&cx, &digest)
                .await
                .map_err(|e| transfer(TransferError::store("read content", &digest, e)))
        }
    };
    let host = Platform::host();
    let mut size = 0u64;
    let mut desc = target.clone();
    for _ in 0..MAX_INDEX_DEPTH {
        if is_manifest(&desc.media_type) {
            break;
        }
        if !is_index(&desc.media_type) {
            return Err(transfer(TransferError::InvalidContent {
                what: "image target",
                digest: desc.digest.clone(),
                reason: format!("unsupported media type {:?}", desc.media_type),
            }));
        }
        let bytes = read(desc.digest.clone()).await?;
        size += desc.size;
        let index = parse_index(&bytes, &desc.digest).map_err(transfer)?;
        let next = select_entries(&index, Some(&host))
            .into_iter()
            .find(|d| is_manifest(&d.media_type))
            .or_else(|| select_entries(&index, Some(&host)).into_iter().next())
            .cloned()
            .ok_or_else(|| {
                transfer(TransferError::NoMatchingPlatform {
                    reference: target.digest.clone(),
                    platform: host.to_string(),
                })
            })?;
        desc = next;
    }
    let bytes = read(desc.digest.clone()).await?;
    let manifest = parse_manifest(&bytes, &desc.digest).map_err(transfer)?;
    size += desc.size + manifest.config.size;
    size += manifest.layers.iter().map(|l| l.size).sum::<u64>();
    let config_bytes = read(manifest.config.digest.clone()).await?;
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes).map_err(|e| {
        transfer(TransferError::InvalidContent {
            what: "config",
            digest: manifest.config.digest.clone(),
            reason: e.to_string(),
        })
    })?;
    let chain_id = chain_ids(config.rootfs().diff_ids())
        .pop()
        .unwrap_or_default();
    Ok(Described {
        id: manifest.config.digest.clone(),
        config,
        chain_id,
        size,
    })
}

fn transfer(source: TransferError) -> CriError {
    CriError::Transfer {
        op: "reading the image".to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: char, refs: &[&str]) -> LocalImage {
        let config: ImageConfiguration = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        LocalImage {
            id: format!("sha256:{}", id.to_string().repeat(64)),
            references: refs.iter().map(|s| s.to_string()).collect(),
            config,
            chain_id: String::new(),
            size: 1,
            target: Descriptor::default(),
        }
    }

    #[test]
    fn described_targets_forget_what_no_record_names() {
        let targets = DescribedTargets::default();
        let d = |id: &str| Described {
            id: id.to_owned(),
            config: image('a', &[]).config,
            chain_id: String::new(),
            size: 1,
        };
        targets.insert("sha256:1", d("one"));
        targets.insert("sha256:2", d("two"));
        assert_eq!(targets.get("sha256:1").unwrap().id, "one");
        targets.retain(&HashSet::from(["sha256:2"]));
        assert!(targets.get("sha256:1").is_none());
        assert_eq!(targets.get("sha256:2").unwrap().id, "two");
    }

    #[test]
    fn finds_by_tag_digest_id_and_prefix() {
        let d = format!("sha256:{}", "c".repeat(64));
        let images = || {
            vec![
                image(
                    'a',
                    &[
                        "docker.io/library/busybox:latest",
                        &format!("docker.io/library/busybox@{d}"),
                    ],
                ),
                image('b', &["127.0.0.1:5000/x/y:v1"]),
                image('e', &["docker.io/library/other:1"]),
            ]
        };
        let id_a = format!("sha256:{}", "a".repeat(64));
        assert_eq!(find(images(), "busybox").unwrap().id, id_a);
        assert_eq!(find(images(), &format!("busybox@{d}")).unwrap().id, id_a);
        assert_eq!(find(images(), &id_a).unwrap().id, id_a);
        assert_eq!(find(images(), "aaaa").unwrap().id, id_a);
        assert_eq!(find(images(), "sha256:bb").unwrap().id[7..8], *"b");
        assert!(matches!(
            find(images(), "busybox:2"),
            Err(CriError::NotFound { .. })
        ));
        assert!(matches!(
            find(images(), "127.0.0.1:5000/x/y"),
            Err(CriError::NotFound { .. })
        ));
        assert!(matches!(
            find(images(), &format!("sha256:{}", "f".repeat(64))),
            Err(CriError::NotFound { .. })
        ));
    }
}
