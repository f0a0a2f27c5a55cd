//! Cgroup path and limits, sysctls and `oom_score_adj` (containerd `getCgroupsPath`,
//! `opts.WithResources`, `opts.WithSysctls`, `opts.WithOOMScoreAdj`, `restrictOOMScoreAdj`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use berth_proto::runtime::v1::{LinuxContainerResources, NamespaceMode};
use oci_spec::runtime::{LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder};

use super::draft::Draft;
use super::namespaces::Modes;
use crate::config::CriConfig;
use crate::error::{CriError, Result};

/// The pause container's `oom_score_adj` (containerd `defaultSandboxOOMAdj`).
pub const SANDBOX_OOM_SCORE_ADJ: i32 = -998;

/// The pause container's CPU shares (containerd `DefaultSandboxCPUshares`).
pub const SANDBOX_CPU_SHARES: u64 = 2;

/// The cgroup of container `id` under `parent`: `<parent>/<id>` for cgroupfs, and systemd's
/// `<slice>:cri-containerd:<id>` when the parent is a `.slice`, as containerd writes it.
pub fn cgroups_path(parent: &str, id: &str) -> String {
    let base = Path::new(parent)
        .file_name()
        .and_then(|b| b.to_str())
        .unwrap_or(parent);
    if base.ends_with(".slice") {
        format!("{base}:cri-containerd:{id}")
    } else {
        Path::new(parent).join(id).display().to_string()
    }
}

/// berthd's own `oom_score_adj`.
pub fn current_oom_score_adj() -> Result<i32> {
    let path = "/proc/self/oom_score_adj";
    let text = std::fs::read_to_string(path).map_err(|e| CriError::io("reading", path, e))?;
    text.trim()
        .parse()
        .map_err(|e| CriError::Internal(format!("parsing {path}: {e}")))
}

/// `preferred`, or berthd's own `oom_score_adj` when that is higher and lowering is not
/// possible or not wanted: with `restrict_oom_score_adj`, and also whenever berthd lacks
/// CAP_SYS_RESOURCE (runc could not set a lower value and the start would fail).
pub fn oom_score_adj(preferred: i32, cri: &CriConfig) -> Result<i32> {
    let restrict = cri.restrict_oom_score_adj
        || !super::capabilities::current_effective()?
            .iter()
            .any(|c| c == "CAP_SYS_RESOURCE");
    if !restrict {
        return Ok(preferred);
    }
    Ok(restrict_to(preferred, current_oom_score_adj()?))
}

/// `preferred`, never below `floor`.
pub fn restrict_to(preferred: i32, floor: i32) -> i32 {
    preferred.max(floor)
}

/// Whether a swap limit can be set next to the memory limit (cgroup v1 `memory.memsw.*`, v2
/// `memory.swap.max`); create and UpdateContainerResources ask the same question.
pub(crate) fn swap_controller_available() -> bool {
    if super::namespaces::cgroup_v2() {
        let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") else {
            return false;
        };
        let unified = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/");
        Path::new("/sys/fs/cgroup")
            .join(unified.trim_start_matches('/'))
            .join("memory.swap.max")
            .exists()
    } else {
        Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
    }
}

/// Whether the hugetlb controller exists.
fn hugetlb_available() -> bool {
    if super::namespaces::cgroup_v2() {
        std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .map(|c| c.split_whitespace().any(|n| n == "hugetlb"))
            .unwrap_or(false)
    } else {
        Path::new("/sys/fs/cgroup/hugetlb").is_dir()
    }
}

/// Applies a container's resources: CPU period, quota, shares and cpuset; memory limit (and
/// swap, equal to the limit unless given, when the host can limit swap); hugepages (unless
/// the hugetlb controller is disabled); unified (cgroup v2) keys.
pub fn apply(draft: &mut Draft, r: &LinuxContainerResources, cri: &CriConfig) -> Result<()> {
    let swap_available = r.memory_limit_in_bytes != 0
        && r.memory_swap_limit_in_bytes == 0
        && swap_controller_available();
    let hugetlb = if cri.disable_hugetlb_controller || r.hugepage_limits.is_empty() {
        None
    } else {
        Some(hugetlb_available())
    };
    apply_with(draft, r, cri, swap_available, hugetlb)
}

