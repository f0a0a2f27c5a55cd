//! The one list of every plugin built into `berthd`, in registration order.

use berth_registry::{Registry, RegistryError};

/// Registers all built-in plugins.
pub fn register_all(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register(berth_core::content::plugin::registration())?;
    registry.register(berth_snapshotters::overlay::plugin::registration())?;
    registry.register(berth_snapshotters::native::plugin::registration())?;
    registry.register(berth_snapshotters::btrfs::plugin::registration())?;
    registry.register(berth_snapshotters::devmapper::plugin::registration())?;
    registry.register(berth_core::metadata::plugin::registration())?;
    registry.register(berth_core::events::plugin::registration())?;
    registry.register(berth_core::gc::plugin::registration())?;
    berth_services::register(registry)?;
    // After the services: the Tasks service requires it, so it still loads just before Tasks.
    registry.register(berth_runtime::plugin::registration())?;
    // After the runtime it drives.
    registry.register(berth_cri::registration())?;
    // Restarts tasks through the runtime and the metadata store.
    registry.register(berth_restart::plugin::registration())?;
    // containerd's OTLP span processor and tracing plugins (the exporter itself is set up with
    // logging, before any plugin loads).
    crate::tracing_otel::register(registry)?;
    Ok(())
}
