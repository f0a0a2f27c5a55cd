//! Parsing of indexes, manifests and image configs, as far as transfer needs them.

use berth_wellknown::media_type;
use serde::Deserialize;

use crate::error::TransferError;
use crate::types::{Descriptor, Platform};

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

/// The media type of the manifest document `bytes` (its `mediaType` field, else guessed from
/// its shape as containerd's resolver does for registries that omit it).
pub fn sniff_media_type(bytes: &[u8], digest: &str) -> Result<String, TransferError> {
    let invalid = |reason: String| TransferError::InvalidContent {
        what: "manifest",
        digest: digest.to_owned(),
        reason,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    if probe.schema_version == Some(1) {
        return Err(invalid(
            "Docker schema 1 manifests are not supported".to_owned(),
        ));
    }
    match probe.media_type {
        Some(mt) if !mt.is_empty() => match mt.as_str() {
            media_type::OCI_INDEX
            | media_type::DOCKER_MANIFEST_LIST
            | media_type::OCI_MANIFEST
            | media_type::DOCKER_MANIFEST => Ok(mt),
            other => Err(invalid(format!("unsupported media type {other}"))),
        },
        _ if probe.manifests.is_some() => Ok(media_type::OCI_INDEX.to_owned()),
        _ if probe.config.is_some() => Ok(media_type::OCI_MANIFEST.to_owned()),
        _ => Err(invalid("neither an index nor a manifest".to_owned())),
    }
}

/// An image index or manifest list.
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    /// The entries.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// A single-platform image manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// The config blob.
    pub config: Descriptor,
    /// The layers, bottom first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// The parts of an image config transfer reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    /// `os` of the image.
    #[serde(default)]
    pub os: String,
    /// `architecture` of the image.
    #[serde(default)]
    pub architecture: String,
    /// `rootfs.diff_ids`.
    #[serde(skip)]
    pub diff_ids: Vec<String>,
}

/// Parses an index.
pub fn parse_index(bytes: &[u8], digest: &str) -> Result<Index, TransferError> {
    serde_json::from_slice(bytes).map_err(|e| TransferError::InvalidContent {
        what: "index",
        digest: digest.to_owned(),
        reason: e.to_string(),
    })
}

/// Parses a manifest.
pub fn parse_manifest(bytes: &[u8], digest: &str) -> Result<Manifest, TransferError> {
    serde_json::from_slice(bytes).map_err(|e| TransferError::InvalidContent {
        what: "manifest",
        digest: digest.to_owned(),
        reason: e.to_string(),
    })
}

/// Parses an image config.
pub fn parse_config(bytes: &[u8], digest: &str) -> Result<ImageConfig, TransferError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        os: String,
        #[serde(default)]
        architecture: String,
        rootfs: Option<RootFs>,
    }
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| TransferError::InvalidContent {
        what: "config",
        digest: digest.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(ImageConfig {
        os: raw.os,
        architecture: raw.architecture,
        diff_ids: raw.rootfs.map(|r| r.diff_ids).unwrap_or_default(),
    })
}

/// The entries of an index to fetch for `want` (`None`: every entry): the first entry whose
/// platform matches (containerd's `LimitManifests(.., 1)` over `FilterPlatforms`), else the
/// first entry without a platform; nested indexes always pass.
pub fn select_entries<'a>(index: &'a Index, want: Option<&Platform>) -> Vec<&'a Descriptor> {
    let Some(want) = want else {
        return index.manifests.iter().collect();
    };
    let mut out: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| crate::types::is_index(&d.media_type))
        .collect();
    let manifest = index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
        .or_else(|| {
            index
                .manifests
                .iter()
                .find(|d| d.platform.is_none() && !crate::types::is_index(&d.media_type))
        });
    out.extend(manifest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest: &str, platform: Option<Platform>) -> Descriptor {
        Descriptor {
            platform,
            ..Descriptor::new(media_type::OCI_MANIFEST, digest, 1)
        }
    }

    #[test]
    fn sniffs_media_types() {
        let d = "sha256:00";
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"manifests":[]}"#, d).unwrap(),
            media_type::OCI_INDEX
        );
        assert_eq!(
            sniff_media_type(
                format!(
                    r#"{{"mediaType":"{}","config":{{}}}}"#,
                    media_type::DOCKER_MANIFEST
                )
                .as_bytes(),
                d
            )
            .unwrap(),
            media_type::DOCKER_MANIFEST
        );
        assert!(sniff_media_type(br#"{"schemaVersion":1}"#, d).is_err());
        assert!(sniff_media_type(b"not json", d).is_err());
    }

    #[test]
    fn selects_the_first_matching_platform() {
        let index = Index {
            manifests: vec![
                entry("sha256:arm", Some(Platform::new("linux", "arm64"))),
                entry("sha256:amd", Some(Platform::new("linux", "amd64"))),
                entry("sha256:amd2", Some(Platform::new("linux", "amd64"))),
            ],
        };
        let amd = Platform::new("linux", "amd64");
        let got: Vec<&str> = select_entries(&index, Some(&amd))
            .iter()
            .map(|d| d.digest.as_str())
            .collect();
        assert_eq!(got, ["sha256:amd"]);
        assert_eq!(select_entries(&index, None).len(), 3);
        let s390 = Platform::new("linux", "s390x");
        assert!(select_entries(&index, Some(&s390)).is_empty());
    }

    #[test]
    fn reads_diff_ids() {
        let c = parse_config(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:a","sha256:b"]}}"#,
            "d",
        )
        .unwrap();
        assert_eq!(c.diff_ids, ["sha256:a", "sha256:b"]);
        assert_eq!(c.architecture, "amd64");
    }
}
