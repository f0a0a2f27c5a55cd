//! Progress reporting, so that the CLI can draw a bar per blob (ctr's `content.Display`).

use std::fmt;

use crate::types::Descriptor;

/// Receives the progress of a transfer. Calls come from the transfer's task, interleaved across
/// the blobs moving in parallel; every method has an empty default.
pub trait Progress: Send + Sync {
    /// The transfer of `desc` (`desc.size` bytes) starts.
    fn on_start(&self, desc: &Descriptor) {
        let _ = desc;
    }

    /// `n` more bytes of `desc` are stored. A resumed download first reports the bytes an
    /// earlier, interrupted transfer already stored.
    fn on_bytes(&self, desc: &Descriptor, n: u64) {
        let _ = (desc, n);
    }

    /// `desc` is complete (committed on pull, uploaded on push).
    fn on_done(&self, desc: &Descriptor) {
        let _ = desc;
    }

    /// `desc` needed no transfer: the content store (pull) or the registry (push) has it.
    fn on_exists(&self, desc: &Descriptor) {
        let _ = desc;
    }

    /// The layer `desc` is unpacked into the snapshotter (or its snapshot already existed).
    fn on_unpacked(&self, desc: &Descriptor) {
        let _ = desc;
    }
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Debug output for `dyn Progress` fields.
pub(crate) struct ShowProgress;

impl fmt::Debug for ShowProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<progress>")
    }
}
