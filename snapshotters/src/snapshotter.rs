//! The snapshotter domain types and the `Snapshotter` trait (containerd `snapshots/snapshotter.go`).
//!
//! These are not proto types; the Snapshots service converts at its edge.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::SnapshotError;

/// What a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A read-only snapshot made by `view`.
    View,
    /// A writable snapshot made by `prepare`.
    Active,
    /// An immutable snapshot made by `commit`; the only kind that can be a parent.
    Committed,
}

impl Kind {
    /// The lowercase name filters use (`kind==active`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// Compares with the lowercase name (`kind == "committed"`), as filters and stored records spell it.
impl PartialEq<&str> for Kind {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `stat` and `walk` report about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The key (active, view) or name (committed).
    pub name: String,
    /// The committed parent, if any.
    pub parent: Option<String>,
    /// The kind.
    pub kind: Kind,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// When the snapshot was created (for committed: when it was committed).
    pub created_at: SystemTime,
    /// When the snapshot was last updated.
    pub updated_at: SystemTime,
}

impl Info {
    /// An info with only a name and labels set, as a caller of `update` builds it.
    pub fn with_labels(name: impl Into<String>, labels: BTreeMap<String, String>) -> Info {
        Info {
            name: name.into(),
            parent: None,
            kind: Kind::Active,
            labels,
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }
}

impl berth_filters::Adaptor for Info {
    // containerd `snapshots/storage/bolt.go` `adaptSnapshot`: kind, name, parent, labels.*.
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("kind") => Some(self.kind.as_str().to_owned()),
            Some("name") => Some(self.name.clone()).filter(|s| !s.is_empty()),
            Some("parent") => self.parent.clone().filter(|s| !s.is_empty()),
            Some("labels") => berth_filters::label_field(&self.labels, path),
            _ => None,
        }
    }
}

/// Disk resources a snapshot takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes of disk used (blocks × 512), hard links counted once.
    pub size: i64,
    /// Inodes used.
    pub inodes: i64,
}

/// One mount a snapshot is made of, applied in order onto the same target (the domain type
/// of the one mount library).
pub use berth_mount::Mount;

/// A snapshotter: a store of layered filesystems keyed by name (containerd
/// `snapshots.Snapshotter`).
///
/// Every method is synchronous and may block on the filesystem; async callers go through
/// `spawn_blocking`.
pub trait Snapshotter: Send + Sync + fmt::Debug {
    /// Info of the snapshot with this key or name.
    fn stat(&self, key: &str) -> Result<Info, SnapshotError>;
    /// Updates the labels of `info.name`: all of them (`fieldpaths` empty or `labels`) or the
    /// ones named `labels.<k>`. Other field paths are InvalidArgument.
    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info, SnapshotError>;
    /// Disk usage: measured now for active snapshots, stored at commit for committed ones.
    fn usage(&self, key: &str) -> Result<Usage, SnapshotError>;
    /// The mounts of an active snapshot or a view.
    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError>;
    /// Creates a writable snapshot on top of a committed parent (or empty).
    fn prepare(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError>;
    /// Creates a read-only snapshot of a committed parent (or empty).
    fn view(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError>;
    /// Turns the active snapshot `key` into the committed snapshot `name` with these labels.
    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError>;
    /// Removes a snapshot that has no children.
    fn remove(&self, key: &str) -> Result<(), SnapshotError>;
    /// Every snapshot the filter matches (fields `kind`, `name`, `parent`, `labels.*`).
    fn walk(&self, filter: &berth_filters::Filter) -> Result<Vec<Info>, SnapshotError>;
    /// Removes directories no snapshot owns (left by a crash or by `remove`).
    fn cleanup(&self) -> Result<(), SnapshotError>;
}

#[cfg(test)]
mod tests {
    use berth_filters::parse;

    use super::*;

    #[test]
    fn kind_compares_with_its_lowercase_name() {
        assert!(Kind::Committed == "committed");
        assert!(Kind::View != "View");
        assert!(Kind::Active != "committed");
    }

    #[test]
    fn info_adaptor_reads_containerd_fields() {
        let info = Info {
            name: "k".into(),
            parent: Some("p".into()),
            kind: Kind::Active,
            labels: [("a.b".to_owned(), "c".to_owned())].into_iter().collect(),
            created_at: SystemTime::now(),
            updated_at: SystemTime::now(),
        };
        assert!(parse("kind==active").unwrap().matches(&info));
        assert!(!parse("kind==committed").unwrap().matches(&info));
        assert!(parse("name==k,parent==p,labels.a.b==c")
            .unwrap()
            .matches(&info));
        let orphan = Info {
            parent: None,
            ..info
        };
        assert!(!parse("parent").unwrap().matches(&orphan));
    }
}
