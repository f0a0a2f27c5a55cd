//! Image transfer for Berth: registry pull (with unpack) and push, as containerd's client does
//! for `ctr images pull` and `ctr images push`.
//!
//! The logic works over the store traits of [`store`] — content store, snapshotter, diff
//! applier, image store and lease manager — so that one implementation serves two callers:
//! the `berth` CLI, which passes the gRPC proxies of [`grpc`] (as containerd's client uses its
//! content and snapshot proxies), and `berthd` itself (the daemon-side pull the CRI image
//! service needs), which will pass its local stores.
//!
//! The registry protocol (token and basic auth, manifest negotiation, ranged blob reads,
//! chunked uploads) comes from the [`oci_client`] crate, used with rustls: it is the registry
//! client of the `oci-distribution` lineage maintained under the ORAS project, follows the OCI
//! distribution spec closely (including its workarounds for registries that stray from it),
//! verifies digests of what it downloads, and offers the raw-manifest and partial-blob calls a
//! containerd-style content store needs, so Berth does not carry a registry client of its own.
//!
//! Entry points: [`pull()`] and [`push()`].
//!
//! ```no_run
//! # async fn demo(channel: tonic::transport::Channel) -> Result<(), berth_transfer::TransferError> {
//! use berth_transfer::{grpc::GrpcStores, pull, PullOptions};
//! let proxies = GrpcStores::new(channel, "overlayfs");
//! let image = pull("busybox", &PullOptions::default(), &proxies.stores("default")).await?;
//! println!("{} {}", image.name, image.target.digest);
//! # Ok(()) }
//! ```

pub mod archive;
pub mod error;
pub mod grpc;
pub mod hosts;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod push;
mod refusal;
pub mod registry;
pub mod store;
pub mod types;
pub mod unpack;

pub use error::{StoreError, TransferError};
pub use hosts::{registry_hosts, RegistryHost};
pub use progress::{NoProgress, Progress};
pub use pull::{pull, PullOptions};
pub use push::{push, PushOptions};
pub use registry::{ImageRef, RegistryOptions};
pub use store::{
    open_ingest_retrying, Applier, ContentStore, ContentWriter, Cx, ImageStore, Ingest,
    LeaseManager, OpenAttempt, SnapshotStore, Stores,
};
pub use types::{BlobInfo, Descriptor, Image, IngestStatus, Mount, Platform};
