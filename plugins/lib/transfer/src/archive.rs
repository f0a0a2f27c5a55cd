//! Image names of an imported OCI layout archive, as containerd's `archive.AddRefPrefix`,
//! `FilterRefPrefix` and `imageName` give them; shared by `berth images import` and the
//! daemon's Transfer service (`ImageImportStream`). Also what a Docker archive (`docker save`:
//! `manifest.json` beside the configs and layer tars) says, and the names its `RepoTags` give.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `org.opencontainers.image.ref.name`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// `io.containerd.image.name`.
pub const IMAGE_NAME: &str = "io.containerd.image.name";

/// Turns a `org.opencontainers.image.ref.name` into an image name, as containerd's
/// `archive.AddRefPrefix` (`filter == false`) and `FilterRefPrefix` (`filter == true`) do.
pub fn translate_ref(prefix: &str, filter: bool, reference: &str) -> Option<String> {
    if reference.contains(['/', ':', '@']) {
        if filter && !has_image_prefix(reference, prefix) {
            return None;
        }
        return Some(reference.to_owned());
    }
    Some(format!("{prefix}:{reference}"))
}

fn has_image_prefix(s: &str, prefix: &str) -> bool {
    match s.strip_prefix(prefix) {
        Some("") => true,
        Some(rest) => rest.starts_with(['/', ':', '@']),
        None => false,
    }
}

/// The image name for a manifest of an imported index, from its annotations (containerd
/// `imageName`): `io.containerd.image.name`, else the translated ref name.
pub fn image_name(
    annotations: &BTreeMap<String, String>,
    prefix: &str,
    filter: bool,
) -> Option<String> {
    if let Some(name) = annotations.get(IMAGE_NAME).filter(|n| !n.is_empty()) {
        return Some(name.clone());
    }
    annotations
        .get(REF_NAME)
        .filter(|n| !n.is_empty())
        .and_then(|r| translate_ref(prefix, filter, r))
}

/// Tar entry names are cleaned as `path.Clean` does (see [`crate::types::clean_path`]).
pub use crate::types::clean_path as clean_name;

/// Where a symbolic link at `link` pointing at `target` leads, as an archive path
/// (`path.Join(path.Dir(link), target)`).
pub fn link_target(link: &str, target: &str) -> String {
    let dir = link.rsplit_once('/').map_or("", |(d, _)| d);
    clean_name(&format!("{dir}/{target}"))
}

/// One image of a Docker archive's `manifest.json` (Docker's save format 1.1/1.2).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DockerImage {
    /// The archive path of its config (`<hex>.json`).
    #[serde(rename = "Config")]
    pub config: String,
    /// Its names (`busybox:latest`), possibly none.
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    /// The archive paths of its layer tars, bottom first.
    #[serde(rename = "Layers", default)]
    pub layers: Vec<String>,
}

/// The largest `manifest.json` read (containerd's `jsonLimit`).
pub const DOCKER_MANIFEST_LIMIT: u64 = 20 << 20;

/// Parses a Docker archive's `manifest.json`.
pub fn parse_docker_manifest(bytes: &[u8]) -> Result<Vec<DockerImage>, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("untar manifest \"manifest.json\": {e}"))
}

/// A Docker name as containerd's `normalizeReference` gives it (`busybox` →
/// `docker.io/library/busybox:latest`, `me/app:1` → `docker.io/me/app:1`,
/// `registry:5000/app` → `registry:5000/app:latest`); an invalid one is refused with the reason.
pub fn normalize_docker_name(name: &str) -> Result<String, String> {
    let invalid = |why: &str| format!("normalize image ref {name:?}: {why}");
    if name.is_empty() {
        return Err(invalid("empty reference"));
    }
    if name
        .chars()
        .any(|c| c.is_ascii_whitespace() || c.is_control())
    {
        return Err(invalid("invalid reference format"));
    }
    let (remote, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    // A tag is after the last `:` that follows the last `/`.
    let last_slash = remote.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match remote[last_slash..].rfind(':') {
        Some(i) => (
            &remote[..last_slash + i],
            Some(&remote[last_slash + i + 1..]),
        ),
        None => (remote, None),
    };
    let (domain, rest) = match path.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest.to_owned())
        }
        _ => ("docker.io", path.to_owned()),
    };
    let rest = if domain == "docker.io" && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest
    };
    let valid_path = rest.split('/').all(|c| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
    });
    if !valid_path {
        return Err(invalid("repository name must be lowercase"));
    }
    let mut out = format!("{domain}/{rest}");
    match (tag, digest) {
        (Some(""), _) => return Err(invalid("empty tag")),
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Ok(out)
}

