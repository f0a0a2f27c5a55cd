//! Container records.

/// The live CRI containers.
#[derive(Debug, Default)]
pub struct ContainerStore {}
