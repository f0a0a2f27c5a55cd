//! The shim socket's path (containerd `runtime/v2/shim/util_unix.go` `SocketAddress`).
//!
//! containerd 1.6 always uses `/run/containerd/s/<hex sha256("<address>/<ns>/<id>")>`. Berth
//! keeps exactly that when the daemon address lies under `/run/containerd` (so a real
//! containerd finds its shims where it expects them), and otherwise puts the socket in
//! `<directory of the daemon address>/s/`, so that a `berthd` (or a test daemon) on its own
//! address never writes into containerd's directories. If that path would not fit in
//! `sun_path` (108 bytes), `/run/berth/s` is used.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::constants::{CONTAINERD_SOCKET_DIR, CONTAINERD_STATE_DIR};

/// Fallback socket directory for long daemon paths.
pub const BERTH_SOCKET_DIR: &str = "/run/berth/s";
/// Longest filesystem socket path (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Go's `filepath.Clean` for absolute or relative slash paths.
pub fn clean(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// The hashed name: hex sha256 of `filepath.Join(address, ns, id)`.
pub fn socket_name(address: &str, namespace: &str, id: &str) -> String {
    let joined = clean(&format!("{address}/{namespace}/{id}"));
    hex::encode(Sha256::digest(joined.as_bytes()))
}

/// The directory for shim sockets of the daemon at `address`.
pub fn socket_dir(address: &str) -> PathBuf {
    let address = clean(address.strip_prefix("unix://").unwrap_or(address));
    let under_containerd =
        address == CONTAINERD_STATE_DIR || address.starts_with(&format!("{CONTAINERD_STATE_DIR}/"));
    if address == "." || under_containerd {
        return PathBuf::from(CONTAINERD_SOCKET_DIR);
    }
    match Path::new(&address).parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.join("s"),
        _ => PathBuf::from(CONTAINERD_SOCKET_DIR),
    }
}

/// The socket path for the shim serving `group` (the task id or its group id).
pub fn socket_path(address: &str, namespace: &str, group: &str) -> PathBuf {
    let name = socket_name(address, namespace, group);
    let path = socket_dir(address).join(&name);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Path::new(BERTH_SOCKET_DIR).join(name);
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_like_go() {
        assert_eq!(
            clean("/run//containerd/./x.sock/"),
            "/run/containerd/x.sock"
        );
        assert_eq!(clean("/a/b/../c"), "/a/c");
        assert_eq!(clean("/.."), "/");
        assert_eq!(clean(""), ".");
    }

    #[test]
    fn containerd_layout_is_kept() {
        let p = socket_path("/run/containerd/containerd.sock", "default", "t1");
        let expected = hex::encode(Sha256::digest(
            b"/run/containerd/containerd.sock/default/t1",
        ));
        assert_eq!(p, Path::new("/run/containerd/s").join(expected));
    }

    #[test]
    fn other_daemons_use_their_own_dir() {
        let p = socket_path("/tmp/berth-test/containerd.sock", "ns", "group");
        assert_eq!(p.parent().unwrap(), Path::new("/tmp/berth-test/s"));
        assert_eq!(p.file_name().unwrap().len(), 64);
        // Grouping: the same group gives the same socket.
        assert_eq!(
            p,
            socket_path("/tmp/berth-test/containerd.sock", "ns", "group")
        );
        let long = format!("/tmp/{}/d.sock", "x".repeat(60));
        assert!(socket_path(&long, "n", "i").starts_with(BERTH_SOCKET_DIR));
    }
}
