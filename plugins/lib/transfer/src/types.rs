//! The plain data the transfer code moves around: descriptors, platforms, image records and
//! mounts, plus media type tests, reference normalization and chain IDs. The media types and
//! label keys themselves are `berth-wellknown`'s.

use std::collections::BTreeMap;
use std::fmt;

use berth_wellknown::media_type;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Is `media_type` an image index or a Docker manifest list?
pub fn is_index(media_type: &str) -> bool {
    media_type == media_type::OCI_INDEX || media_type == media_type::DOCKER_MANIFEST_LIST
}

/// Is `media_type` a single-platform image manifest?
pub fn is_manifest(media_type: &str) -> bool {
    media_type == media_type::OCI_MANIFEST || media_type == media_type::DOCKER_MANIFEST
}

/// Is `media_type` a layer a registry must not (or need not) serve, as
/// `images.IsNonDistributable` says? Push skips them as ctr does by default.
pub fn is_non_distributable(media_type: &str) -> bool {
    media_type.starts_with(media_type::OCI_LAYER_NONDISTRIBUTABLE_PREFIX)
        || media_type.starts_with(media_type::DOCKER_LAYER_FOREIGN_PREFIX)
}

/// The containerd ingest ref of a blob (`remotes.MakeRefKey`): `manifest-`, `index-`, `layer-`,
/// `config-` or `unknown-` followed by the digest.
pub fn ingest_ref(desc: &Descriptor) -> String {
    let mt = desc.media_type.as_str();
    let prefix = if is_manifest(mt) {
        "manifest"
    } else if is_index(mt) {
        "index"
    } else if mt == media_type::OCI_CONFIG || mt == media_type::DOCKER_CONFIG {
        "config"
    } else if mt.contains(".layer.") || mt.contains(".rootfs.") {
        "layer"
    } else {
        "unknown"
    };
    format!("{prefix}-{}", desc.digest)
}

/// Go's `path.Clean` without the root: no empty or `.` segments, and `..` takes the segment
/// before it (none above the root). `a/./b//../c` is `a/c`, `/../x` is `x`. Tar entry names,
/// registry URL paths and bind-mount sources are all cleaned with it.
pub fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// An OCI platform (`os/architecture[/variant]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Platform {
    /// Operating system, say `linux`.
    #[serde(default)]
    pub os: String,
    /// CPU architecture in GOARCH spelling, say `amd64` or `arm64`.
    #[serde(default)]
    pub architecture: String,
    /// CPU variant, say `v8`; empty when unset.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl Platform {
    /// `os/arch` with an empty variant.
    pub fn new(os: &str, architecture: &str) -> Self {
        Self {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: String::new(),
        }
    }

    /// The platform of this host, as containerd's `platforms.DefaultSpec()` names it.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Self::new("linux", arch).normalized()
    }

    /// Parses `os[/arch[/variant]]`; `None` when it is empty.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('/');
        let os = parts.next().filter(|s| !s.is_empty())?;
        let arch = parts
            .next()
            .unwrap_or(Platform::host().architecture.as_str())
            .to_owned();
        let variant = parts.next().unwrap_or("").to_owned();
        Some(
            Self {
                os: os.to_ascii_lowercase(),
                architecture: arch.to_ascii_lowercase(),
                variant,
            }
            .normalized(),
        )
    }

    /// Normalizes spellings as `platforms.Normalize` does (`x86_64` → `amd64`, `aarch64` →
    /// `arm64`, `arm64/v8` → `arm64`, `arm` → `arm/v7`).
    pub fn normalized(mut self) -> Self {
        self.architecture = match self.architecture.as_str() {
            "x86_64" | "x86-64" => "amd64".to_owned(),
            "aarch64" => "arm64".to_owned(),
            "i386" => "386".to_owned(),
            other => other.to_owned(),
        };
        match self.architecture.as_str() {
            "arm64" if self.variant == "v8" || self.variant == "8" => self.variant.clear(),
            "arm" if self.variant.is_empty() || self.variant == "7" => self.variant = "v7".into(),
            "amd64" if self.variant == "v1" => self.variant.clear(),
            _ => {}
        }
        self
    }

    /// Does an index entry of platform `other` run here? OS and architecture must be equal after
    /// normalization; a variant only counts when `self` names one.
    pub fn matches(&self, other: &Platform) -> bool {
        let want = self.clone().normalized();
        let have = other.clone().normalized();
        want.os == have.os
            && want.architecture == have.architecture
            && (want.variant.is_empty() || want.variant == have.variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type of the referenced content.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Annotations (`org.opencontainers.image.ref.name`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Platform, on the entries of an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// A descriptor of `media_type`, `digest` and `size` without annotations or platform.
    pub fn new(media_type: &str, digest: &str, size: u64) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest: digest.to_owned(),
            size,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }
}

/// An image record of the image store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Image {
    /// Full normalized name, say `docker.io/library/busybox:latest`.
    pub name: String,
    /// The root descriptor (an index or a manifest).
    pub target: Descriptor,
    /// Image labels.
    pub labels: BTreeMap<String, String>,
}

