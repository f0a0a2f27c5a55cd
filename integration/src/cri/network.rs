//! A CNI network per test daemon: a bridge conflist on a private /24 with its own bridge name,
//! so that daemons of parallel tests (and of other test processes) never share a bridge, a
//! subnet or an IPAM store.
//!
//! A network index is taken by locking `/tmp/berth-cri-nets/<index>.lock` for the life of the
//! [`TestNetwork`]; index `i` gives subnet `10.(100 + i / 256).(i % 256).0/24` and bridge
//! `bcri<i>`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::json;

/// Where Debian's `containernetworking-plugins` installs the plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// The CNI plugins the conflist and the runtime use.
pub const CNI_PLUGINS: [&str; 4] = ["bridge", "host-local", "portmap", "loopback"];

/// The CNI spec version of the conflist (containernetworking-plugins 1.1 speaks it).
pub const CNI_VERSION: &str = "1.0.0";

/// Directory of the lock files that hand out network indexes.
const LOCK_DIR: &str = "/tmp/berth-cri-nets";

/// How many networks exist (4 × 256 /24s in 10.100.0.0/14).
const NETWORKS: u32 = 1024;

/// Spreads the first index tried by the networks of one process.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// One private bridge network; its lock is held until drop, which also deletes the bridge.
#[derive(Debug)]
pub struct TestNetwork {
    index: u32,
    name: String,
    bridge: String,
    conflist: PathBuf,
    /// Held (locked) for the life of the network.
    _lock: File,
}

impl TestNetwork {
    /// Takes a free network index and writes its conflist (`10-<name>.conflist`) into
    /// `conf_dir`, with the host-local IPAM store under `ipam_dir`. Panics when no index is free.
    pub fn create(conf_dir: &Path, ipam_dir: &Path) -> Self {
        fs::create_dir_all(LOCK_DIR).unwrap_or_else(|e| panic!("create {LOCK_DIR}: {e}"));
        let start = std::process::id()
            .wrapping_mul(31)
            .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) * 7);
        for step in 0..NETWORKS {
            let index = (start + step) % NETWORKS;
            let path = Path::new(LOCK_DIR).join(format!("{index}.lock"));
            let lock = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            if lock.try_lock().is_err() {
                continue;
            }
            let name = format!("berth-test-{index}");
            let bridge = format!("bcri{index}");
            // A bridge left by a killed test process would carry the old addresses: start clean.
            delete_link(&bridge);
            fs::create_dir_all(conf_dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", conf_dir.display()));
            let conflist = conf_dir.join(format!("10-{name}.conflist"));
            let network = Self {
                index,
                name,
                bridge,
                conflist,
                _lock: lock,
            };
            let text = serde_json::to_string_pretty(&network.conflist_json(ipam_dir))
                .expect("a JSON value serializes");
            fs::write(&network.conflist, text)
                .unwrap_or_else(|e| panic!("write {}: {e}", network.conflist.display()));
            return network;
        }
        panic!("all {NETWORKS} test networks under {LOCK_DIR} are taken");
    }

    /// The conflist: `bridge` (gateway, IP masquerade, hairpin) with `host-local` IPAM on the
    /// subnet, then `portmap` for hostPort mappings. Loopback is the runtime's business, as in
    /// containerd (go-cni's loopback network).
    fn conflist_json(&self, ipam_dir: &Path) -> serde_json::Value {
        json!({
            "cniVersion": CNI_VERSION,
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.subnet(), "gateway": self.gateway()}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": ipam_dir,
                    }
                },
                {
                    "type": "portmap",
                    "capabilities": {"portMappings": true}
                }
            ]
        })
    }

    /// The network's name in the conflist (`berth-test-<index>`); the bridge plugin's iptables
    /// rules carry it in their comments.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Linux bridge (`bcri<index>`).
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The conflist file.
    pub fn conflist(&self) -> &Path {
        &self.conflist
    }

    /// The first three octets with a trailing dot (`10.100.7.`): every pod IP starts so.
    pub fn prefix(&self) -> String {
        format!("10.{}.{}.", 100 + self.index / 256, self.index % 256)
    }

    /// The subnet in CIDR form (`10.100.7.0/24`).
    pub fn subnet(&self) -> String {
        format!("{}0/24", self.prefix())
    }

    /// The bridge's address, the pods' default gateway (`.1`).
    pub fn gateway(&self) -> String {
        format!("{}1", self.prefix())
    }

    /// True when `ip` is in the subnet.
    pub fn contains(&self, ip: &str) -> bool {
        ip.strip_prefix(&self.prefix())
            .is_some_and(|last| last.parse::<u8>().is_ok())
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        delete_link(&self.bridge);
        let _ = fs::remove_file(&self.conflist);
    }
}

/// Deletes network link `name` if it exists (best effort: `ip link del`).
fn delete_link(name: &str) {
    let _ = Command::new("ip")
        .args(["link", "del", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_do_not_collide_and_write_a_conflist() {
        let dir = tempfile::tempdir().unwrap();
        let a = TestNetwork::create(&dir.path().join("a"), &dir.path().join("ipam"));
        let b = TestNetwork::create(&dir.path().join("b"), &dir.path().join("ipam"));
        assert_ne!(a.subnet(), b.subnet());
        assert_ne!(a.bridge(), b.bridge());
        assert!(a.bridge().len() <= 15, "Linux interface names are short");
        let conf: serde_json::Value =
            serde_json::from_slice(&fs::read(a.conflist()).unwrap()).unwrap();
        assert_eq!(conf["plugins"][0]["bridge"], a.bridge());
        assert_eq!(
            conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            a.subnet()
        );
        assert!(a.contains(&format!("{}23", a.prefix())));
        assert!(!a.contains(&format!("{}230.1", a.prefix())));
    }
}
