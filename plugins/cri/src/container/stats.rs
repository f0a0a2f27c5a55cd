//! ContainerStats, ListContainerStats (containerd `pkg/cri/server/container_stats*.go`): CPU
//! and memory from the container's cgroup ([`crate::stats`]), the writable layer's usage from
//! the snapshotter. A container without a running task reports its attributes and writable
//! layer only.

use berth_proto::runtime::v1::{
    ContainerAttributes, ContainerStats, ContainerStatsRequest, ContainerStatsResponse, CpuUsage,
    FilesystemIdentifier, FilesystemUsage, ListContainerStatsRequest, ListContainerStatsResponse,
    MemoryUsage, UInt64Value,
};

use super::blocking;
use super::list::{matches_labels, normalize};
use crate::error::Result;
use crate::service::{Cri, K8S_NAMESPACE};
use crate::stats::{self, nano_cores, CgroupLayout, CgroupStats};
use crate::store::container::{now_nanos, Container, CpuSample};

fn value(v: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value: v })
}

/// The snapshotter's directory: the filesystem the writable layers are on.
pub fn snapshotter_mountpoint(cri: &Cri) -> String {
    cri.root
        .parent()
        .map(|root| {
            root.join(format!(
                "io.containerd.snapshotter.v1.{}",
                cri.config.containerd.snapshotter
            ))
        })
        .unwrap_or_default()
        .display()
        .to_string()
}

/// CPU and memory of a cgroup as the CRI reports them; `sample` holds the previous CPU
/// reading (for `usage_nano_cores`) and is replaced.
pub fn cpu_and_memory(
    s: &CgroupStats,
    at: i64,
    previous: Option<CpuSample>,
) -> (CpuUsage, MemoryUsage) {
    let cores = previous
        .map(|p| nano_cores(p.usage_core_nanos, p.timestamp, s.cpu_usage_nanos, at))
        .unwrap_or(0);
    (
        CpuUsage {
            timestamp: at,
            usage_core_nano_seconds: value(s.cpu_usage_nanos),
            usage_nano_cores: value(cores),
        },
        MemoryUsage {
            timestamp: at,
            working_set_bytes: value(s.working_set),
            available_bytes: value(s.available),
            usage_bytes: value(s.memory_usage),
            rss_bytes: value(s.rss),
            page_faults: value(s.page_faults),
            major_page_faults: value(s.major_page_faults),
        },
    )
}

/// The stats of one container.
pub async fn container_stats_of(cri: &Cri, container: &Container) -> Result<ContainerStats> {
    let id = container.id().to_owned();
    let config = &container.meta.config;
    let (snapshots, sn) = (
        cri.snapshots.clone(),
        cri.config.containerd.snapshotter.clone(),
    );
    let cgroups_path = container.meta.cgroups_path.clone();
    let running = super::task_of(cri, container).is_some();
    let key = id.clone();
    let (usage, cgroup) = blocking(move || {
        let usage = snapshots.usage(K8S_NAMESPACE, &sn, &key).ok();
        let cgroup = (running && !cgroups_path.is_empty())
            .then(|| stats::read_stats(&CgroupLayout::detect(), &cgroups_path).ok())
            .flatten();
        Ok((usage, cgroup))
    })
    .await?;
    let at = now_nanos();
    let (cpu, memory) = match &cgroup {
        Some(s) => {
            let previous = container.swap_cpu_sample(CpuSample {
                usage_core_nanos: s.cpu_usage_nanos,
                timestamp: at,
            });
            let (c, m) = cpu_and_memory(s, at, previous);
            (Some(c), Some(m))
        }
        None => (None, None),
    };
    Ok(ContainerStats {
        attributes: Some(ContainerAttributes {
            id,
            metadata: config.metadata.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
        }),
        cpu,
        memory,
        writable_layer: Some(FilesystemUsage {
            timestamp: at,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: snapshotter_mountpoint(cri),
            }),
            used_bytes: value(usage.map(|u| u.size.max(0) as u64).unwrap_or(0)),
            inodes_used: value(usage.map(|u| u.inodes.max(0) as u64).unwrap_or(0)),
        }),
    })
}

/// ContainerStats.
#[tracing::instrument(skip_all, fields(id = %req.container_id))]
pub async fn container_stats(
    cri: &Cri,
    req: ContainerStatsRequest,
) -> Result<ContainerStatsResponse> {
    let container = cri.store.containers.get(&req.container_id)?;
    Ok(ContainerStatsResponse {
        stats: Some(container_stats_of(cri, &container).await?),
    })
}

/// ListContainerStats.
#[tracing::instrument(skip_all)]
pub async fn list_container_stats(
    cri: &Cri,
    req: ListContainerStatsRequest,
) -> Result<ListContainerStatsResponse> {
    let filter = req.filter.unwrap_or_default();
    let (id, sandbox) = normalize(cri, &filter.id, &filter.pod_sandbox_id);
    let mut stats = Vec::new();
    for c in cri.store.containers.list() {
        if !id.is_empty() && c.id() != id {
            continue;
        }
        if !sandbox.is_empty() && c.meta.sandbox_id != sandbox {
            continue;
        }
        if !matches_labels(&filter.label_selector, &c.meta.config.labels) {
            continue;
        }
        stats.push(container_stats_of(cri, &c).await?);
    }
    Ok(ListContainerStatsResponse { stats })
}
