//! Garbage collection (containerd `gc/`, `metadata/gc.go`, `gc/scheduler/`): a mark and sweep
//! over the metadata store, then over the content store's bytes and ingests.
//!
//! Roots are images, unexpired leases, `containerd.io/gc.root` blobs, recent or leased ingests
//! and whatever a snapshotter's [`SnapshotSweeper`] names; references are the
//! `containerd.io/gc.ref.*` labels. [`collect`] is one blocking collection; [`GcScheduler`]
//! decides when to run one and serializes them.

mod collect;
mod error;
mod labels;
mod mark;
pub mod plugin;
mod scheduler;
pub mod time;

pub use collect::{
    collect, collect_with, ingest_ref, GcOptions, GcReport, BLOB_GRACE, INGEST_EXPIRY,
};
pub use error::GcError;
pub use labels::{label_refs, LabelRefs};
pub use mark::{MarkSet, Node, SnapshotRefs, SnapshotSweeper, SweepError};
pub use scheduler::{GcScheduler, GcTotals, Settings};
