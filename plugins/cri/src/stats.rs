//! Resource usage of containers and pods, read from their cgroups (v1 and v2), as the CRI
//! reports it (containerd `pkg/cri/server/container_stats_list_linux.go`): cumulative CPU time
//! in nanoseconds, memory usage and working set (usage minus inactive file pages), RSS, page
//! faults, and the OOM kill count that tells an OOM-killed container.
//!
//! The cgroup is the spec's `linux.cgroupsPath`: a path under each v1 controller's mount
//! (`/sys/fs/cgroup/<controller>/<path>`) or under the unified mount, or systemd's
//! `slice:prefix:name` form.

use std::path::{Path, PathBuf};

use crate::error::{CriError, Result};

/// Where the cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Memory limits above this mean "unlimited" (containerd `isMemoryUnlimited`).
const UNLIMITED_MEMORY: u64 = 1 << 62;

/// Which cgroup version the host uses for the controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// One hierarchy per controller under the root.
    V1(PathBuf),
    /// The unified hierarchy at the root.
    V2(PathBuf),
}

impl CgroupLayout {
    /// The host's layout: v2 when the root is a unified mount (it lists
    /// `cgroup.controllers`), else v1.
    pub fn detect() -> CgroupLayout {
        let root = PathBuf::from(CGROUP_ROOT);
        if root.join("cgroup.controllers").exists() {
            CgroupLayout::V2(root)
        } else {
            CgroupLayout::V1(root)
        }
    }
}

/// What a cgroup used, as the CRI's CpuUsage and MemoryUsage carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Cumulative CPU time, nanoseconds.
    pub cpu_usage_nanos: u64,
    /// Memory usage, bytes.
    pub memory_usage: u64,
    /// Usage minus inactive file pages.
    pub working_set: u64,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub rss: u64,
    /// Page faults.
    pub page_faults: u64,
    /// Major page faults.
    pub major_page_faults: u64,
    /// Limit minus working set; 0 without a limit.
    pub available: u64,
    /// How often the kernel's OOM killer killed a process of the cgroup.
    pub oom_kills: u64,
}

/// The cgroup directory (relative to a hierarchy's root) that `cgroups_path` names: a plain
/// path, or systemd's `parent.slice:prefix:name` (→ `<parent slices>/prefix-name.scope`).
pub fn cgroup_relative_path(cgroups_path: &str) -> PathBuf {
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    match parts.as_slice() {
        [slice, prefix, name] if !cgroups_path.starts_with('/') => {
            let mut path = expand_slice(slice);
            let unit = if name.ends_with(".slice") {
                (*name).to_owned()
            } else if prefix.is_empty() {
                format!("{name}.scope")
            } else {
                format!("{prefix}-{name}.scope")
            };
            path.push(unit);
            path
        }
        _ => PathBuf::from(cgroups_path.trim_start_matches('/')),
    }
}

/// `a-b-c.slice` → `a.slice/a-b.slice/a-b-c.slice` (systemd's slice nesting); `-.slice` or
/// "" is the root.
fn expand_slice(slice: &str) -> PathBuf {
    let mut path = PathBuf::new();
    let Some(name) = slice.strip_suffix(".slice") else {
        return path;
    };
    if name.is_empty() || name == "-" {
        return path;
    }
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push(format!("{prefix}.slice"));
    }
    path
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| CriError::io("read cgroup file", path, e))
}

fn read_u64(path: &Path) -> Result<u64> {
    let text = read_text(path)?;
    let t = text.trim();
    if t == "max" {
        return Ok(u64::MAX);
    }
    t.parse()
        .map_err(|_| CriError::Internal(format!("{}: not a number: {t:?}", path.display())))
}

/// The value of `key` in a flat keyed file (`memory.stat`, `cpu.stat`, `memory.events`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn available(limit: u64, working_set: u64) -> u64 {
    if limit > UNLIMITED_MEMORY {
        0
    } else {
        limit.saturating_sub(working_set)
    }
}

/// The usage of the cgroup `cgroups_path` in `layout`.
pub fn read_stats(layout: &CgroupLayout, cgroups_path: &str) -> Result<CgroupStats> {
    let rel = cgroup_relative_path(cgroups_path);
    match layout {
        CgroupLayout::V1(root) => {
            let cpu =
                read_u64(&v1_dir(root, &["cpuacct", "cpu,cpuacct"], &rel).join("cpuacct.usage"))?;
            let mem = root.join("memory").join(&rel);
            let usage = read_u64(&mem.join("memory.usage_in_bytes"))?;
            let limit = read_u64(&mem.join("memory.limit_in_bytes"))?;
            let stat = read_text(&mem.join("memory.stat"))?;
            let inactive = keyed(&stat, "total_inactive_file").unwrap_or(0);
            let working_set = usage.saturating_sub(inactive);
            Ok(CgroupStats {
                cpu_usage_nanos: cpu,
                memory_usage: usage,
                working_set,
                rss: keyed(&stat, "total_rss").unwrap_or(0),
                page_faults: keyed(&stat, "total_pgfault").unwrap_or(0),
                major_page_faults: keyed(&stat, "total_pgmajfault").unwrap_or(0),
                available: available(limit, working_set),
                oom_kills: oom_kills_v1(&mem).unwrap_or(0),
            })
        }
        CgroupLayout::V2(root) => {
            let dir = root.join(&rel);
            let cpu = read_text(&dir.join("cpu.stat"))?;
            let usage = read_u64(&dir.join("memory.current"))?;
            let limit = read_u64(&dir.join("memory.max"))?;
            let stat = read_text(&dir.join("memory.stat"))?;
            let inactive = keyed(&stat, "inactive_file").unwrap_or(0);
            let working_set = usage.saturating_sub(inactive);
            Ok(CgroupStats {
                cpu_usage_nanos: keyed(&cpu, "usage_usec").unwrap_or(0).saturating_mul(1000),
                memory_usage: usage,
                working_set,
                rss: keyed(&stat, "anon").unwrap_or(0),
                page_faults: keyed(&stat, "pgfault").unwrap_or(0),
                major_page_faults: keyed(&stat, "pgmajfault").unwrap_or(0),
                available: available(limit, working_set),
                oom_kills: oom_kills_v2(&dir).unwrap_or(0),
            })
        }
    }
}

