//! `berth run --net bridge|host|none|NAME`, `-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]`
//! and `-P`: nerdctl's CNI networking. Nothing here touches the network: the container's spec
//! gets a `createRuntime` hook (CNI ADD into the netns runc made, with the port mappings through
//! `portmap`) and a `poststop` hook (CNI DEL), both `berth internal oci-hook` (see
//! [`crate::commands::internal`]), so runc releases the address whenever the task is deleted,
//! with or without this CLI, also after a berthd crash. The labels record the networks
//! (`nerdctl/networks`), the ports (`berth/ports`, in nerdctl's `nerdctl/ports` form) and the
//! namespace; they are also the spec's annotations, which the hook reads.
//!
//! Checked before anything is made: the network exists (the default `bridge` is written on
//! first use), every host port is free (bound and released here, as docker-proxy would fail to
//! bind it) and not published by another container of the namespace.

use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};

use anyhow::{bail, Context as _, Result};
use berth_proto::containerd::services::containers::v1::ListContainersRequest;
use serde_json::{json, Value};

use super::ContainerFlags;
use crate::client::Client;
use crate::commands::internal::{self, NAMESPACE_LABEL, PORTS_LABEL};
use crate::commands::network::{self, CniFlags, NETWORKS_LABEL};

/// The PATH the hooks run with (runc gives a hook only the environment the spec names; the
/// plugins need `iptables`).
const HOOK_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Network flags of `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct NetFlags {
    /// Network: `bridge` (the default CNI network), `host`, `none`, or a name from `berth
    /// network ls` (default: none, as ctr; `bridge` when ports are published).
    #[arg(long = "net", visible_alias = "network")]
    pub net: Option<String>,
    /// Publish a container port: [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp].
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish every port the image exposes on a free host port.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    #[command(flatten)]
    pub cni: CniFlags,
}

/// One published port (nerdctl's `nerdctl/ports` entry, go-cni's `PortMapping`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Host address ("" for all).
    pub host_ip: String,
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

impl Port {
    fn to_json(&self) -> Value {
        json!({
            "HostPort": self.host_port,
            "ContainerPort": self.container_port,
            "Protocol": self.protocol,
            "HostIP": self.host_ip,
        })
    }

    fn describe(&self) -> String {
        let ip = if self.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &self.host_ip
        };
        format!("{ip}:{}/{}", self.host_port, self.protocol)
    }
}

/// Parses `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]` (a host port 0 or left out: a free
/// port is picked).
pub fn parse_publish(text: &str) -> Result<Port> {
    let bad = |why: &str| {
        anyhow::anyhow!(
            "invalid port {text:?}: {why} (want [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp])"
        )
    };
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((s, p)) => (s, p.to_ascii_lowercase()),
        None => (text, "tcp".to_owned()),
    };
    if protocol != "tcp" && protocol != "udp" {
        return Err(bad("protocol must be tcp or udp"));
    }
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let (host_ip, host_port, container_port) = match parts.as_slice() {
        [c] => ("", "", *c),
        [c, h] => ("", *h, *c),
        [c, h, ip] => (*ip, *h, *c),
        _ => return Err(bad("too many parts")),
    };
    let host_ip = host_ip.trim_start_matches('[').trim_end_matches(']');
    if !host_ip.is_empty() {
        let ip: IpAddr = host_ip.parse().map_err(|_| bad("bad host address"))?;
        if ip.is_ipv6() {
            return Err(bad("IPv6 host addresses are not supported"));
        }
    }
    let port = |p: &str| p.parse::<u16>().map_err(|_| bad("bad port number"));
    let container_port = port(container_port)?;
    if container_port == 0 {
        return Err(bad("container port 0"));
    }
    let host_port = if host_port.is_empty() {
        0
    } else {
        port(host_port)?
    };
    Ok(Port {
        host_ip: host_ip.to_owned(),
        host_port,
        container_port,
        protocol,
    })
}

/// Binds the port and lets it go: fails as docker-proxy would when something holds it. A host
/// port 0 is given a free one.
fn claim(port: &mut Port) -> Result<()> {
    let ip: IpAddr = if port.host_ip.is_empty() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        port.host_ip.parse()?
    };
    let bound = if port.protocol == "udp" {
        UdpSocket::bind((ip, port.host_port)).and_then(|s| s.local_addr())
    } else {
        TcpListener::bind((ip, port.host_port)).and_then(|s| s.local_addr())
    };
    match bound {
        Ok(addr) => {
            port.host_port = addr.port();
            Ok(())
        }
        Err(e) => bail!(
            "cannot publish port {}: the host port is already in use ({e})",
            port.describe()
        ),
    }
}

/// What `run` does for the network: labels to add and the hooks for the spec.
pub struct NetPlan {
    /// Labels (and annotations) to add.
    pub labels: Vec<String>,
    /// The spec's `hooks`.
    pub hooks: Option<Value>,
    /// `--net host`.
    pub host: bool,
}