/// `org.opencontainers.image.ref.name` of an image name (containerd `ociReferenceName`): its
/// tag, else its digest, else `latest`.
pub fn oci_ref_name(normalized: &str) -> String {
    let (remote, digest) = match normalized.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (normalized, None),
    };
    let last = remote.rsplit('/').next().unwrap_or(remote);
    match (last.split_once(':'), digest) {
        (Some((_, tag)), _) => tag.to_owned(),
        (None, Some(d)) => d.to_owned(),
        (None, None) => "latest".to_owned(),
    }
}

/// The regular file `path` leads to: itself when `is_file`, else where the symbolic link
/// `link(path)` leads, and so on, at most 8 links deep (a loop leads nowhere).
pub fn follow_links(
    path: &str,
    is_file: impl Fn(&str) -> bool,
    link: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let mut path = clean_name(path);
    for _ in 0..8 {
        if is_file(&path) {
            return Some(path);
        }
        path = link(&path)?;
    }
    None
}

/// A file of a Docker archive once in the content store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// `sha256:<hex>` of its bytes.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// Its first bytes are gzip's or zstd's magic (a layer is then `tar.gzip`, as containerd
    /// types every compressed Docker layer).
    pub compressed: bool,
}

/// Whether `head`, a file's first bytes, starts a gzip or zstd stream.
pub fn is_compressed(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b]) || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
}

/// A descriptor as Go's `ocispec.Descriptor` marshals (field order, empty fields left out),
/// so that the JSON made here has containerd's digest.
#[derive(serde::Serialize)]
struct GoDescriptor<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    digest: &'a str,
    size: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<GoPlatform>,
}

/// `ocispec.Platform` as Go marshals it (architecture first).
#[derive(serde::Serialize)]
struct GoPlatform {
    architecture: String,
    os: String,
}

fn go_descriptor<'a>(media_type: &'a str, file: &'a StoredFile) -> GoDescriptor<'a> {
    GoDescriptor {
        media_type,
        digest: &file.digest,
        size: file.size,
        annotations: BTreeMap::new(),
        platform: None,
    }
}

/// The Docker schema 2 manifest containerd's importer writes for an image of a Docker archive.
pub fn docker_manifest_json(config: &StoredFile, layers: &[StoredFile]) -> Vec<u8> {
    use berth_wellknown::media_type::{
        DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_MANIFEST,
    };
    #[derive(serde::Serialize)]
    struct Manifest<'a> {
        #[serde(rename = "schemaVersion")]
        schema_version: u32,
        #[serde(rename = "mediaType")]
        media_type: &'a str,
        config: GoDescriptor<'a>,
        layers: Vec<GoDescriptor<'a>>,
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: DOCKER_MANIFEST,
        config: go_descriptor(DOCKER_CONFIG, config),
        layers: layers
            .iter()
            .map(|l| {
                go_descriptor(
                    if l.compressed {
                        DOCKER_LAYER_GZIP
                    } else {
                        DOCKER_LAYER
                    },
                    l,
                )
            })
            .collect(),
    };
    // Strings and numbers only: serializing cannot fail.
    serde_json::to_vec(&manifest).unwrap_or_default()
}

/// One image of a Docker archive for its index: its manifest (digest and size), the
/// `os`/`architecture` of its config, and its `RepoTags`.
#[derive(Debug, Clone)]
pub struct DockerEntry {
    /// The manifest's digest.
    pub digest: String,
    /// The manifest's size.
    pub size: u64,
    /// The config's OS (containerd 1.6 takes only the OS and architecture).
    pub os: String,
    /// The config's architecture.
    pub architecture: String,
    /// The names; none gives one unnamed entry.
    pub repo_tags: Option<Vec<String>>,
}

