//! OCI image-spec types the CLI reads and writes, media types, platform matching and chain IDs.

use std::collections::{BTreeMap, HashMap};

use berth_proto::containerd::types;
use berth_wellknown::{label, media_type};
use serde::{Deserialize, Serialize};

/// True for image indexes (OCI index, Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    matches!(
        media_type,
        media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST
    )
}

/// True for image manifests.
pub fn is_manifest(media_type: &str) -> bool {
    matches!(
        media_type,
        media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST
    )
}

/// True for image configs.
pub fn is_config(media_type: &str) -> bool {
    matches!(
        media_type,
        media_type::OCI_CONFIG | media_type::DOCKER_CONFIG
    )
}

/// True for layer blobs (OCI or Docker, any compression, foreign or not).
pub fn is_layer(media_type: &str) -> bool {
    media_type.starts_with(media_type::OCI_LAYER_PREFIX)
        || media_type.starts_with(media_type::DOCKER_LAYER_PREFIX)
}

/// The GC label key prefix a parent uses for a child (containerd `images.ChildGCLabels`); a key
/// ending in `.` gets the child's index appended.
pub fn child_gc_label(media_type: &str) -> &'static str {
    if is_config(media_type) {
        label::GC_REF_CONTENT_CONFIG
    } else if is_manifest(media_type) {
        label::GC_REF_CONTENT_MANIFEST
    } else if is_layer(media_type) {
        label::GC_REF_CONTENT_LAYER
    } else {
        label::GC_REF_CONTENT_OTHER
    }
}

/// GC labels for `children` of one parent, numbered as containerd's `SetChildrenMappedLabels`.
pub fn children_gc_labels(children: &[Descriptor]) -> BTreeMap<String, String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut labels = BTreeMap::new();
    for child in children {
        let key = child_gc_label(&child.media_type);
        let idx = counts.entry(key).or_insert(0);
        let full = if *idx > 0 || key.ends_with('.') {
            format!("{key}{idx}")
        } else {
            key.to_owned()
        };
        *idx += 1;
        labels.insert(full, child.digest.clone());
    }
    labels
}

/// An OCI platform.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl Platform {
    /// The platform this binary runs on, in Go's names (`linux/amd64`, `linux/arm64/v8`).
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", ""),
            "aarch64" => ("arm64", "v8"),
            "x86" => ("386", ""),
            "arm" => ("arm", "v7"),
            "powerpc64" => ("ppc64le", ""),
            other => (other, ""),
        };
        Self {
            architecture: architecture.to_owned(),
            os: std::env::consts::OS.to_owned(),
            os_version: String::new(),
            variant: variant.to_owned(),
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('/');
        let os = parts.next().filter(|s| !s.is_empty())?;
        let arch = parts.next().unwrap_or(std::env::consts::ARCH);
        let variant = parts.next().unwrap_or("");
        Some(Self {
            os: os.to_owned(),
            architecture: arch.to_owned(),
            variant: variant.to_owned(),
            ..Default::default()
        })
    }

    /// Whether an image for `other` runs here: same os and architecture; a variant only
    /// matters when both name one.
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_empty()
                || other.variant.is_empty()
                || self.variant == other.variant)
    }

    /// `os/arch[/variant]`.
    pub fn format(&self) -> String {
        let mut s = format!("{}/{}", self.os, self.architecture);
        if !self.variant.is_empty() {
            s.push('/');
            s.push_str(&self.variant);
        }
        s
    }
}

/// An OCI content descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl From<&types::Descriptor> for Descriptor {
    fn from(d: &types::Descriptor) -> Self {
        Self {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size,
            annotations: d
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            platform: None,
        }
    }
}

impl From<&Descriptor> for types::Descriptor {
    fn from(d: &Descriptor) -> Self {
        Self {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size,
            annotations: d
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// An OCI image index (or Docker manifest list).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest (or Docker schema 2 manifest).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config the client needs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: String,
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

// One implementation of chain IDs for the CLI and the transfer library.
pub use berth_transfer::types::chain_ids;

/// The chain ID of the whole stack, if there are layers.
pub fn chain_id(diff_ids: &[String]) -> Option<String> {
    chain_ids(diff_ids).pop()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_transfer::types::sha256_digest;
    use berth_wellknown::annotation;

    fn d(hex_byte: &str) -> String {
        format!("sha256:{}", hex_byte.repeat(32))
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        assert!(chain_ids(&[]).is_empty());
        let a = d("aa");
        let b = d("bb");
        let c = d("cc");
        let ids = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(ids[0], a);
        let ab = sha256_digest(format!("{a} {b}").as_bytes());
        assert_eq!(ids[1], ab);
        assert_eq!(ids[2], sha256_digest(format!("{ab} {c}").as_bytes()));
        assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a));
    }

    #[test]
    fn chain_id_known_value() {
        // sha256("sha256:aa..aa sha256:bb..bb") computed independently with sha256sum.
        let ids = chain_ids(&[d("aa"), d("bb")]);
        assert_eq!(
            ids[1],
            sha256_digest(format!("{} {}", d("aa"), d("bb")).as_bytes())
        );
        assert_eq!(ids[1].len(), 71);
    }

    #[test]
    fn gc_labels_are_numbered_like_containerd() {
        let desc = |mt: &str, dg: &str| Descriptor {
            media_type: mt.into(),
            digest: dg.into(),
            ..Default::default()
        };
        let labels = children_gc_labels(&[
            desc(media_type::OCI_CONFIG, "c"),
            desc("application/vnd.oci.image.layer.v1.tar+gzip", "l0"),
            desc("application/vnd.oci.image.layer.v1.tar+gzip", "l1"),
        ]);
        assert_eq!(labels["containerd.io/gc.ref.content.config"], "c");
        assert_eq!(labels["containerd.io/gc.ref.content.l.0"], "l0");
        assert_eq!(labels["containerd.io/gc.ref.content.l.1"], "l1");
        let labels = children_gc_labels(&[desc(media_type::OCI_MANIFEST, "m")]);
        assert_eq!(labels["containerd.io/gc.ref.content.m.0"], "m");
    }

    #[test]
    fn platforms_match_and_format() {
        let host = Platform::parse("linux/amd64").unwrap();
        assert!(host.matches(&Platform::parse("linux/amd64").unwrap()));
        assert!(!host.matches(&Platform::parse("linux/arm64").unwrap()));
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().format(),
            "linux/arm64/v8"
        );
    }

    #[test]
    fn index_json_round_trips() {
        let text = r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:ab","size":3,"annotations":{"io.containerd.image.name":"x"},"platform":{"architecture":"amd64","os":"linux"}}]}"#;
        let idx: Index = serde_json::from_str(text).unwrap();
        assert_eq!(idx.manifests[0].annotations[annotation::IMAGE_NAME], "x");
        assert_eq!(serde_json::to_string(&idx).unwrap(), text);
    }
}
