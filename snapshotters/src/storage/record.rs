//! One stored snapshot record and its JSON encoding.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::SnapshotError;
use crate::snapshotter::{Info, Kind, Usage};

/// What the metastore keeps per key or name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) id: u64,
    pub(super) kind: Kind,
    pub(super) parent: Option<String>,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) created_at: SystemTime,
    pub(super) updated_at: SystemTime,
    /// Set at commit; zero while active.
    pub(super) usage: Usage,
    /// Ids of the snapshots whose parent this is.
    pub(super) children: BTreeSet<u64>,
}

impl Record {
    pub(super) fn decode(key: &str, bytes: &[u8]) -> Result<Record, SnapshotError> {
        serde_json::from_slice(bytes).map_err(|source| SnapshotError::Corrupt {
            key: key.to_owned(),
            source,
        })
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a snapshot record always serializes to JSON")
    }

    pub(super) fn info(&self, name: &str) -> Info {
        Info {
            name: name.to_owned(),
            parent: self.parent.clone(),
            kind: self.kind,
            labels: self.labels.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}
