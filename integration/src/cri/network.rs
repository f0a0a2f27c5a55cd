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
use std::sync::Once;

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

/// Makes the first network of a process clear what dead test processes left.
static PURGE_ONCE: Once = Once::new();

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
        PURGE_ONCE.call_once(purge_unlocked_networks);
        let start = std::process::id()
            .wrapping_mul(31)
            .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) * 7);
        for step in 0..NETWORKS {
            let index = (start + step) % NETWORKS;
            let lock = lock_file(index)
                .unwrap_or_else(|| panic!("cannot open the lock of network {index} in {LOCK_DIR}"));
            if lock.try_lock().is_err() {
                continue;
            }
            let name = format!("berth-test-{index}");
            let bridge = format!("bcri{index}");
            // A bridge or rules left by a killed test process would carry the old addresses:
            // start clean.
            delete_link(&bridge);
            purge_rules(&name);
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
        purge_rules(&self.name);
        let _ = fs::remove_file(&self.conflist);
    }
}

/// The lock file of network `index`, opened (not locked).
fn lock_file(index: u32) -> Option<File> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(Path::new(LOCK_DIR).join(format!("{index}.lock")))
        .ok()
}

/// Purges the rules and bridges of every test network that iptables still mentions but no
/// live process holds (its lock is free): what killed test processes, or pods whose CNI DEL
/// never ran, left behind.
fn purge_unlocked_networks() {
    let mut indexes = std::collections::BTreeSet::new();
    for table in ["nat", "filter"] {
        let Ok(out) = Command::new("iptables-save").args(["-t", table]).output() else {
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        for piece in text.split("\\\"berth-test-").skip(1) {
            let digits: String = piece.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(index) = digits.parse::<u32>() {
                indexes.insert(index);
            }
        }
    }
    for index in indexes {
        let Some(lock) = lock_file(index) else {
            continue;
        };
        if lock.try_lock().is_ok() {
            purge_rules(&format!("berth-test-{index}"));
            delete_link(&format!("bcri{index}"));
        }
    }
}

/// Deletes the iptables rules the CNI plugins made for network `name` and never removed (a
/// pod whose CNI DEL did not run): every rule whose comment names the network, in the `nat` and
/// `filter` tables, and the `CNI-*` chains those rules jump to. Best effort.
fn purge_rules(name: &str) {
    // iptables-save writes the comment as `name: \"<network>\" id: ...` (and `dnat name:` for
    // portmap): the escaped quotes keep `berth-test-5` from matching `berth-test-56`.
    let needle = format!("\\\"{name}\\\"");
    for table in ["nat", "filter"] {
        let Ok(out) = Command::new("iptables-save").args(["-t", table]).output() else {
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let mut deletes = Vec::new();
        let mut chains = Vec::new();
        for rule in text
            .lines()
            .filter(|l| l.starts_with("-A ") && l.contains(&needle))
        {
            deletes.push(format!("-D {}", &rule[3..]));
            if let Some(target) = rule.split(" -j ").nth(1) {
                let chain = target.split_whitespace().next().unwrap_or_default();
                let shared = chain.starts_with("CNI-HOSTPORT-") || chain == "CNI-FORWARD";
                if chain.starts_with("CNI-") && !shared && !chains.contains(&chain.to_owned()) {
                    chains.push(chain.to_owned());
                }
            }
        }
        if deletes.is_empty() {
            continue;
        }
        let mut script = format!("*{table}\n{}\n", deletes.join("\n"));
        for chain in &chains {
            script.push_str(&format!("-F {chain}\n-X {chain}\n"));
        }
        script.push_str("COMMIT\n");
        restore(&script);
    }
}

/// Feeds `script` to `iptables-restore --noflush` (best effort).
fn restore(script: &str) {
    use std::io::Write;
    let child = Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Ok(mut child) = child {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(script.as_bytes());
        }
        let _ = child.wait();
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

/// A TCP port on the host's loopback that was free a moment ago (for a server in a
/// host-network pod).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
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
