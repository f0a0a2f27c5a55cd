//! Steps the local drivers share around the metastore.

use std::path::Path;

use crate::error::SnapshotError;
use crate::snapshotter::Kind;
use crate::storage::MetaStore;

/// The id of a committed parent, checked before any directory is built; the metastore checks
/// again inside its transaction.
pub(crate) fn parent_id(
    ms: &MetaStore,
    parent: Option<&str>,
) -> Result<Option<String>, SnapshotError> {
    let Some(parent) = parent.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let (id, info, _) = ms.get_info(parent).map_err(|e| match e {
        SnapshotError::NotFound { key } => SnapshotError::ParentNotFound { parent: key },
        other => other,
    })?;
    if info.kind != Kind::Committed {
        return Err(SnapshotError::ParentNotCommitted {
            parent: parent.to_owned(),
        });
    }
    Ok(Some(id))
}

/// Refuses an empty key before any directory is built.
pub(crate) fn require_key(key: &str) -> Result<(), SnapshotError> {
    if key.is_empty() {
        return Err(SnapshotError::EmptyName { what: "key" });
    }
    Ok(())
}

/// Entries of `dir` that `keep` does not claim: directories of removed snapshots and
/// `new-*` leftovers of a crash mid-build (containerd `getCleanupDirectories`).
pub(crate) fn orphans(
    dir: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<std::path::PathBuf>, SnapshotError> {
    Ok(crate::fsutil::dir_names(dir)?
        .into_iter()
        .filter(|name| !keep(name))
        .map(|name| dir.join(name))
        .collect())
}
