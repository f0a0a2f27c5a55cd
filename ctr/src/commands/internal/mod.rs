//! `berth internal oci-hook <event>`: what runc runs for a container `berth run --net` put on a
//! CNI network (nerdctl's `internal oci-hook`). The OCI state document arrives on stdin.
//!
//! * `createRuntime` (runc, in the host's namespaces, after the container's namespaces exist):
//!   the container's netns is pinned (bind-mounted on `<record dir>/netns/<namespace>-<id>`, so
//!   that DEL still finds it after the process is gone: the bridge plugin removes its
//!   masquerade rules only inside a netns), then CNI ADD of the loopback network and the
//!   container's network into it, with its port mappings. A failed ADD is undone (DEL) before the hook fails, so runc's create
//!   fails with nothing left.
//! * `postStop` (runc, when the task is deleted, whoever deletes it: `berth`, or a berthd
//!   cleaning up dead tasks after a crash): CNI DEL, replaying the record ADD wrote (releases the
//!   IPAM lease, the masquerade and port-mapping rules), then the pin goes. A second DEL is a
//!   no-op.
//!
//! What the hook needs is in the spec's annotations (runc passes them in the state): the
//! networks (`nerdctl/networks`), the port mappings (`berth/ports`), the namespace
//! (`berth/namespace`); and in its arguments: the CNI directories and the record directory.
//! The record of the ADD — the CNI result with the container's addresses — is
//! `<record dir>/<namespace>-<id>.json` (`<record dir>` = `<daemon root>/berth/networks`), which
//! `berth inspect` reads. This runs without a connection to the daemon.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use berth_cni::netns::is_pinned;
use serde_json::Value;

use crate::commands::network::{self, NETWORKS_LABEL};

/// The annotation holding the port mappings (JSON, nerdctl's `nerdctl/ports` form).
pub const PORTS_LABEL: &str = "berth/ports";
/// The annotation holding the container's namespace.
pub const NAMESPACE_LABEL: &str = "berth/namespace";

/// The argv[1] that selects this entry point (handled before the normal command line).
pub const ARG: &str = "internal";

/// The record directory under a daemon root.
pub fn record_dir(root: &Path) -> PathBuf {
    root.join("berth").join("networks")
}

/// The CNI id of container `id` in namespace `ns` (nerdctl's "full id").
pub fn cni_id(ns: &str, id: &str) -> String {
    format!("{ns}-{id}")
}

