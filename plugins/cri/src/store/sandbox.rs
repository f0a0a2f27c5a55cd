//! Pod sandbox records.

/// The live pod sandboxes.
#[derive(Debug, Default)]
pub struct SandboxStore {}
