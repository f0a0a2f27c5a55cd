//! PodSandboxStats, ListPodSandboxStats (containerd `pkg/cri/server/sandbox_stats_linux.go`):
//! CPU and memory of the pod's cgroup (`linux.cgroup_parent`, or the pause container's own
//! cgroup when the pod names none), the default interface's counters read from the pause
//! process's `/proc/<pid>/net/dev` (its network namespace), the number of processes, and the
//! stats of the pod's containers.

use berth_proto::runtime::v1::{
    ContainerStatsFilter, CpuUsage, LinuxPodSandboxStats, ListContainerStatsRequest,
    ListPodSandboxStatsRequest, ListPodSandboxStatsResponse, MemoryUsage, NetworkInterfaceUsage,
    NetworkUsage, PodSandboxAttributes, PodSandboxStats, PodSandboxStatsRequest,
    PodSandboxStatsResponse, ProcessUsage, UInt64Value,
};

use super::blocking;
use crate::cni::DEFAULT_IFNAME;
use crate::error::{CriError, Result};
use crate::service::{Cri, K8S_NAMESPACE};
use crate::stats::{read_stats, CgroupLayout};
use crate::store::container::now_nanos;
use crate::store::sandbox::{Sandbox, SandboxState};

/// PodSandboxStats.
#[tracing::instrument(skip_all, fields(id = %req.pod_sandbox_id))]
pub async fn pod_sandbox_stats(
    cri: &Cri,
    req: PodSandboxStatsRequest,
) -> Result<PodSandboxStatsResponse> {
    let sandbox = cri.store.sandboxes.get(&req.pod_sandbox_id)?;
    if sandbox.state != SandboxState::Ready {
        return Err(CriError::FailedPrecondition(format!(
            "failed to get pod sandbox stats since sandbox container {:?} is not in ready state",
            sandbox.id()
        )));
    }
    Ok(PodSandboxStatsResponse {
        stats: Some(stats_of(cri, &sandbox).await?),
    })
}

/// ListPodSandboxStats: every ready sandbox matching the filter (id or unique prefix, labels).
#[tracing::instrument(skip_all)]
pub async fn list_pod_sandbox_stats(
    cri: &Cri,
    req: ListPodSandboxStatsRequest,
) -> Result<ListPodSandboxStatsResponse> {
    let mut filter = req.filter.unwrap_or_default();
    if !filter.id.is_empty() {
        if let Ok(full) = cri.store.sandboxes.resolve(&filter.id) {
            filter.id = full;
        }
    }
    let mut stats = Vec::new();
    for sandbox in cri.store.sandboxes.list() {
        if sandbox.state != SandboxState::Ready
            || (!filter.id.is_empty() && sandbox.id() != filter.id)
            || !filter
                .label_selector
                .iter()
                .all(|(k, v)| sandbox.config().labels.get(k) == Some(v))
        {
            continue;
        }
        match stats_of(cri, &sandbox).await {
            Ok(s) => stats.push(s),
            // A pod that went away meanwhile is left out, as containerd does.
            Err(e) => tracing::debug!(id = %sandbox.id(), error = %e, "sandbox stats"),
        }
    }
    Ok(ListPodSandboxStatsResponse { stats })
}