/// The addresses the CNI record of container `id` holds (empty: none recorded).
pub fn recorded_addresses(root: &Path, ns: &str, id: &str) -> Vec<String> {
    let cni = berth_cni::Cni {
        bin_dir: PathBuf::new(),
        conf_dir: PathBuf::new(),
        max_conf_num: 1,
        cache_dir: record_dir(root),
    };
    cni.recorded_result(&cni_id(ns, id))
        .map(|r| {
            berth_cni::result::pod_ips(&r, berth_cni::DEFAULT_IFNAME)
                .iter()
                .map(ToString::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The hook's command line, after `berth internal`.
pub struct HookArgs {
    cni_path: PathBuf,
    netconf_path: PathBuf,
    record_dir: PathBuf,
    event: String,
}

/// The hook's argv (without the program): `oci-hook --cni-path P --cni-netconfpath C
/// --record-dir R <event>`.
pub fn hook_argv(cni: &network::CniFlags, record_dir: &Path, event: &str) -> Vec<String> {
    vec![
        ARG.to_owned(),
        "oci-hook".to_owned(),
        "--cni-path".to_owned(),
        cni.cni_path.display().to_string(),
        "--cni-netconfpath".to_owned(),
        cni.cni_netconfpath.display().to_string(),
        "--record-dir".to_owned(),
        record_dir.display().to_string(),
        event.to_owned(),
    ]
}

fn parse(args: &[String]) -> Result<HookArgs> {
    let mut it = args.iter();
    if it.next().map(String::as_str) != Some("oci-hook") {
        bail!("usage: berth internal oci-hook [--cni-path P] [--cni-netconfpath C] --record-dir R createRuntime|postStop");
    }
    let mut out = HookArgs {
        cni_path: PathBuf::from(network::DEFAULT_CNI_PATH),
        netconf_path: PathBuf::from(network::DEFAULT_NETCONF_PATH),
        record_dir: PathBuf::new(),
        event: String::new(),
    };
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--cni-path" => out.cni_path = value()?.into(),
            "--cni-netconfpath" => out.netconf_path = value()?.into(),
            "--record-dir" => out.record_dir = value()?.into(),
            e if !e.starts_with('-') && out.event.is_empty() => out.event = e.to_owned(),
            other => bail!("unexpected argument {other:?}"),
        }
    }
    if out.record_dir.as_os_str().is_empty() || out.event.is_empty() {
        bail!("oci-hook needs --record-dir and an event");
    }
    Ok(out)
}

/// Runs the hook: `args` are argv after `berth internal`.
pub fn main(args: &[String]) -> Result<()> {
    let args = parse(args)?;
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("cannot read the OCI state on stdin")?;
    let state: Value = serde_json::from_slice(&input).context("the OCI state is not JSON")?;
    let id = state["id"].as_str().context("the OCI state has no id")?;
    let annotations = &state["annotations"];
    let ns = annotations[NAMESPACE_LABEL].as_str().unwrap_or("default");
    let networks: Vec<String> = annotations[NETWORKS_LABEL]
        .as_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    let cni = berth_cni::Cni {
        bin_dir: args.cni_path.clone(),
        conf_dir: args.netconf_path.clone(),
        max_conf_num: 1,
        cache_dir: args.record_dir.clone(),
    };
    let full_id = cni_id(ns, id);
    match args.event.as_str() {
        "createRuntime" => {
            let pid = state["pid"]
                .as_u64()
                .filter(|p| *p > 0)
                .context("the OCI state has no pid")?;
            let lists = networks
                .iter()
                .map(|n| network::find(&args.netconf_path, n))
                .collect::<Result<Vec<_>>>()?;
            let ports: Vec<berth_cni::PortMapping> = annotations[PORTS_LABEL]
                .as_str()
                .and_then(|t| serde_json::from_str::<Vec<Value>>(t).ok())
                .unwrap_or_default()
                .iter()
                .filter_map(port_mapping)
                .collect();
            // A record left by a task whose poststop never ran (runc killed, say): release what
            // it holds before a new ADD takes another address.
            let pin = pin_path(&args.record_dir, &full_id);
            if cni.has_record(&full_id) {
                let live = is_pinned(&pin).then_some(pin.as_path());
                if let Err(e) = cni.teardown(&full_id, live) {
                    eprintln!("berth oci-hook: releasing a stale CNI record: {e}");
                }
            }
            unpin_netns(&pin);
            pin_netns(&PathBuf::from(format!("/proc/{pid}/ns/net")), &pin)?;
            let target = berth_cni::Target {
                id: full_id.clone(),
                netns: pin.clone(),
                args: vec![("IgnoreUnknown".into(), "1".into())],
                port_mappings: ports,
            };
            if let Err(e) = cni.setup_networks(&target, lists) {
                let undo = cni.teardown(&full_id, Some(&target.netns));
                if let Err(u) = undo {
                    eprintln!("berth oci-hook: undoing the failed CNI ADD: {u}");
                }
                unpin_netns(&pin);
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot attach container {id} to network(s) {}",
                    networks.join(", ")
                )));
            }
            Ok(())
        }
        "postStop" => {
            let pin = pin_path(&args.record_dir, &full_id);
            let live = is_pinned(&pin).then_some(pin.as_path());
            cni.teardown(&full_id, live)
                .with_context(|| format!("cannot detach container {id} from its network(s)"))?;
            unpin_netns(&pin);
            Ok(())
        }
        // nerdctl's hook takes these too; berth has nothing to do for them.
        "createContainer" | "startContainer" | "poststart" | "prestart" => Ok(()),
        other => bail!("unknown OCI hook event {other:?}"),
    }
}

fn pin_path(record_dir: &Path, full_id: &str) -> PathBuf {
    record_dir.join("netns").join(full_id)
}

fn pin_netns(ns: &Path, pin: &Path) -> Result<()> {
    Ok(berth_cni::netns::pin(ns, pin)?)
}

/// Unpins and removes a pin (failures are reported, not fatal: the DEL already ran).
fn unpin_netns(pin: &Path) {
    if let Err(e) = berth_cni::netns::unpin(pin) {
        eprintln!("berth oci-hook: {e}");
    }
}

/// A `nerdctl/ports` entry (`HostPort`, `ContainerPort`, `Protocol`, `HostIP`) as CNI's.
fn port_mapping(v: &Value) -> Option<berth_cni::PortMapping> {
    Some(berth_cni::PortMapping {
        host_port: i32::try_from(v["HostPort"].as_i64()?).ok()?,
        container_port: i32::try_from(v["ContainerPort"].as_i64()?).ok()?,
        protocol: v["Protocol"].as_str().unwrap_or("tcp").to_ascii_lowercase(),
        host_ip: v["HostIP"].as_str().unwrap_or_default().to_owned(),
    })
}
