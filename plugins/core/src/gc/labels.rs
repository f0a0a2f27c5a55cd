//! The labels the collector reads (containerd `metadata/gc.go`): roots, references to content
//! and snapshots, lease expiry and flat leases.

use std::collections::BTreeMap;
use std::time::SystemTime;

use berth_wellknown::label;

use super::time::parse_rfc3339;

/// What an object's labels reference.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LabelRefs {
    /// Digests, in the object's namespace.
    pub content: Vec<String>,
    /// `(snapshotter, key)` pairs, in the object's namespace.
    pub snapshots: Vec<(String, String)>,
}

/// The references in a label map, as containerd's `sendLabelRefs` reads them.
pub fn label_refs(labels: &BTreeMap<String, String>) -> LabelRefs {
    let mut refs = LabelRefs::default();
    for (key, value) in labels.range(label::GC_REF_CONTENT.to_owned()..) {
        let Some(rest) = key.strip_prefix(label::GC_REF_CONTENT) else {
            break;
        };
        // `containerd.io/gc.ref.contentx` is not a reference.
        if rest.is_empty() || rest.starts_with('.') || rest.starts_with('/') {
            refs.content.push(value.clone());
        }
    }
    for (key, value) in labels.range(label::GC_REF_SNAPSHOT.to_owned()..) {
        let Some(rest) = key.strip_prefix(label::GC_REF_SNAPSHOT) else {
            break;
        };
        // `…snapshot.<snapshotter>`: `containerd.io/gc.ref.snapshotx` is not a reference.
        let Some(rest) = rest.strip_prefix('.') else {
            continue;
        };
        let snapshotter = rest.split_once('/').map_or(rest, |(sn, _)| sn);
        if !snapshotter.is_empty() {
            refs.snapshots.push((snapshotter.to_owned(), value.clone()));
        }
    }
    refs
}

/// True when the labels make the object a root.
pub fn is_root(labels: &BTreeMap<String, String>) -> bool {
    labels.contains_key(label::GC_ROOT)
}

/// True when a lease's `containerd.io/gc.expire` is in the past of `now`. An unparsable value
/// is logged and ignored, as containerd does: the lease then never expires.
pub fn is_expired(lease: &str, labels: &BTreeMap<String, String>, now: SystemTime) -> bool {
    let Some(value) = labels.get(label::GC_EXPIRE) else {
        return false;
    };
    match parse_rfc3339(value) {
        Ok(at) => now > at,
        Err(e) => {
            tracing::info!(lease, error = %e, "ignoring invalid expiration value");
            false
        }
    }
}

/// True when a lease holds its resources flat.
pub fn is_flat(labels: &BTreeMap<String, String>) -> bool {
    labels.contains_key(label::GC_FLAT)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reads_content_and_snapshot_references() {
        let l = labels(&[
            ("containerd.io/gc.ref.content", "sha256:a"),
            ("containerd.io/gc.ref.content.l.0", "sha256:b"),
            ("containerd.io/gc.ref.content/config", "sha256:c"),
            ("containerd.io/gc.ref.contentx", "sha256:no"),
            ("containerd.io/gc.ref.snapshot.overlayfs", "chain1"),
            ("containerd.io/gc.ref.snapshot.native/x", "chain2"),
            ("containerd.io/gc.ref.snapshot.", "no-snapshotter"),
            ("containerd.io/gc.root", "now"),
            ("other", "sha256:no"),
        ]);
        let refs = label_refs(&l);
        assert_eq!(refs.content, ["sha256:a", "sha256:b", "sha256:c"]);
        assert_eq!(
            refs.snapshots,
            [
                ("native".to_owned(), "chain2".to_owned()),
                ("overlayfs".to_owned(), "chain1".to_owned()),
            ]
        );
        assert!(is_root(&l));
        assert!(!is_root(&labels(&[("containerd.io/gc.rootx", "")])));
    }

    #[test]
    fn expiry_and_flatness() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let past = labels(&[(label::GC_EXPIRE, "2023-01-01T00:00:00Z")]);
        let future = labels(&[(label::GC_EXPIRE, "2030-01-01T00:00:00+02:00")]);
        let junk = labels(&[(label::GC_EXPIRE, "soon")]);
        assert!(is_expired("l", &past, now));
        assert!(!is_expired("l", &future, now));
        assert!(!is_expired("l", &junk, now));
        assert!(!is_expired("l", &BTreeMap::new(), now));
        assert!(is_flat(&labels(&[(label::GC_FLAT, "")])));
        assert!(!is_flat(&future));
    }
}
