//! Image references as the CRI reads them: docker-normalized (`busybox` is
//! `docker.io/library/busybox:latest`), a tag dropped when a digest is given (containerd's
//! `ParseDockerRef`), and image ids (`sha256:<config digest>`) told apart from names.

use berth_transfer::ImageRef;

use crate::error::{CriError, Result};

/// A normalized image name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// `registry/repository` (`docker.io/library/busybox`).
    pub repo: String,
    /// The tag, absent when a digest is given.
    pub tag: Option<String>,
    /// The manifest digest, when given.
    pub digest: Option<String>,
}

impl Named {
    /// Parses `reference` as containerd's `ParseDockerRef` does; a malformed one is
    /// InvalidArgument naming `field`.
    pub fn parse(reference: &str, field: &str) -> Result<Named> {
        if reference.is_empty() {
            return Err(CriError::invalid(field, "the image reference is empty"));
        }
        let parsed = ImageRef::parse(reference).map_err(|e| {
            CriError::invalid(
                field,
                format!("failed to parse image reference {reference:?}: {e}"),
            )
        })?;
        let r = &parsed.reference;
        let repo = format!("{}/{}", r.registry(), r.repository());
        let digest = r.digest().map(str::to_owned);
        let tag = match digest {
            Some(_) => None,
            None => r.tag().map(str::to_owned),
        };
        Ok(Named { repo, tag, digest })
    }

    /// The registry host (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        self.repo.split_once('/').map_or("", |(host, _)| host)
    }

    /// The full reference string: `repo@digest` or `repo:tag`.
    pub fn full(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}@{d}", self.repo),
            (None, Some(t)) => format!("{}:{t}", self.repo),
            (None, None) => format!("{}:latest", self.repo),
        }
    }

    /// `repo:tag` when tagged.
    pub fn repo_tag(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.repo))
    }

    /// `repo@<manifest digest>`.
    pub fn repo_digest(&self, manifest_digest: &str) -> String {
        format!("{}@{manifest_digest}", self.repo)
    }
}

/// Is `s` a full `sha256:<64 hex>` digest (an image id)?
pub fn is_image_id(s: &str) -> bool {
    berth_transfer::types::valid_digest(s)
}

/// The hex part of an id or id prefix (`sha256:ab12` or `ab12`), if it is one.
pub fn id_prefix(s: &str) -> Option<&str> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    let ok = !hex.is_empty()
        && hex.len() <= 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then_some(hex)
}

/// How an image record's name appears in `Image.repo_tags` / `repo_digests`: a tagged name,
/// a digested name, or neither (the `sha256:...` id record, anything unparsable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordName {
    /// `repo:tag`.
    Tag(String),
    /// `repo@digest`.
    Digest(String),
    /// The image id record or a name that is no reference.
    Other,
}

/// Classifies a record name as containerd's `parseImageReferences` does.
pub fn classify(name: &str) -> RecordName {
    if is_image_id(name) {
        return RecordName::Other;
    }
    match Named::parse(name, "") {
        Ok(n) if n.digest.is_some() => RecordName::Digest(n.full()),
        Ok(n) => match n.repo_tag() {
            Some(t) => RecordName::Tag(t),
            None => RecordName::Other,
        },
        Err(_) => RecordName::Other,
    }
}

/// Orders references as containerd's image store does: tagged names, then digested ones,
/// then the rest, each group sorted.
pub fn sort_references(refs: &mut [String]) {
    refs.sort_by_cached_key(|r| {
        let rank = match classify(r) {
            RecordName::Tag(_) => 2,
            RecordName::Digest(_) => 3,
            RecordName::Other => 5,
        };
        (rank, r.clone())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_like_parse_docker_ref() {
        let n = Named::parse("busybox", "image.image").unwrap();
        assert_eq!(n.full(), "docker.io/library/busybox:latest");
        assert_eq!(n.registry(), "docker.io");
        let d = format!("sha256:{}", "a".repeat(64));
        let n = Named::parse(&format!("busybox:1.36@{d}"), "image.image").unwrap();
        assert_eq!(n.full(), format!("docker.io/library/busybox@{d}"));
        assert_eq!(n.repo_tag(), None);
        let n = Named::parse("127.0.0.1:5000/a/b:v1", "x").unwrap();
        assert_eq!(n.registry(), "127.0.0.1:5000");
        assert_eq!(n.repo_digest(&d), format!("127.0.0.1:5000/a/b@{d}"));
        let err = Named::parse("Bad Ref", "image.image").unwrap_err();
        assert!(err.to_string().contains("image.image"), "{err}");
    }

    #[test]
    fn record_names_are_classified_and_sorted() {
        let d = format!("sha256:{}", "b".repeat(64));
        assert_eq!(classify(&d), RecordName::Other);
        assert_eq!(
            classify("docker.io/library/busybox:1"),
            RecordName::Tag("docker.io/library/busybox:1".into())
        );
        let mut refs = vec![
            d.clone(),
            format!("docker.io/library/busybox@{d}"),
            "docker.io/library/busybox:1".to_owned(),
        ];
        sort_references(&mut refs);
        assert_eq!(refs[0], "docker.io/library/busybox:1");
        assert_eq!(refs[2], d);
    }

    #[test]
    fn id_prefixes() {
        assert_eq!(id_prefix("sha256:ab"), Some("ab"));
        assert_eq!(id_prefix("ab12"), Some("ab12"));
        assert_eq!(id_prefix("busybox"), None);
        assert!(is_image_id(&format!("sha256:{}", "0".repeat(64))));
    }
}
