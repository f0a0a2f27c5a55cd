//! ImageFsInfo: the filesystem of the CRI snapshotter's root (`<root>/io.containerd.
//! snapshotter.v1.<snapshotter>`, containerd's `imageFSPath`), with the bytes and inodes its
//! snapshots use.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_proto::runtime::v1::{
    FilesystemIdentifier, FilesystemUsage, ImageFsInfoRequest, ImageFsInfoResponse, UInt64Value,
};

use crate::blocking::blocking;
use crate::error::{CriError, Result};
use crate::service::Cri;

/// The plugin type prefix of snapshotter directories under the daemon root.
const SNAPSHOTTER_DIR_PREFIX: &str = "io.containerd.snapshotter.v1.";

/// ImageFsInfo.
#[tracing::instrument(skip_all)]
pub async fn image_fs_info(cri: &Cri, _req: ImageFsInfoRequest) -> Result<ImageFsInfoResponse> {
    let root = snapshotter_root(cri);
    let dir = root.clone();
    let usage = blocking(move || disk_usage(&dir)).await?;
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    Ok(ImageFsInfoResponse {
        image_filesystems: vec![FilesystemUsage {
            timestamp,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: root.display().to_string(),
            }),
            used_bytes: Some(UInt64Value { value: usage.bytes }),
            inodes_used: Some(UInt64Value {
                value: usage.inodes,
            }),
        }],
    })
}

/// `<daemon root>/io.containerd.snapshotter.v1.<snapshotter>`; the CRI root is
/// `<daemon root>/io.containerd.grpc.v1.cri`.
fn snapshotter_root(cri: &Cri) -> PathBuf {
    let daemon_root = cri.root.parent().unwrap_or(&cri.root);
    daemon_root.join(format!(
        "{SNAPSHOTTER_DIR_PREFIX}{}",
        cri.config.containerd.snapshotter
    ))
}

/// Bytes (allocated blocks) and distinct inodes under a directory.
#[derive(Debug, Default, PartialEq, Eq)]
struct Usage {
    bytes: u64,
    inodes: u64,
}

/// Walks `root` as containerd's `fs.DiskUsage` does: allocated blocks and distinct inodes,
/// hard links counted once, without following symlinks or entering other filesystems (a
/// mounted container rootfs). A missing root uses nothing.
fn disk_usage(root: &Path) -> Result<Usage> {
    let top = match std::fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Usage::default()),
        Err(e) => return Err(CriError::io("stat", root, e)),
    };
    let dev = top.dev();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut usage = Usage::default();
    let mut count = |m: &std::fs::Metadata, usage: &mut Usage| {
        if seen.insert(m.ino()) {
            usage.inodes += 1;
            usage.bytes += m.blocks() * 512;
        }
    };
    count(&top, &mut usage);
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            // Removed while walking (a snapshot being deleted).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(CriError::io("read dir", &dir, e)),
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let Ok(m) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if m.dev() != dev {
                continue;
            }
            count(&m, &mut usage);
            if m.is_dir() {
                pending.push(path);
            }
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_blocks_and_distinct_inodes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sn");
        assert_eq!(disk_usage(&root).unwrap(), Usage::default());
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), vec![1u8; 10_000]).unwrap();
        std::fs::hard_link(root.join("a/b/f"), root.join("a/g")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("l")).unwrap();
        let u = disk_usage(&root).unwrap();
        // sn, a, b, f (twice linked), l.
        assert_eq!(u.inodes, 5);
        assert!(u.bytes >= 10_000, "{u:?}");
    }
}
