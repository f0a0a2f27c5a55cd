//! `berth network ls|create|rm`: CNI network config lists in a config directory, as nerdctl
//! keeps them (`/etc/cni/net.d/nerdctl-<name>.conflist`; berth's are `berth-<name>.conflist`).
//!
//! The default network `bridge` (bridge `berth0`, 10.4.0.0/24: clear of the CRI's 10.88.0.0/16)
//! is written on first use. A network is a `bridge` + `host-local` + `portmap` list; `berth run
//! --net NAME` attaches containers to it through OCI hooks (see [`crate::commands::internal`]).
//! Which networks a container is on is its `nerdctl/networks` label, so `rm` of a network a
//! container of any namespace still names is refused.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use berth_cni::NetworkList;
use berth_proto::containerd::services::containers::v1::ListContainersRequest;
use berth_proto::containerd::services::namespaces::v1::ListNamespacesRequest;
use clap::Subcommand;
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::client::Client;

/// The default CNI config directory.
pub const DEFAULT_NETCONF_PATH: &str = "/etc/cni/net.d";
/// The default CNI plugin directory (Debian's containernetworking-plugins).
pub const DEFAULT_CNI_PATH: &str = "/usr/lib/cni";
/// The default network's name.
pub const DEFAULT_NETWORK: &str = "bridge";
/// The default network's subnet.
pub const DEFAULT_SUBNET: &str = "10.4.0.0/24";
/// The label naming a container's networks (JSON array), as nerdctl's.
pub const NETWORKS_LABEL: &str = "nerdctl/networks";
/// The conflist file prefix.
const FILE_PREFIX: &str = "berth-";

/// Where CNI configs and plugins are (`--cni-netconfpath`, `--cni-path`, as nerdctl's).
#[derive(Debug, Clone, clap::Args)]
pub struct CniFlags {
    /// CNI network config directory.
    #[arg(long, env = "BERTH_CNI_NETCONFPATH", default_value = DEFAULT_NETCONF_PATH)]
    pub cni_netconfpath: PathBuf,
    /// CNI plugin binary directory.
    #[arg(long, env = "BERTH_CNI_PATH", default_value = DEFAULT_CNI_PATH)]
    pub cni_path: PathBuf,
}

/// `network` verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List networks.
    #[command(visible_alias = "list")]
    Ls {
        #[command(flatten)]
        cni: CniFlags,
        /// Print only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Create a bridge network.
    Create {
        #[command(flatten)]
        cni: CniFlags,
        /// Subnet in CIDR form (default: a free 10.4.N.0/24).
        #[arg(long)]
        subnet: Option<String>,
        /// Network name.
        name: String,
    },
    /// Remove networks no container is on.
    #[command(visible_alias = "remove")]
    Rm {
        #[command(flatten)]
        cni: CniFlags,
        /// Network names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

impl Command {
    /// Runs the verb.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Command::Ls { cni, quiet } => {
                ensure_default(&cni.cni_netconfpath)?;
                let lists = list(&cni.cni_netconfpath)?;
                if quiet {
                    for l in &lists {
                        println!("{}", l.name);
                    }
                    return Ok(());
                }
                println!("{:<20} {:<18} FILE", "NAME", "SUBNET");
                for l in &lists {
                    println!(
                        "{:<20} {:<18} {}",
                        l.name,
                        subnet_of(l).unwrap_or_default(),
                        l.source.display()
                    );
                }
                Ok(())
            }
            Command::Create { cni, subnet, name } => {
                create(&cni.cni_netconfpath, &name, subnet.as_deref())?;
                println!("{name}");
                Ok(())
            }
            Command::Rm { cni, names } => {
                let mut failures = crate::commands::Failures::default();
                for name in names {
                    match remove(client, &cni.cni_netconfpath, &name).await {
                        Ok(()) => println!("{name}"),
                        Err(e) => failures.add(e),
                    }
                }
                failures.finish()
            }
        }
    }
}

/// A network name: letters, digits, `_`, `.`, `-`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        bail!(
            "invalid network name {name:?}: want [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64 characters"
        );
    }
    Ok(())
}

fn file_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{FILE_PREFIX}{name}.conflist"))
}

