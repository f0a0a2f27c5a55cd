//! Berth's core plugins: the metadata store (sled), and later the content store, events
//! exchange, leases and garbage collection — containerd's `core/` packages.
//!
//! # Metadata key schema
//!
//! One sled database, `<root>/io.containerd.metadata.v1.sled/meta.db`. Each object kind is a
//! tree; keys start with the namespace so that a namespace's objects are one prefix scan:
//!
//! ```text
//! tree "namespaces"   <ns>                          -> NamespaceRecord (JSON: labels)
//! tree "images"       <ns> 0x00 <name>              -> image record       (content issue)
//! tree "containers"   <ns> 0x00 <id>                -> container record   (runtime issue)
//! tree "content"      <ns> 0x00 <digest>            -> blob record        (content issue)
//! tree "snapshots"    <ns> 0x00 <snapshotter> 0x00 <key> -> snapshot ref  (snapshot issue)
//! tree "leases"       <ns> 0x00 <id>                -> lease record       (content issue)
//! ```
//!
//! Every mutation is one sled transaction across the trees it touches, flushed to disk before
//! the call returns, so an RPC that answered OK survives `kill -9`.

pub mod content;
pub mod error;
pub mod events;
pub mod gc;
pub mod metadata;
pub mod namespaced_content;
pub mod namespaced_snapshots;

pub use error::MetadataError;
pub use metadata::{BlobRecord, Container, Descriptor, Image, MetadataStore, Namespace};
