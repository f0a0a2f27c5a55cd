//! The mark phase: a depth-first walk from the roots over the references labels make
//! (containerd `gc.Tricolor` over `metadata/gc.go` `references`).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use super::error::{meta, GcError};
use super::labels::label_refs;
use crate::error::MetadataError;
use crate::metadata::MetadataStore;

/// One object the collector can keep or remove.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// A namespace's record of a blob.
    Content {
        /// The namespace.
        namespace: String,
        /// The blob's digest.
        digest: String,
    },
    /// A namespace's snapshot in one snapshotter.
    Snapshot {
        /// The namespace.
        namespace: String,
        /// The snapshotter.
        snapshotter: String,
        /// The snapshot key.
        key: String,
    },
}

impl Node {
    /// A blob record.
    pub fn content(namespace: &str, digest: &str) -> Node {
        Node::Content {
            namespace: namespace.to_owned(),
            digest: digest.to_owned(),
        }
    }

    /// A snapshot.
    pub fn snapshot(namespace: &str, snapshotter: &str, key: &str) -> Node {
        Node::Snapshot {
            namespace: namespace.to_owned(),
            snapshotter: snapshotter.to_owned(),
            key: key.to_owned(),
        }
    }
}

/// Everything reachable from the roots: what a sweep must keep.
#[derive(Debug, Clone, Default)]
pub struct MarkSet {
    nodes: HashSet<Node>,
}

impl MarkSet {
    /// True when the node is reachable.
    pub fn contains(&self, node: &Node) -> bool {
        self.nodes.contains(node)
    }

    /// True when namespace `ns` must keep its record of `digest`.
    pub fn has_content(&self, ns: &str, digest: &str) -> bool {
        self.contains(&Node::content(ns, digest))
    }

    /// True when namespace `ns` must keep snapshot `key` of `snapshotter`.
    pub fn has_snapshot(&self, ns: &str, snapshotter: &str, key: &str) -> bool {
        self.contains(&Node::snapshot(ns, snapshotter, key))
    }

    /// The marked snapshots of one snapshotter, as `(namespace, key)`.
    pub fn snapshots_of<'a>(
        &'a self,
        snapshotter: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.nodes.iter().filter_map(move |n| match n {
            Node::Snapshot {
                namespace,
                snapshotter: sn,
                key,
            } if sn == snapshotter => Some((namespace.as_str(), key.as_str())),
            _ => None,
        })
    }

    /// How many nodes are marked.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when nothing is marked.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// An error a snapshotter's collector hook returns.
pub type SweepError = Box<dyn std::error::Error + Send + Sync>;

/// What the collector needs to know about one snapshot to follow its references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotRefs {
    /// The parent's key, if any (a parent is kept as long as a child is).
    pub parent: Option<String>,
    /// The snapshot's labels (`containerd.io/gc.ref.*`).
    pub labels: BTreeMap<String, String>,
}

/// A snapshotter's part in a collection: its roots, the references of its snapshots, and the
/// sweep of what is not marked (containerd `metadata/snapshot.go` `garbageCollect`). The
/// collector takes a list of these; it is empty until snapshot metadata exists.
pub trait SnapshotSweeper: Send + Sync + fmt::Debug {
    /// The snapshotter's name, as in `snapshots/<name>` lease resources and
    /// `containerd.io/gc.ref.snapshot.<name>` labels.
    fn snapshotter(&self) -> &str;

    /// Snapshots that are roots by themselves (`containerd.io/gc.root`, a container's
    /// snapshot), as `(namespace, key)`.
    fn roots(&self) -> Result<Vec<(String, String)>, SweepError>;

    /// The parent and labels of a snapshot; `None` if it does not exist.
    fn references(&self, ns: &str, key: &str) -> Result<Option<SnapshotRefs>, SweepError>;

    /// Removes every snapshot of this snapshotter that `marked` does not hold and returns how
    /// many went.
    fn sweep(&self, marked: &MarkSet) -> Result<usize, SweepError>;
}

/// The walk in progress. A node reached "flat" (held by a `containerd.io/gc.flat` lease) is
/// kept without following its labels; reached both ways, it is followed, as in containerd where
/// flat and plain visits are distinct until marked.
#[derive(Debug)]
pub(crate) struct Marker<'a> {
    meta: &'a MetadataStore,
    sweepers: &'a [Arc<dyn SnapshotSweeper>],
    seen: HashSet<(Node, bool)>,
    gray: Vec<(Node, bool)>,
    marked: MarkSet,
}

impl<'a> Marker<'a> {
    pub(crate) fn new(meta: &'a MetadataStore, sweepers: &'a [Arc<dyn SnapshotSweeper>]) -> Self {
        Marker {
            meta,
            sweepers,
            seen: HashSet::new(),
            gray: Vec::new(),
            marked: MarkSet::default(),
        }
    }

    /// Adds a root (or a reference) to visit.
    pub(crate) fn push(&mut self, node: Node, flat: bool) {
        if self.seen.insert((node.clone(), flat)) {
            self.gray.push((node, flat));
        }
    }

    /// Adds what an object's labels in namespace `ns` reference.
    pub(crate) fn push_label_refs(&mut self, ns: &str, labels: &BTreeMap<String, String>) {
        let refs = label_refs(labels);
        for digest in refs.content {
            self.push(Node::content(ns, &digest), false);
        }
        for (snapshotter, key) in refs.snapshots {
            self.push(Node::snapshot(ns, &snapshotter, &key), false);
        }
    }

    /// Visits everything reachable and returns the mark set. Records are read afresh here, not
    /// from an earlier scan, so a label added since then is followed.
    pub(crate) fn run(mut self) -> Result<MarkSet, GcError> {
        while let Some((node, flat)) = self.gray.pop() {
            match &node {
                Node::Content { namespace, digest } if !flat => {
                    match self.meta.get_blob(namespace, digest) {
                        Ok(rec) => self.push_label_refs(namespace, &rec.labels),
                        // A reference to a blob the namespace does not hold, or to something
                        // that is not a digest at all, leads nowhere.
                        Err(
                            MetadataError::ContentNotFound(_)
                            | MetadataError::InvalidDigest(_)
                            | MetadataError::Identifier(_),
                        ) => {}
                        Err(e) => return Err(meta("read blob record")(e)),
                    }
                }
                Node::Content { .. } => {}
                Node::Snapshot {
                    namespace,
                    snapshotter,
                    key,
                } => {
                    let sweeper = self
                        .sweepers
                        .iter()
                        .find(|s| s.snapshotter() == snapshotter);
                    if let Some(sweeper) = sweeper {
                        let refs = sweeper.references(namespace, key).map_err(|source| {
                            GcError::Snapshots {
                                snapshotter: snapshotter.clone(),
                                source,
                            }
                        })?;
                        if let Some(refs) = refs {
                            if let Some(parent) = &refs.parent {
                                // The parent inherits flatness; labels are not followed flat.
                                self.push(Node::snapshot(namespace, snapshotter, parent), flat);
                            }
                            if !flat {
                                self.push_label_refs(namespace, &refs.labels);
                            }
                        }
                    }
                }
            }
            self.marked.nodes.insert(node);
        }
        Ok(self.marked)
    }
}
