//! Berth's core (containerd's `core/` packages): the stores and the machinery under every gRPC
//! service. Each area is a plain library with its plugin registration in its own `plugin.rs`.
//!
//! - [`metadata`]: the metadata store, `io.containerd.metadata.v1.sled` (containerd
//!   `core/metadata`): namespaces, images, containers, leases and the namespaced records of
//!   content and snapshots, in one sled database (schema below).
//! - [`content`]: the local content store, `io.containerd.content.v1.content` (containerd
//!   `plugins/content/local`): blobs by digest and resumable ingests by ref.
//! - [`namespaced_content`], [`namespaced_snapshots`]: the content store and the loaded
//!   snapshotters as one namespace sees them, over the metadata records (containerd
//!   `core/metadata/content.go`, `snapshot.go`); the services call these, not the backends.
//!   The metadata plugin gives them out ([`metadata::plugin::content_view`], `snapshot_view`).
//! - [`layer_content`]: the namespaced content store under the snapshotters' layer differ, for
//!   the Diff service and in-daemon unpack alike.
//! - [`transfer_local`]: the daemon's stores behind the transfer library's store traits, so
//!   that a pull inside the daemon (CRI's `PullImage`) runs without a gRPC round trip
//!   (containerd `core/transfer/local`).
//! - [`events`]: the events exchange, `io.containerd.event.v1.exchange`.
//! - [`gc`]: mark and sweep over metadata, content and snapshots, and the
//!   `io.containerd.gc.v1.scheduler` plugin that decides when to run it.
//!
//! Not here: the snapshotters and the layer applier (`snapshotters/`, the applier in
//! `snapshotters/src/apply`), the mount library (`plugins/base/mount`), the error classes
//! (`plugins/base/errdefs`, re-exported by the registry), the runtime (`runtime/manager`).
//!
//! # Metadata key schema
//!
//! One sled database, `<root>/io.containerd.metadata.v1.sled/meta.db`. Each object kind is a
//! tree; keys start with the namespace so that a namespace's objects are one prefix scan. Values
//! are JSON.
//!
//! ```text
//! tree "namespaces"  <ns>                                -> labels, count of objects by kind
//! tree "images"      <ns> 0x00 <name>                    -> Image
//! tree "containers"  <ns> 0x00 <id>                      -> Container
//! tree "content"     <ns> 0x00 <digest>                  -> BlobRecord (size, labels, times)
//! tree "snapshots"   <ns> 0x00 <snapshotter> 0x00 <key>  -> SnapshotRecord (backend key,
//!                                                           parent, kind, labels, times)
//! tree "leases"      <ns> 0x00 <id>                      -> labels, creation time, resources
//! ```
//!
//! Every mutation is one sled transaction across the trees it touches, flushed to disk before
//! the call returns, so an RPC that answered OK survives `kill -9`.

pub mod content;
pub mod error;
pub mod events;
pub mod gc;
pub mod layer_content;
pub mod metadata;
pub mod namespaced_content;
pub mod namespaced_snapshots;
pub mod transfer_local;

pub use error::MetadataError;
pub use metadata::{BlobRecord, Container, Descriptor, Image, MetadataStore, Namespace};