async fn stats_of(cri: &Cri, sandbox: &Sandbox) -> Result<PodSandboxStats> {
    let config = sandbox.config();
    let mut cgroup = config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    if cgroup.is_empty() {
        cgroup = pause_cgroup(cri, sandbox.id()).await?;
    }
    let pid = sandbox.pid;
    let own_netns = sandbox.netns_path().is_some();
    let (usage, net, processes) = blocking(move || {
        let usage = read_stats(&CgroupLayout::detect(), &cgroup)?;
        let net = if own_netns && pid > 0 {
            interface_counters(pid, DEFAULT_IFNAME)
        } else {
            None
        };
        let processes = process_count(&cgroup);
        Ok((usage, net, processes))
    })
    .await?;
    // The pod's containers, as ListContainerStats filtered by the pod reports them.
    let containers = crate::container::stats::list_container_stats(
        cri,
        ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                pod_sandbox_id: sandbox.id().to_owned(),
                ..ContainerStatsFilter::default()
            }),
        },
    )
    .await?
    .stats;
    let now = now_nanos();
    let value = |v: u64| Some(UInt64Value { value: v });
    let network = net.map(|c| NetworkUsage {
        timestamp: now,
        default_interface: Some(NetworkInterfaceUsage {
            name: DEFAULT_IFNAME.to_owned(),
            rx_bytes: value(c.rx_bytes),
            rx_errors: value(c.rx_errors),
            tx_bytes: value(c.tx_bytes),
            tx_errors: value(c.tx_errors),
        }),
        interfaces: Vec::new(),
    });
    Ok(PodSandboxStats {
        attributes: Some(PodSandboxAttributes {
            id: sandbox.id().to_owned(),
            metadata: config.metadata.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
        }),
        linux: Some(LinuxPodSandboxStats {
            cpu: Some(CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: value(usage.cpu_usage_nanos),
                usage_nano_cores: None,
            }),
            memory: Some(MemoryUsage {
                timestamp: now,
                working_set_bytes: value(usage.working_set),
                available_bytes: value(usage.available),
                usage_bytes: value(usage.memory_usage),
                rss_bytes: value(usage.rss),
                page_faults: value(usage.page_faults),
                major_page_faults: value(usage.major_page_faults),
            }),
            network,
            process: processes.map(|n| ProcessUsage {
                timestamp: now,
                process_count: value(n),
            }),
            containers,
        }),
        windows: None,
    })
}

/// The pause container's `linux.cgroupsPath`, from its record's spec.
async fn pause_cgroup(cri: &Cri, id: &str) -> Result<String> {
    let (meta, id) = (cri.meta.clone(), id.to_owned());
    blocking(move || {
        let record = meta
            .get_container(K8S_NAMESPACE, &id)
            .map_err(|e| CriError::metadata(format!("get sandbox {id} record"), e))?;
        let spec: serde_json::Value = record
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice(&s.value).ok())
            .unwrap_or_default();
        spec.pointer("/linux/cgroupsPath")
            .and_then(|v| v.as_str())
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                CriError::FailedPrecondition(format!(
                    "failed to get cgroup metrics for sandbox {id} because cgroupPath is empty"
                ))
            })
    })
    .await
}

/// Counters of one interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Send errors.
    pub tx_errors: u64,
}

/// `ifname`'s counters in the network namespace of process `pid`.
fn interface_counters(pid: u32, ifname: &str) -> Option<InterfaceCounters> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    parse_net_dev(&text, ifname)
}

/// Reads a `/proc/net/dev` table: after `name:` come 8 receive columns (bytes, packets, errs,
/// ...) then 8 transmit columns.
pub fn parse_net_dev(text: &str, ifname: &str) -> Option<InterfaceCounters> {
    text.lines().skip(2).find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name.trim() != ifname {
            return None;
        }
        let cols: Vec<u64> = rest
            .split_whitespace()
            .map(|c| c.parse().unwrap_or(0))
            .collect();
        Some(InterfaceCounters {
            rx_bytes: *cols.first()?,
            rx_errors: *cols.get(2)?,
            tx_bytes: *cols.get(8)?,
            tx_errors: *cols.get(10)?,
        })
    })
}

/// How many processes the cgroup holds (v2 `cgroup.procs`, v1 the pids or memory hierarchy's).
fn process_count(cgroups_path: &str) -> Option<u64> {
    let rel = crate::stats::cgroup_relative_path(cgroups_path);
    let root = std::path::Path::new(crate::stats::CGROUP_ROOT);
    let candidates = match CgroupLayout::detect() {
        CgroupLayout::V2(_) => vec![root.join(&rel).join("cgroup.procs")],
        CgroupLayout::V1(_) => vec![
            root.join("pids").join(&rel).join("cgroup.procs"),
            root.join("memory").join(&rel).join("cgroup.procs"),
        ],
    };
    candidates.iter().find_map(|p| {
        let text = std::fs::read_to_string(p).ok()?;
        Some(text.lines().filter(|l| !l.trim().is_empty()).count() as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_is_read() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0:    5000      40    2    0    0     0          0         0     3000      30    1    0    0     0       0          0\n";
        let c = parse_net_dev(text, "eth0").unwrap();
        assert_eq!(
            c,
            InterfaceCounters {
                rx_bytes: 5000,
                rx_errors: 2,
                tx_bytes: 3000,
                tx_errors: 1
            }
        );
        assert!(parse_net_dev(text, "eth1").is_none());
    }
}
