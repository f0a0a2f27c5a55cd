//! The CRI's records of sandboxes and containers: in memory for the calls, persisted in the
//! metadata store (container labels and extensions, as containerd's CRI) and in status files
//! under the CRI root, and rebuilt from them at start.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::error::{CriError, Result};

pub mod container;
pub mod sandbox;

/// Locks `m`, taking the value over from a panicked holder: the guarded values are plain maps
/// and records, consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The entry of `map` keyed `id`, or the only one whose key starts with `id` (containerd's
/// truncated ids). `field` names the request field in the refusals, `what` the kind of object
/// in NotFound.
pub(crate) fn by_id_or_prefix<'a, T>(
    map: &'a BTreeMap<String, T>,
    id: &str,
    field: &str,
    what: &'static str,
) -> Result<&'a T> {
    if id.is_empty() {
        return Err(CriError::invalid(field, "empty"));
    }
    if let Some(v) = map.get(id) {
        return Ok(v);
    }
    let mut matches = map
        .range(id.to_owned()..)
        .take_while(|(k, _)| k.starts_with(id));
    match (matches.next(), matches.next()) {
        (Some((_, v)), None) => Ok(v),
        (Some(_), Some(_)) => Err(CriError::invalid(
            field,
            format!("{id:?} is a prefix of more than one {what}"),
        )),
        _ => Err(CriError::NotFound {
            what,
            id: id.to_owned(),
        }),
    }
}

/// Both record sets.
#[derive(Debug, Default)]
pub struct Stores {
    /// Pod sandboxes.
    pub sandboxes: sandbox::SandboxStore,
    /// Containers.
    pub containers: container::ContainerStore,
}