/// What the content store knows about a committed blob.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlobInfo {
    /// Size in bytes.
    pub size: u64,
    /// Labels of the blob.
    pub labels: BTreeMap<String, String>,
}

/// The state of an unfinished ingest (`content.Status`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IngestStatus {
    /// Bytes written so far; a resumed write continues here.
    pub offset: u64,
    /// Expected total size (0 when unknown).
    pub total: u64,
}

/// A mount as snapshotters return them: the one domain mount of `berth-mount`.
pub use berth_mount::Mount;

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The chain IDs of `diff_ids` (`identity.ChainIDs`): `c1 = d1`, `cn = sha256("<cn-1> <dn>")`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Is `digest` a well-formed `sha256:<64 lowercase hex>` digest?
pub fn valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Formats seconds since the Unix epoch as RFC 3339 UTC (`2024-01-01T00:00:00Z`).
pub fn rfc3339(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_containerd() {
        let d1 = sha256_digest(b"a");
        let d2 = sha256_digest(b"b");
        let ids = chain_ids(&[d1.clone(), d2.clone()]);
        assert_eq!(ids[0], d1);
        assert_eq!(ids[1], sha256_digest(format!("{d1} {d2}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn platforms_normalize_and_match() {
        let amd = Platform::parse("linux/amd64").unwrap();
        assert!(amd.matches(&Platform::new("linux", "x86_64")));
        assert!(!amd.matches(&Platform::new("linux", "arm64")));
        let arm = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(arm.to_string(), "linux/arm64");
        assert!(arm.matches(&Platform::new("linux", "aarch64")));
        let v6 = Platform::parse("linux/arm/v6").unwrap();
        assert!(!v6.matches(&Platform::new("linux", "arm")));
        assert!(Platform::parse("").is_none());
    }

    #[test]
    fn ingest_refs_follow_make_ref_key() {
        let d = "sha256:00";
        assert_eq!(
            ingest_ref(&Descriptor::new(media_type::OCI_INDEX, d, 1)),
            "index-sha256:00"
        );
        assert_eq!(
            ingest_ref(&Descriptor::new(media_type::DOCKER_MANIFEST, d, 1)),
            "manifest-sha256:00"
        );
        assert_eq!(
            ingest_ref(&Descriptor::new(media_type::DOCKER_CONFIG, d, 1)),
            "config-sha256:00"
        );
        assert_eq!(
            ingest_ref(&Descriptor::new(
                "application/vnd.oci.image.layer.v1.tar+gzip",
                d,
                1
            )),
            "layer-sha256:00"
        );
        assert_eq!(
            ingest_ref(&Descriptor::new(
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                d,
                1
            )),
            "layer-sha256:00"
        );
    }

    #[test]
    fn digests_are_validated() {
        assert!(valid_digest(&sha256_digest(b"x")));
        assert!(!valid_digest("sha256:abc"));
        assert!(!valid_digest("md5:00"));
    }
}
