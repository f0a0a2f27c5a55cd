//! Berth's gRPC services: one module per containerd API service. Each service does only
//! namespace, validate, call, convert and map the error; the work lives in the core crates.

pub mod blocking;
pub mod container_listing;
pub mod containers;
pub mod containers_list_route;
pub mod content;
pub mod convert;
pub mod diff;
pub mod edge;
pub mod events;
pub mod grpc;
pub mod health;
pub mod images;
pub mod introspection;
pub mod leases;
pub mod namespace;
pub mod namespaces;
pub mod router;
pub mod rpc_span;
pub mod snapshots;
pub mod status;
pub mod streaming;
pub mod tasks;
pub mod transfer;
pub mod ttrpc_events;
pub mod version;

pub use grpc::GrpcService;

use berth_registry::{Registry, RegistryError};

/// Registers every gRPC service plugin of this crate.
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register(version::registration())?;
    registry.register(introspection::registration())?;
    registry.register(namespaces::registration())?;
    registry.register(health::registration())?;
    registry.register(content::registration())?;
    registry.register(images::registration())?;
    registry.register(containers::registration())?;
    registry.register(snapshots::registration())?;
    registry.register(diff::registration())?;
    registry.register(leases::registration())?;
    registry.register(events::registration())?;
    registry.register(tasks::registration())?;
    registry.register(streaming::manager_registration())?;
    registry.register(streaming::registration())?;
    registry.register(transfer::registration())?;
    Ok(())
}
