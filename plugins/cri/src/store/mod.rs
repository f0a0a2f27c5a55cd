//! The CRI's records of sandboxes and containers: in memory for the calls, persisted in the
//! metadata store (container labels and extensions, as containerd's CRI) and in status files
//! under the CRI root, and rebuilt from them at start.

pub mod container;
pub mod sandbox;

/// Both record sets.
#[derive(Debug, Default)]
pub struct Stores {
    /// Pod sandboxes.
    pub sandboxes: sandbox::SandboxStore,
    /// Containers.
    pub containers: container::ContainerStore,
}