/// Checks the flags and the ports; returns what to add to the container. Nothing is made but
/// the default network's config.
pub async fn plan(
    client: &Client,
    flags: &NetFlags,
    container: &ContainerFlags,
    image: &str,
) -> Result<NetPlan> {
    let mut ports = flags
        .publish
        .iter()
        .map(|p| parse_publish(p))
        .collect::<Result<Vec<_>>>()?;
    let publishing = !ports.is_empty() || flags.publish_all;
    let net = match flags.net.as_deref() {
        None if publishing => network::DEFAULT_NETWORK.to_owned(),
        None => {
            return Ok(NetPlan {
                labels: Vec::new(),
                hooks: None,
                host: false,
            })
        }
        Some(n) => n.to_owned(),
    };
    if net == "host" || net == "none" {
        if publishing {
            bail!("ports cannot be published with --net {net}");
        }
        return Ok(NetPlan {
            labels: Vec::new(),
            hooks: None,
            host: net == "host",
        });
    }
    if container.net_host {
        bail!("--net-host and --net {net} cannot be used together");
    }
    network::validate_name(&net)?;
    network::find(&flags.cni.cni_netconfpath, &net)?;
    if flags.publish_all {
        for exposed in exposed_ports(client, container, image).await? {
            if !ports.iter().any(|p| {
                p.container_port == exposed.container_port && p.protocol == exposed.protocol
            }) {
                ports.push(exposed);
            }
        }
    }
    let taken = published_ports(client).await?;
    for (i, port) in ports.iter_mut().enumerate() {
        if port.host_port != 0 {
            if let Some(owner) = taken.iter().find_map(|(id, p)| {
                let same_ip =
                    p.host_ip.is_empty() || port.host_ip.is_empty() || p.host_ip == port.host_ip;
                (same_ip && p.host_port == port.host_port && p.protocol == port.protocol)
                    .then_some(id)
            }) {
                bail!(
                    "cannot publish port {}: the host port is already published by container {owner}",
                    port.describe()
                );
            }
        }
        claim(port)?;
        let _ = i;
    }
    let root = crate::client::volumes::daemon_root(client).await?;
    let records = internal::record_dir(&root);
    let exe = std::env::current_exe().context("cannot find the berth binary for the OCI hooks")?;
    let exe = exe.display().to_string();
    let hook = |event: &str| {
        let mut args = vec![exe.clone()];
        args.extend(internal::hook_argv(&flags.cni, &records, event));
        json!({"path": exe, "args": args, "env": [HOOK_PATH]})
    };
    let ports_json = Value::Array(ports.iter().map(Port::to_json).collect()).to_string();
    Ok(NetPlan {
        labels: vec![
            format!("{NETWORKS_LABEL}={}", json!([net])),
            format!("{PORTS_LABEL}={ports_json}"),
            format!("{NAMESPACE_LABEL}={}", client.namespace),
        ],
        hooks: Some(json!({
            "createRuntime": [hook("createRuntime")],
            "poststop": [hook("postStop")],
        })),
        host: false,
    })
}

/// The ports other containers of the namespace publish.
async fn published_ports(client: &Client) -> Result<Vec<(String, Port)>> {
    let containers = client
        .containers()
        .list(client.req(ListContainersRequest::default()))
        .await?
        .into_inner()
        .containers;
    let mut out = Vec::new();
    for c in containers {
        let Some(list) = crate::commands::ps::PORTS_LABELS
            .iter()
            .find_map(|k| c.labels.get(*k))
            .and_then(|t| serde_json::from_str::<Vec<Value>>(t).ok())
        else {
            continue;
        };
        for p in list {
            out.push((
                c.id.clone(),
                Port {
                    host_ip: p["HostIP"].as_str().unwrap_or_default().to_owned(),
                    host_port: p["HostPort"].as_u64().unwrap_or(0) as u16,
                    container_port: p["ContainerPort"].as_u64().unwrap_or(0) as u16,
                    protocol: p["Protocol"].as_str().unwrap_or("tcp").to_ascii_lowercase(),
                },
            ));
        }
    }
    Ok(out)
}

/// The image config's `ExposedPorts` (`"80/tcp": {}`), each on host port 0 (picked later).
async fn exposed_ports(
    client: &Client,
    container: &ContainerFlags,
    image: &str,
) -> Result<Vec<Port>> {
    if container.rootfs || container.config.is_some() {
        bail!("-P needs an image");
    }
    use crate::client::images as img;
    let image = img::get(client, image).await?;
    let platform = crate::commands::images::platform_arg(container.platform.as_deref())?;
    let rootfs = img::rootfs(client, &img::target(&image), &platform).await?;
    let config: Value = img::read_json(client, &rootfs.config).await?;
    let mut out = Vec::new();
    if let Some(exposed) = config["config"]["ExposedPorts"].as_object() {
        for key in exposed.keys() {
            out.push(parse_publish(key).with_context(|| format!("image ExposedPorts {key:?}"))?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_forms() {
        let p = parse_publish("127.0.0.1:18080:80").unwrap();
        assert_eq!(
            (
                p.host_ip.as_str(),
                p.host_port,
                p.container_port,
                p.protocol.as_str()
            ),
            ("127.0.0.1", 18080, 80, "tcp")
        );
        let p = parse_publish("8053:53/udp").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol.as_str()),
            (8053, 53, "udp")
        );
        assert_eq!(parse_publish("80/tcp").unwrap().host_port, 0);
        for bad in [
            "x:80",
            "1:2:3:4",
            "80/sctp",
            "70000:80",
            "1.2.3.4.5:1:2",
            "8080:0",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }
}
