//! Image names of an imported OCI layout archive, as containerd's `archive.AddRefPrefix`,
//! `FilterRefPrefix` and `imageName` give them; shared by `berth images import` and the
//! daemon's Transfer service (`ImageImportStream`).

use std::collections::BTreeMap;

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

#[cfg(test)]
mod tests {
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