/// The OCI index containerd's importer writes for a Docker archive: one entry per name
/// (normalized, with `io.containerd.image.name` and `org.opencontainers.image.ref.name`), or an
/// unnamed one for an image without names. A name that does not normalize is refused.
pub fn docker_index_json(entries: &[DockerEntry]) -> Result<Vec<u8>, String> {
    #[derive(serde::Serialize)]
    struct Index<'a> {
        #[serde(rename = "schemaVersion")]
        schema_version: u32,
        manifests: Vec<GoDescriptor<'a>>,
    }
    let mut manifests = Vec::new();
    for e in entries {
        let normal = crate::types::Platform {
            os: e.os.clone(),
            architecture: e.architecture.clone(),
            variant: String::new(),
        }
        .normalized();
        let desc = |annotations| GoDescriptor {
            media_type: berth_wellknown::media_type::DOCKER_MANIFEST,
            digest: &e.digest,
            size: e.size,
            annotations,
            platform: Some(GoPlatform {
                architecture: normal.architecture.clone(),
                os: normal.os.clone(),
            }),
        };
        match e.repo_tags.as_ref().filter(|t| !t.is_empty()) {
            None => manifests.push(desc(BTreeMap::new())),
            Some(tags) => {
                for tag in tags {
                    let name = normalize_docker_name(tag)?;
                    let ref_name = oci_ref_name(&name);
                    manifests.push(desc(BTreeMap::from([
                        (IMAGE_NAME.to_owned(), name),
                        (REF_NAME.to_owned(), ref_name),
                    ])));
                }
            }
        }
    }
    serde_json::to_vec(&Index {
        schema_version: 2,
        manifests,
    })
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn docker_names_normalize_as_containerds() {
        let n = |s: &str| normalize_docker_name(s).unwrap();
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("me/app:1"), "docker.io/me/app:1");
        assert_eq!(n("registry:5000/app"), "registry:5000/app:latest");
        assert_eq!(n("localhost/a/b:2"), "localhost/a/b:2");
        assert_eq!(
            n("docker.io/library/bb:latest"),
            "docker.io/library/bb:latest"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(n(&format!("bb@{d}")), format!("docker.io/library/bb@{d}"));
        assert!(normalize_docker_name("Busybox").is_err());
        assert!(normalize_docker_name("").is_err());
        assert_eq!(oci_ref_name("docker.io/library/bb:latest"), "latest");
        assert_eq!(oci_ref_name("registry:5000/app:2"), "2");
        assert_eq!(oci_ref_name(&format!("docker.io/library/bb@{d}")), d);
        assert_eq!(oci_ref_name("localhost:5000/bb"), "latest");
        let links = |p: &str| match p {
            "a" => Some("b".to_owned()),
            "loop" => Some("loop".to_owned()),
            _ => None,
        };
        assert_eq!(
            follow_links("./a", |p| p == "b", links),
            Some("b".to_owned())
        );
        assert_eq!(follow_links("b", |p| p == "b", links), Some("b".to_owned()));
        assert_eq!(follow_links("loop", |p| p == "b", links), None);
        assert_eq!(follow_links("c", |p| p == "b", links), None);
    }

    #[test]
    fn names_clean_as_go_path_clean() {
        assert_eq!(clean_name("./blobs//sha256/x"), "blobs/sha256/x");
        assert_eq!(clean_name("linked/../top/layer.tar"), "top/layer.tar");
        assert_eq!(clean_name("../../x"), "x");
        assert_eq!(
            link_target("linked/layer.tar", "../top/layer.tar"),
            "top/layer.tar"
        );
        assert_eq!(link_target("a.tar", "b.tar"), "b.tar");
    }

    #[test]
    fn docker_manifests_parse() {
        let m = br#"[{"Config":"ab.json","RepoTags":["bb:latest"],"Layers":["l1/layer.tar"]},{"Config":"cd.json","RepoTags":null,"Layers":[]}]"#;
        let images = parse_docker_manifest(m).unwrap();
        assert_eq!(images[0].config, "ab.json");
        assert_eq!(images[0].repo_tags, Some(vec!["bb:latest".to_owned()]));
        assert_eq!(images[0].layers, ["l1/layer.tar"]);
        assert_eq!(images[1].repo_tags, None);
        assert!(parse_docker_manifest(b"{}").is_err());
    }

    use super::*;

    #[test]
    fn names_follow_containerd_translators() {
        assert_eq!(translate_ref("foo/bar", true, "docker.io/x:1"), None);
        assert_eq!(
            translate_ref("foo/bar", true, "foo/bar:1").as_deref(),
            Some("foo/bar:1")
        );
        let mut a = BTreeMap::new();
        a.insert(REF_NAME.to_owned(), "v1".to_owned());
        assert_eq!(image_name(&a, "p", false).as_deref(), Some("p:v1"));
        a.insert(IMAGE_NAME.to_owned(), "docker.io/library/bb:1".to_owned());
        assert_eq!(
            image_name(&a, "p", true).as_deref(),
            Some("docker.io/library/bb:1")
        );
    }
}