/// Every network list in `dir` (berth's and others'), by name.
pub fn list(dir: &Path) -> Result<Vec<NetworkList>> {
    let lists = match berth_cni::load_networks(dir, usize::MAX) {
        Ok(l) => l,
        Err(_) if !dir.exists() => Vec::new(),
        Err(berth_cni::CniError::Network(m)) if m.contains("not initialized") => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut lists = lists;
    lists.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(lists)
}

/// The network list called `name` in `dir` (the default network is written when missing).
pub fn find(dir: &Path, name: &str) -> Result<NetworkList> {
    if name == DEFAULT_NETWORK {
        ensure_default(dir)?;
    }
    list(dir)?
        .into_iter()
        .find(|l| l.name == name)
        .ok_or_else(|| anyhow::anyhow!("network {name:?} not found in {}", dir.display()))
}

fn subnet_of(l: &NetworkList) -> Option<String> {
    l.plugins.iter().find_map(|p| {
        let ipam = p.get("ipam")?;
        ipam.get("ranges")
            .and_then(|r| r[0][0]["subnet"].as_str())
            .or_else(|| ipam.get("subnet").and_then(Value::as_str))
            .map(str::to_owned)
    })
}

/// The bridge device of network `name` (`berth0` for the default, else `br-` and 12 hex digits
/// of the name's SHA-256, as Docker names its bridges).
pub fn bridge_name(name: &str) -> String {
    if name == DEFAULT_NETWORK {
        return "berth0".to_owned();
    }
    let digest = sha2::Sha256::digest(name.as_bytes());
    format!("br-{}", &hex::encode(digest)[..12])
}

fn conflist(name: &str, subnet: &str) -> Result<Value> {
    let (addr, prefix) = subnet
        .split_once('/')
        .with_context(|| format!("invalid subnet {subnet:?}: want CIDR such as 10.4.1.0/24"))?;
    let ip: std::net::Ipv4Addr = addr
        .parse()
        .with_context(|| format!("invalid subnet {subnet:?}: not an IPv4 address"))?;
    let prefix: u32 = prefix
        .parse()
        .ok()
        .filter(|p| (8..=30).contains(p))
        .with_context(|| format!("invalid subnet {subnet:?}: prefix must be 8..30"))?;
    let mask = u32::MAX << (32 - prefix);
    let net = u32::from(ip) & mask;
    let gateway = std::net::Ipv4Addr::from(net + 1);
    let subnet = format!("{}/{prefix}", std::net::Ipv4Addr::from(net));
    Ok(json!({
        "cniVersion": "1.0.0",
        "name": name,
        "nerdctlID": hex::encode(sha2::Sha256::digest(name.as_bytes())),
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge_name(name),
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet, "gateway": gateway.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    }))
}

/// Writes network `name` (a bridge on `subnet`, or a free 10.4.N.0/24).
pub fn create(dir: &Path, name: &str, subnet: Option<&str>) -> Result<PathBuf> {
    validate_name(name)?;
    let existing = list(dir)?;
    if existing.iter().any(|l| l.name == name) {
        bail!("network {name:?} already exists");
    }
    let used: Vec<String> = existing.iter().filter_map(subnet_of).collect();
    let subnet = match subnet {
        Some(s) => s.to_owned(),
        None => (1..=255)
            .map(|n| format!("10.4.{n}.0/24"))
            .find(|s| !used.contains(s))
            .context("no free 10.4.N.0/24 subnet left")?,
    };
    let doc = conflist(name, &subnet)?;
    if let Some(s) = doc["plugins"][0]["ipam"]["ranges"][0][0]["subnet"].as_str() {
        if used.iter().any(|u| u == s) {
            bail!("subnet {s} is used by another network");
        }
    }
    write(dir, name, &doc)
}

fn write(dir: &Path, name: &str, doc: &Value) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = file_of(dir, name);
    let tmp = dir.join(format!(".{FILE_PREFIX}{name}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(doc)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Writes the default network when no list is called `bridge`.
pub fn ensure_default(dir: &Path) -> Result<()> {
    if list(dir)?.iter().any(|l| l.name == DEFAULT_NETWORK) {
        return Ok(());
    }
    let doc = conflist(DEFAULT_NETWORK, DEFAULT_SUBNET)?;
    write(dir, DEFAULT_NETWORK, &doc).map(|_| ())
}

/// The networks a container's labels name.
pub fn container_networks(labels: &std::collections::HashMap<String, String>) -> Vec<String> {
    labels
        .get(NETWORKS_LABEL)
        .and_then(|t| serde_json::from_str::<Vec<String>>(t).ok())
        .unwrap_or_default()
}

async fn remove(client: &Client, dir: &Path, name: &str) -> Result<()> {
    validate_name(name)?;
    if name == DEFAULT_NETWORK {
        bail!("network {name:?} is the default network and cannot be removed");
    }
    let net = find(dir, name)?;
    let path = file_of(dir, name);
    if net.source != path {
        bail!(
            "network {name:?} is defined in {}, not by berth: remove that file",
            net.source.display()
        );
    }
    // In use: any container, in any namespace, naming it.
    let namespaces = client
        .namespaces()
        .list(client.req(ListNamespacesRequest::default()))
        .await?
        .into_inner()
        .namespaces;
    let mut users = Vec::new();
    for ns in namespaces {
        let mut scoped = client.clone();
        scoped.namespace = ns.name.clone();
        let containers = scoped
            .containers()
            .list(scoped.req(ListContainersRequest::default()))
            .await?
            .into_inner()
            .containers;
        for c in containers {
            if container_networks(&c.labels).iter().any(|n| n == name) {
                users.push(format!("{}/{}", ns.name, c.id));
            }
        }
    }
    if !users.is_empty() {
        bail!(
            "network {name:?} is in use by container(s) {}",
            users.join(", ")
        );
    }
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_and_default() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), "n1", Some("10.4.9.7/24")).unwrap();
        let l = find(dir.path(), "n1").unwrap();
        assert_eq!(subnet_of(&l).as_deref(), Some("10.4.9.0/24"));
        assert!(create(dir.path(), "n1", None).is_err());
        let err = create(dir.path(), "n2", Some("10.4.9.0/24")).unwrap_err();
        assert!(err.to_string().contains("used by another"), "{err}");
        assert!(create(dir.path(), "../x", None).is_err());
        let b = find(dir.path(), DEFAULT_NETWORK).unwrap();
        assert_eq!(b.plugins[0]["bridge"], "berth0");
        assert_eq!(list(dir.path()).unwrap().len(), 2);
        assert_eq!(bridge_name("n1").len(), 15);
    }
}