/// [`apply`] with the host's answers given: whether swap can be limited, whether the hugetlb
/// controller exists (`None`: not asked).
pub fn apply_with(
    draft: &mut Draft,
    r: &LinuxContainerResources,
    cri: &CriConfig,
    swap_available: bool,
    hugetlb: Option<bool>,
) -> Result<()> {
    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    if r.cpu_period != 0 {
        cpu = cpu.period(r.cpu_period as u64);
        any_cpu = true;
    }
    if r.cpu_quota != 0 {
        cpu = cpu.quota(r.cpu_quota);
        any_cpu = true;
    }
    if r.cpu_shares != 0 {
        cpu = cpu.shares(r.cpu_shares as u64);
        any_cpu = true;
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
        any_cpu = true;
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
        any_cpu = true;
    }
    if any_cpu {
        draft.cpu = Some(cpu.build().map_err(build_error)?);
    }

    let mut memory = LinuxMemoryBuilder::default();
    let mut any_memory = false;
    if r.memory_limit_in_bytes != 0 {
        memory = memory.limit(r.memory_limit_in_bytes);
        if swap_available {
            memory = memory.swap(r.memory_limit_in_bytes);
        }
        any_memory = true;
    }
    if r.memory_swap_limit_in_bytes != 0 {
        memory = memory.swap(r.memory_swap_limit_in_bytes);
        any_memory = true;
    }
    if any_memory {
        draft.memory = Some(memory.build().map_err(build_error)?);
    }

    match hugetlb {
        None => {}
        Some(true) => {
            for h in &r.hugepage_limits {
                draft.hugepage_limits.push(
                    LinuxHugepageLimitBuilder::default()
                        .page_size(h.page_size.clone())
                        .limit(i64::try_from(h.limit).unwrap_or(i64::MAX))
                        .build()
                        .map_err(build_error)?,
                );
            }
        }
        Some(false) if !cri.tolerate_missing_hugetlb_controller => {
            return Err(CriError::FailedPrecondition(
                "huge pages limits are specified but the hugetlb cgroup controller is missing \
                 (set tolerate_missing_hugetlb_controller to ignore them)"
                    .to_owned(),
            ));
        }
        Some(false) => {
            tracing::warn!("hugetlb cgroup controller is absent: huge pages limits ignored")
        }
    }

    draft
        .unified
        .extend(r.unified.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(())
}

/// Sysctls of a pod: the request's, plus containerd's unprivileged port and ICMP settings
/// when enabled and the pod has its own network. Sysctls of a namespace the pod shares with
/// the host are refused (runc would refuse them at start).
pub fn sysctls(
    requested: &HashMap<String, String>,
    modes: Modes,
    cri: &CriConfig,
) -> Result<BTreeMap<String, String>> {
    let mut out: BTreeMap<String, String> = requested
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for key in out.keys() {
        if modes.network == NamespaceMode::Node && key.starts_with("net.") {
            return Err(CriError::invalid(
                format!("config.linux.sysctls[{key}]"),
                "a network sysctl needs the pod's own network namespace (network is NODE)",
            ));
        }
        let ipc_key = key.starts_with("fs.mqueue.")
            || key.starts_with("kernel.shm")
            || key.starts_with("kernel.msg")
            || key == "kernel.sem";
        if modes.ipc == NamespaceMode::Node && ipc_key {
            return Err(CriError::invalid(
                format!("config.linux.sysctls[{key}]"),
                "an IPC sysctl needs the pod's own IPC namespace (ipc is NODE)",
            ));
        }
    }
    if modes.network != NamespaceMode::Node {
        if cri.enable_unprivileged_ports {
            out.entry("net.ipv4.ip_unprivileged_port_start".to_owned())
                .or_insert_with(|| "0".to_owned());
        }
        if cri.enable_unprivileged_icmp {
            out.entry("net.ipv4.ping_group_range".to_owned())
                .or_insert_with(|| "0 2147483647".to_owned());
        }
    }
    Ok(out)
}

fn build_error(e: impl std::fmt::Display) -> CriError {
    CriError::Internal(format!("building the OCI spec: {e}"))
}

#[cfg(test)]
mod tests {
    use berth_proto::runtime::v1::HugepageLimit;

    use super::*;

    #[test]
    fn cgroup_paths_as_containerd() {
        assert_eq!(
            cgroups_path("/kubepods/burstable/pod1", "abc"),
            "/kubepods/burstable/pod1/abc"
        );
        assert_eq!(
            cgroups_path(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-pod1.slice",
                "abc"
            ),
            "kubepods-pod1.slice:cri-containerd:abc"
        );
        assert_eq!(
            cgroups_path("kubepods.slice", "abc"),
            "kubepods.slice:cri-containerd:abc"
        );
    }

    #[test]
    fn oom_score_adj_never_below_the_floor() {
        assert_eq!(restrict_to(-998, 0), 0);
        assert_eq!(restrict_to(-998, -999), -998);
        assert_eq!(restrict_to(500, 0), 500);
        // The daemon's own value is readable (what the restriction compares with).
        assert!(current_oom_score_adj().is_ok());
    }

    #[test]
    fn restricted_config_never_goes_below_berthd() {
        let cri = CriConfig {
            restrict_oom_score_adj: true,
            ..CriConfig::default()
        };
        let own = current_oom_score_adj().unwrap();
        assert_eq!(oom_score_adj(-1000, &cri).unwrap(), own.max(-1000));
        assert_eq!(oom_score_adj(1000, &cri).unwrap(), 1000);
    }

    #[test]
    fn resources_become_cgroup_limits() {
        let r = LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0".into(),
            cpuset_mems: "0".into(),
            unified: HashMap::from([("memory.high".into(), "1000000".into())]),
            ..LinuxContainerResources::default()
        };
        let mut d = Draft::default();
        apply_with(&mut d, &r, &CriConfig::default(), true, None).unwrap();
        let cpu = d.cpu.clone().unwrap();
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.cpus().as_deref(), Some("0"));
        let mem = d.memory.unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        assert_eq!(mem.swap(), Some(64 << 20));
        assert_eq!(d.unified["memory.high"], "1000000");

        let mut d = Draft::default();
        apply_with(&mut d, &r, &CriConfig::default(), false, None).unwrap();
        assert_eq!(d.memory.unwrap().swap(), None);
        let mut d = Draft::default();
        apply_with(
            &mut d,
            &LinuxContainerResources::default(),
            &CriConfig::default(),
            false,
            None,
        )
        .unwrap();
        assert!(d.cpu.is_none() && d.memory.is_none());
    }

    #[test]
    fn hugepages_need_the_controller() {
        let r = LinuxContainerResources {
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            ..LinuxContainerResources::default()
        };
        let mut d = Draft::default();
        apply_with(&mut d, &r, &CriConfig::default(), false, Some(true)).unwrap();
        assert_eq!(d.hugepage_limits.len(), 1);
        let strict = CriConfig {
            tolerate_missing_hugetlb_controller: false,
            ..CriConfig::default()
        };
        assert!(apply_with(&mut Draft::default(), &r, &strict, false, Some(false)).is_err());
        let mut d = Draft::default();
        apply_with(&mut d, &r, &CriConfig::default(), false, Some(false)).unwrap();
        assert!(d.hugepage_limits.is_empty());
    }

    #[test]
    fn host_namespace_sysctls_are_refused() {
        let pod = Modes {
            network: NamespaceMode::Pod,
            pid: NamespaceMode::Pod,
            ipc: NamespaceMode::Pod,
        };
        let host_net = Modes {
            network: NamespaceMode::Node,
            ..pod
        };
        let host_ipc = Modes {
            ipc: NamespaceMode::Node,
            ..pod
        };
        let net = HashMap::from([("net.ipv4.ip_forward".to_owned(), "1".to_owned())]);
        let shm = HashMap::from([("kernel.shmmax".to_owned(), "100000".to_owned())]);
        let cri = CriConfig::default();
        assert_eq!(
            sysctls(&net, pod, &cri).unwrap()["net.ipv4.ip_forward"],
            "1"
        );
        let err = sysctls(&net, host_net, &cri).unwrap_err();
        assert!(err.to_string().contains("config.linux.sysctls"), "{err}");
        assert!(sysctls(&shm, host_ipc, &cri).is_err());
        assert!(sysctls(&shm, host_net, &cri).is_ok());

        let cri = CriConfig {
            enable_unprivileged_ports: true,
            enable_unprivileged_icmp: true,
            ..CriConfig::default()
        };
        let out = sysctls(&HashMap::new(), pod, &cri).unwrap();
        assert_eq!(out["net.ipv4.ip_unprivileged_port_start"], "0");
        assert_eq!(out["net.ipv4.ping_group_range"], "0 2147483647");
        assert!(sysctls(&HashMap::new(), host_net, &cri).unwrap().is_empty());
    }
}
