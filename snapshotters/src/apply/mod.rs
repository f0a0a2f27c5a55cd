//! Layer apply and layer diff: unpacking an OCI layer tar onto a directory (containerd
//! `archive/tar.go` `Apply`, `diff/apply`) and computing the layer between two directory trees
//! (containerd `diff/walking`); and, over a content store ([`LayerContent`]), the
//! [`LayerDiffer`] that the Diff service and in-daemon unpack call: a blob verified,
//! decompressed and applied onto mounts, or the layer between two mount sets committed.
//!
//! Safety is the first concern here: an entry never writes, links or removes outside the target
//! root. Entry names that climb above the root are refused, and symlinks met while resolving
//! parent directories are followed as if the root were `/` (containerd `fs.RootPath`).

mod compare;
mod content;
mod diff;
mod differ;
mod error;
mod path;
mod unpack;

use berth_wellknown::media_type;

pub use compare::{diff_compression, CompareOptions};
pub use content::{BlobReader, LayerContent, LayerDescriptor, LayerWriter};
pub use diff::{write_diff, DiffResult};
pub use differ::LayerDiffer;
pub use error::{ApplyError, ContentFailure, DiffError};
pub use path::resolve_in_root;
pub use unpack::apply_layer;

/// The prefix of a whiteout entry's base name: `.wh.<name>` deletes `<name>`.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The base name that marks its directory opaque: lower layers' entries are hidden.
pub const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
/// The prefix of aufs metadata entries, which are not whiteouts and are skipped.
pub const WHITEOUT_META_PREFIX: &str = ".wh..wh.";

/// How whiteouts in a layer are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// The target is a merged view or a plain directory: whited-out paths are deleted and an
    /// opaque directory loses every entry this layer did not write.
    #[default]
    Remove,
    /// The target is an overlayfs upperdir: a whiteout becomes a 0/0 character device and an
    /// opaque directory gets the xattr `trusted.overlay.opaque=y` (containerd
    /// `OverlayConvertWhiteout`).
    Overlay,
}

/// Options of [`apply_layer`].
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// How whiteouts are carried out.
    pub whiteout: WhiteoutMode,
    /// Lower directories, topmost first (overlay mode): a parent directory the layer does not
    /// list but needs takes its owner, mode, times and xattrs from the first lower that has it,
    /// as containerd's `WithParents` does.
    pub parents: Vec<std::path::PathBuf>,
}

/// What [`apply_layer`] unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyResult {
    /// `sha256:<hex>` of the uncompressed tar stream as read: the layer's diffID.
    pub diff_id: String,
    /// Bytes of the uncompressed tar stream.
    pub size: u64,
}

/// The compression a layer media type implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// A Docker type that may or may not be compressed: look at the first bytes
    /// ([`detect_compression`]), as containerd does for `rootfs.diff.tar`.
    Detect,
}

/// The compression of a layer media type (containerd `images.DiffCompression`); anything that is
/// not an OCI or Docker layer, or is wrapped in an unknown way, is NotImplemented.
pub fn media_type_compression(media_type: &str) -> Result<Compression, ApplyError> {
    let mut parts = media_type.split('+');
    let base = parts.next().unwrap_or_default();
    let ext: Vec<&str> = parts.collect();
    let unsupported = || ApplyError::UnsupportedMediaType(media_type.to_owned());
    match base {
        media_type::DOCKER_LAYER | media_type::DOCKER_LAYER_FOREIGN if ext.is_empty() => {
            Ok(Compression::Detect)
        }
        media_type::DOCKER_LAYER_GZIP | media_type::DOCKER_LAYER_FOREIGN_GZIP if ext.is_empty() => {
            Ok(Compression::Gzip)
        }
        media_type::OCI_LAYER | media_type::OCI_LAYER_NONDISTRIBUTABLE => match ext.as_slice() {
            [] => Ok(Compression::None),
            ["gzip"] => Ok(Compression::Gzip),
            ["zstd"] => Ok(Compression::Zstd),
            _ => Err(unsupported()),
        },
        _ => Err(unsupported()),
    }
}

/// The compression a stream's first bytes show (gzip and zstd magic numbers), else none.
pub fn detect_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

#[cfg(test)]
mod tests;