/// The first of `controllers`' hierarchies that has the cgroup (v1 mounts cpuacct alone or
/// co-mounted with cpu).
fn v1_dir(root: &Path, controllers: &[&str], rel: &Path) -> PathBuf {
    controllers
        .iter()
        .map(|c| root.join(c).join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| root.join(controllers[0]).join(rel))
}

fn oom_kills_v1(memory_dir: &Path) -> Option<u64> {
    keyed(
        &read_text(&memory_dir.join("memory.oom_control")).ok()?,
        "oom_kill",
    )
}

fn oom_kills_v2(dir: &Path) -> Option<u64> {
    keyed(&read_text(&dir.join("memory.events")).ok()?, "oom_kill")
}

/// How often the OOM killer killed in the cgroup; `None` when the cgroup or the counter is
/// not there (a removed cgroup, a kernel before 4.13).
pub fn oom_kills(layout: &CgroupLayout, cgroups_path: &str) -> Option<u64> {
    let rel = cgroup_relative_path(cgroups_path);
    match layout {
        CgroupLayout::V1(root) => oom_kills_v1(&root.join("memory").join(rel)),
        CgroupLayout::V2(root) => oom_kills_v2(&root.join(rel)),
    }
}

/// CPU use in nanocores between two samples (containerd `getUsageNanoCores`): the CPU time
/// used divided by the wall time passed.
pub fn nano_cores(prev_usage: u64, prev_at: i64, usage: u64, at: i64) -> u64 {
    let wall = at.saturating_sub(prev_at);
    if wall <= 0 || usage < prev_usage {
        return 0;
    }
    let used = (usage - prev_usage) as f64;
    (used / wall as f64 * 1e9) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn systemd_and_plain_paths() {
        assert_eq!(
            cgroup_relative_path("/k8s.io/abc"),
            PathBuf::from("k8s.io/abc")
        );
        assert_eq!(
            cgroup_relative_path("kubepods-besteffort.slice:cri-containerd:abc"),
            PathBuf::from("kubepods.slice/kubepods-besteffort.slice/cri-containerd-abc.scope")
        );
        assert_eq!(
            cgroup_relative_path("system.slice:cri:x"),
            PathBuf::from("system.slice/cri-x.scope")
        );
    }

    #[test]
    fn v1_files_read_as_cri_usage() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(&r.join("cpu,cpuacct/k/c/cpuacct.usage"), "123456\n");
        write(&r.join("memory/k/c/memory.usage_in_bytes"), "1000\n");
        write(
            &r.join("memory/k/c/memory.limit_in_bytes"),
            "9223372036854771712\n",
        );
        write(
            &r.join("memory/k/c/memory.stat"),
            "cache 5\ntotal_inactive_file 300\ntotal_rss 600\ntotal_pgfault 7\ntotal_pgmajfault 1\n",
        );
        write(
            &r.join("memory/k/c/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        let layout = CgroupLayout::V1(r.to_path_buf());
        let s = read_stats(&layout, "/k/c").unwrap();
        assert_eq!(
            s,
            CgroupStats {
                cpu_usage_nanos: 123456,
                memory_usage: 1000,
                working_set: 700,
                rss: 600,
                page_faults: 7,
                major_page_faults: 1,
                available: 0,
                oom_kills: 2,
            }
        );
        assert_eq!(oom_kills(&layout, "/k/c"), Some(2));
        assert_eq!(oom_kills(&layout, "/k/gone"), None);
    }

    #[test]
    fn v2_files_read_as_cri_usage() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(&r.join("k/c/cpu.stat"), "usage_usec 50\nuser_usec 40\n");
        write(&r.join("k/c/memory.current"), "4096\n");
        write(&r.join("k/c/memory.max"), "10000\n");
        write(
            &r.join("k/c/memory.stat"),
            "anon 2048\ninactive_file 96\npgfault 3\npgmajfault 0\n",
        );
        write(&r.join("k/c/memory.events"), "low 0\noom 1\noom_kill 1\n");
        let s = read_stats(&CgroupLayout::V2(r.to_path_buf()), "/k/c").unwrap();
        assert_eq!(s.cpu_usage_nanos, 50_000);
        assert_eq!((s.working_set, s.available, s.rss), (4000, 6000, 2048));
        assert_eq!(s.oom_kills, 1);
    }

    #[test]
    fn nano_cores_is_cpu_time_over_wall_time() {
        assert_eq!(nano_cores(0, 0, 500_000_000, 1_000_000_000), 500_000_000);
        assert_eq!(nano_cores(10, 5, 20, 5), 0);
    }
}
