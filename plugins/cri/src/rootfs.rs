//! The rootfs snapshot of a pause container or a container: prepared on the image's top chain
//! id under a creation lease, so that the collector cannot take it before the container record
//! holds it (containerd's `NewContainer` under a lease). The lease expires on its own should
//! berthd die in between.

use std::collections::BTreeMap;

use berth_core::namespaced_snapshots::NamespacedSnapshots;
use berth_core::MetadataStore;
use berth_mount::Mount;
use berth_wellknown::label;

use crate::error::{CriError, Result};
use crate::service::K8S_NAMESPACE;

/// How long a creation lease outlives a berthd that died before deleting it.
const CREATION_LEASE_EXPIRY_HOURS: i64 = 1;

/// Creates the expiring lease `lease`, then prepares snapshot `key` on `parent` in `snapshotter`
/// under it with `labels`; the rootfs mounts. The caller deletes the lease once the record
/// exists (or on failure). Blocking: call it on the blocking pool.
pub fn prepare_under_lease(
    meta: &MetadataStore,
    snapshots: &NamespacedSnapshots,
    snapshotter: &str,
    key: &str,
    parent: &str,
    labels: BTreeMap<String, String>,
    lease: &str,
) -> Result<Vec<Mount>> {
    let expire = chrono::Utc::now() + chrono::Duration::hours(CREATION_LEASE_EXPIRY_HOURS);
    meta.create_lease(
        K8S_NAMESPACE,
        lease,
        BTreeMap::from([(label::GC_EXPIRE.to_owned(), expire.to_rfc3339())]),
    )
    .map_err(|e| CriError::metadata(format!("create lease {lease}"), e))?;
    snapshots
        .prepare(
            K8S_NAMESPACE,
            snapshotter,
            key,
            Some(parent),
            labels,
            Some(lease),
        )
        .map_err(|source| CriError::Snapshot {
            op: format!("prepare rootfs snapshot {key} on {parent}"),
            source,
        })
}
