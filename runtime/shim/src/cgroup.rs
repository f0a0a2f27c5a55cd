//! The container's cgroup: metrics for `Stats` (containerd/cgroups `stats/v1`, `v2/stats`) and
//! OOM notification (v1: `memory.oom_control` + `cgroup.event_control` eventfd; v2: the
//! `oom_kill` counter of `memory.events`, polled).
//!
//! The files are read directly: each is one line or a `key value` table, and reading them here
//! keeps the parsers testable on fake trees without root.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_proto::io::containerd::cgroups::{v1, v2};
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::io::unix::AsyncFd;

use crate::error::{Result, ShimError};

/// Where cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The container's cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// Hybrid/legacy: a directory per controller.
    V1 {
        /// Mount root (normally `/sys/fs/cgroup`).
        root: PathBuf,
        /// controller → path inside its hierarchy.
        paths: HashMap<String, String>,
    },
    /// Unified hierarchy.
    V2 {
        /// The cgroup directory.
        dir: PathBuf,
    },
}

/// Whether the host runs the unified hierarchy at `root`.
pub fn is_unified(root: &Path) -> bool {
    root.join("cgroup.controllers").exists()
}

/// Parses `/proc/<pid>/cgroup`: controller → path, with `""` for the v2 entry.
pub fn parse_proc_cgroup(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            out.insert(String::new(), path.to_owned());
        }
        for c in controllers.split(',').filter(|c| !c.is_empty()) {
            out.insert(c.trim_start_matches("name=").to_owned(), path.to_owned());
        }
    }
    out
}

impl Cgroup {
    /// The cgroups of `pid`, under the hierarchy mounted at `root`.
    pub fn of_pid(root: &Path, pid: u32) -> Result<Cgroup> {
        let file = format!("/proc/{pid}/cgroup");
        let text = std::fs::read_to_string(&file).map_err(|e| ShimError::io("read", &file, e))?;
        Ok(Cgroup::from_proc(root, &text))
    }

    /// Builds from the text of `/proc/<pid>/cgroup`.
    pub fn from_proc(root: &Path, text: &str) -> Cgroup {
        let paths = parse_proc_cgroup(text);
        if is_unified(root) {
            let rel = paths.get("").cloned().unwrap_or_default();
            Cgroup::V2 {
                dir: root.join(rel.trim_start_matches('/')),
            }
        } else {
            Cgroup::V1 {
                root: root.to_owned(),
                paths,
            }
        }
    }

    fn v1_dir(&self, controller: &str) -> Option<PathBuf> {
        match self {
            Cgroup::V1 { root, paths } => paths
                .get(controller)
                .map(|p| root.join(controller).join(p.trim_start_matches('/'))),
            Cgroup::V2 { .. } => None,
        }
    }

    /// The metrics as an `Any` with containerd's type URL.
    pub fn stats(&self) -> prost_types::Any {
        use prost::Message;
        match self {
            Cgroup::V1 { .. } => prost_types::Any {
                type_url: crate::constants::type_url::CGROUPS_V1_METRICS.to_owned(),
                value: self.v1_metrics().encode_to_vec(),
            },
            Cgroup::V2 { dir } => prost_types::Any {
                type_url: crate::constants::type_url::CGROUPS_V2_METRICS.to_owned(),
                value: v2_metrics(dir).encode_to_vec(),
            },
        }
    }

    /// cgroup v1 metrics; missing controllers leave their section empty.
    pub fn v1_metrics(&self) -> v1::Metrics {
        let mut m = v1::Metrics::default();
        if let Some(dir) = self.v1_dir("pids") {
            m.pids = Some(v1::PidsStat {
                current: read_u64(&dir.join("pids.current")),
                limit: read_u64(&dir.join("pids.max")),
            });
        }
        let cpuacct = self.v1_dir("cpuacct");
        let cpu = self.v1_dir("cpu");
        if cpuacct.is_some() || cpu.is_some() {
            let mut stat = v1::CpuStat::default();
            if let Some(dir) = &cpuacct {
                let ticks = read_table(&dir.join("cpuacct.stat"));
                // cpuacct.stat is in USER_HZ ticks (100/s on Linux).
                let to_ns = |t: u64| t.saturating_mul(1_000_000_000 / 100);
                stat.usage = Some(v1::CpuUsage {
                    total: read_u64(&dir.join("cpuacct.usage")),
                    kernel: to_ns(ticks.get("system").copied().unwrap_or(0)),
                    user: to_ns(ticks.get("user").copied().unwrap_or(0)),
                    per_cpu: read_list(&dir.join("cpuacct.usage_percpu")),
                });
            }
            if let Some(dir) = &cpu {
                let t = read_table(&dir.join("cpu.stat"));
                stat.throttling = Some(v1::Throttle {
                    periods: t.get("nr_periods").copied().unwrap_or(0),
                    throttled_periods: t.get("nr_throttled").copied().unwrap_or(0),
                    throttled_time: t.get("throttled_time").copied().unwrap_or(0),
                });
            }
            m.cpu = Some(stat);
        }
        if let Some(dir) = self.v1_dir("memory") {
            m.memory = Some(v1_memory(&dir));
            let oom = read_table(&dir.join("memory.oom_control"));
            m.memory_oom_control = Some(v1::MemoryOomControl {
                oom_kill_disable: oom.get("oom_kill_disable").copied().unwrap_or(0),
                under_oom: oom.get("under_oom").copied().unwrap_or(0),
                oom_kill: oom.get("oom_kill").copied().unwrap_or(0),
            });
        }
        if let Some(dir) = self.v1_dir("blkio") {
            m.blkio = Some(v1_blkio(&dir));
        }
        m
    }

    /// The memory cgroup directory (v1) or the cgroup (v2), for OOM watching.
    pub fn memory_dir(&self) -> Option<PathBuf> {
        match self {
            Cgroup::V1 { .. } => self.v1_dir("memory"),
            Cgroup::V2 { dir } => Some(dir.clone()),
        }
    }
}

fn read_u64(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn read_list(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .map(|s| {
            s.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Parses a `key value` per line file.
pub fn parse_table(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_owned(), it.next()?.parse().ok()?))
        })
        .collect()
}

fn read_table(path: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(path)
        .map(|t| parse_table(&t))
        .unwrap_or_default()
}

fn v1_entry(dir: &Path, prefix: &str) -> v1::MemoryEntry {
    let f = |name: &str| read_u64(&dir.join(format!("{prefix}.{name}")));
    v1::MemoryEntry {
        limit: f("limit_in_bytes"),
        usage: f("usage_in_bytes"),
        max: f("max_usage_in_bytes"),
        failcnt: f("failcnt"),
    }
}

fn v1_memory(dir: &Path) -> v1::MemoryStat {
    let s = read_table(&dir.join("memory.stat"));
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    v1::MemoryStat {
        cache: g("cache"),
        rss: g("rss"),
        rss_huge: g("rss_huge"),
        mapped_file: g("mapped_file"),
        dirty: g("dirty"),
        writeback: g("writeback"),
        pg_pg_in: g("pgpgin"),
        pg_pg_out: g("pgpgout"),
        pg_fault: g("pgfault"),
        pg_maj_fault: g("pgmajfault"),
        inactive_anon: g("inactive_anon"),
        active_anon: g("active_anon"),
        inactive_file: g("inactive_file"),
        active_file: g("active_file"),
        unevictable: g("unevictable"),
        hierarchical_memory_limit: g("hierarchical_memory_limit"),
        hierarchical_swap_limit: g("hierarchical_memsw_limit"),
        total_cache: g("total_cache"),
        total_rss: g("total_rss"),
        total_rss_huge: g("total_rss_huge"),
        total_mapped_file: g("total_mapped_file"),
        total_dirty: g("total_dirty"),
        total_writeback: g("total_writeback"),
        total_pg_pg_in: g("total_pgpgin"),
        total_pg_pg_out: g("total_pgpgout"),
        total_pg_fault: g("total_pgfault"),
        total_pg_maj_fault: g("total_pgmajfault"),
        total_inactive_anon: g("total_inactive_anon"),
        total_active_anon: g("total_active_anon"),
        total_inactive_file: g("total_inactive_file"),
        total_active_file: g("total_active_file"),
        total_unevictable: g("total_unevictable"),
        usage: Some(v1_entry(dir, "memory")),
        swap: Some(v1_entry(dir, "memory.memsw")),
        kernel: Some(v1_entry(dir, "memory.kmem")),
        kernel_tcp: Some(v1_entry(dir, "memory.kmem.tcp")),
    }
}

/// Parses blkio lines `MAJ:MIN Op Value` (the `Total` line has no device and is skipped).
pub fn parse_blkio(text: &str) -> Vec<v1::BlkIoEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [dev, op, value] = f.as_slice() else {
                return None;
            };
            let (major, minor) = dev.split_once(':')?;
            Some(v1::BlkIoEntry {
                op: (*op).to_owned(),
                device: String::new(),
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

fn v1_blkio(dir: &Path) -> v1::BlkIoStat {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(format!("blkio.{name}")))
            .map(|t| parse_blkio(&t))
            .unwrap_or_default()
    };
    if dir.join("blkio.io_serviced_recursive").exists() {
        v1::BlkIoStat {
            io_service_bytes_recursive: read("io_service_bytes_recursive"),
            io_serviced_recursive: read("io_serviced_recursive"),
            io_queued_recursive: read("io_queued_recursive"),
            io_service_time_recursive: read("io_service_time_recursive"),
            io_wait_time_recursive: read("io_wait_time_recursive"),
            io_merged_recursive: read("io_merged_recursive"),
            io_time_recursive: read("time_recursive"),
            sectors_recursive: read("sectors_recursive"),
        }
    } else {
        v1::BlkIoStat {
            io_service_bytes_recursive: read("throttle.io_service_bytes"),
            io_serviced_recursive: read("throttle.io_serviced"),
            ..Default::default()
        }
    }
}

fn read_max(path: &Path) -> u64 {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim() == "max" => u64::MAX,
        Ok(s) => s.trim().parse().unwrap_or(0),
        Err(_) => 0,
    }
}

/// cgroup v2 metrics of `dir`.
pub fn v2_metrics(dir: &Path) -> v2::Metrics {
    let cpu = read_table(&dir.join("cpu.stat"));
    let c = |k: &str| cpu.get(k).copied().unwrap_or(0);
    let mem = read_table(&dir.join("memory.stat"));
    let g = |k: &str| mem.get(k).copied().unwrap_or(0);
    let events = read_table(&dir.join("memory.events"));
    let e = |k: &str| events.get(k).copied().unwrap_or(0);
    let io = std::fs::read_to_string(dir.join("io.stat")).unwrap_or_default();
    v2::Metrics {
        pids: Some(v2::PidsStat {
            current: read_u64(&dir.join("pids.current")),
            limit: read_max(&dir.join("pids.max")),
        }),
        cpu: Some(v2::CpuStat {
            usage_usec: c("usage_usec"),
            user_usec: c("user_usec"),
            system_usec: c("system_usec"),
            nr_periods: c("nr_periods"),
            nr_throttled: c("nr_throttled"),
            throttled_usec: c("throttled_usec"),
        }),
        memory: Some(v2::MemoryStat {
            anon: g("anon"),
            file: g("file"),
            kernel_stack: g("kernel_stack"),
            slab: g("slab"),
            sock: g("sock"),
            shmem: g("shmem"),
            file_mapped: g("file_mapped"),
            file_dirty: g("file_dirty"),
            file_writeback: g("file_writeback"),
            anon_thp: g("anon_thp"),
            inactive_anon: g("inactive_anon"),
            active_anon: g("active_anon"),
            inactive_file: g("inactive_file"),
            active_file: g("active_file"),
            unevictable: g("unevictable"),
            slab_reclaimable: g("slab_reclaimable"),
            slab_unreclaimable: g("slab_unreclaimable"),
            pgfault: g("pgfault"),
            pgmajfault: g("pgmajfault"),
            workingset_refault: g("workingset_refault"),
            workingset_activate: g("workingset_activate"),
            workingset_nodereclaim: g("workingset_nodereclaim"),
            pgrefill: g("pgrefill"),
            pgscan: g("pgscan"),
            pgsteal: g("pgsteal"),
            pgactivate: g("pgactivate"),
            pgdeactivate: g("pgdeactivate"),
            pglazyfree: g("pglazyfree"),
            pglazyfreed: g("pglazyfreed"),
            thp_fault_alloc: g("thp_fault_alloc"),
            thp_collapse_alloc: g("thp_collapse_alloc"),
            usage: read_u64(&dir.join("memory.current")),
            usage_limit: read_max(&dir.join("memory.max")),
            swap_usage: read_u64(&dir.join("memory.swap.current")),
            swap_limit: read_max(&dir.join("memory.swap.max")),
        }),
        memory_events: Some(v2::MemoryEvents {
            low: e("low"),
            high: e("high"),
            max: e("max"),
            oom: e("oom"),
            oom_kill: e("oom_kill"),
        }),
        io: Some(v2::IoStat {
            usage: parse_io_stat(&io),
        }),
        ..Default::default()
    }
}

/// Parses v2 `io.stat` lines `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=..`.
pub fn parse_io_stat(text: &str) -> Vec<v2::IoEntry> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (major, minor) = it.next()?.split_once(':')?;
            let mut entry = v2::IoEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                ..Default::default()
            };
            for kv in it {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => entry.rbytes = v,
                    "wbytes" => entry.wbytes = v,
                    "rios" => entry.rios = v,
                    "wios" => entry.wios = v,
                    _ => {}
                }
            }
            Some(entry)
        })
        .collect()
}

/// Registers an eventfd for OOM events of a v1 memory cgroup; readable once per event.
pub fn v1_oom_eventfd(memory_dir: &Path) -> Result<OwnedFd> {
    let control_path = memory_dir.join("memory.oom_control");
    let control =
        std::fs::File::open(&control_path).map_err(|e| ShimError::io("open", &control_path, e))?;
    let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| ShimError::sys("eventfd", e))?;
    let efd = OwnedFd::from(efd);
    let event_control = memory_dir.join("cgroup.event_control");
    std::fs::write(
        &event_control,
        format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()),
    )
    .map_err(|e| ShimError::io("write", &event_control, e))?;
    // The kernel keeps its own reference to memory.oom_control.
    Ok(efd)
}

/// Watches the cgroup and calls `on_oom` for every OOM until the cgroup goes away.
pub async fn watch_oom<F>(cgroup: Cgroup, on_oom: F)
where
    F: Fn() + Send + 'static,
{
    let Some(dir) = cgroup.memory_dir() else {
        return;
    };
    match cgroup {
        Cgroup::V1 { .. } => {
            let fd = match v1_oom_eventfd(&dir).and_then(|fd| {
                // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open and unchanged
                // for as long as it is registered.
                unsafe { AsyncFd::register(fd) }
                    .map_err(|e| ShimError::io("register eventfd", &dir, e.into()))
            }) {
                Ok(fd) => fd,
                Err(err) => {
                    tracing::warn!(error = %err, "oom notifications unavailable");
                    return;
                }
            };
            loop {
                let Ok(mut guard) = fd.readable().await else {
                    return;
                };
                let mut buf = [0u8; 8];
                match guard.try_io(|fd| {
                    nix::unistd::read(fd.get_ref(), &mut buf).map_err(std::io::Error::from)
                }) {
                    Ok(Ok(8)) => {
                        // The eventfd also fires when the cgroup is removed.
                        if !dir.join("memory.oom_control").exists() {
                            return;
                        }
                        on_oom();
                    }
                    Ok(_) => return,
                    Err(_would_block) => continue,
                }
            }
        }
        Cgroup::V2 { .. } => {
            let events = dir.join("memory.events");
            let mut last = read_table_async(&events).await.unwrap_or(0);
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(now) = read_table_async(&events).await else {
                    return;
                };
                if now > last {
                    on_oom();
                }
                last = now;
            }
        }
    }
}

async fn read_table_async(path: &Path) -> Option<u64> {
    let text = tokio::fs::read_to_string(path).await.ok()?;
    parse_table(&text).get("oom_kill").copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_v1_and_v2() {
        let text =
            "9:name=systemd:/default/t1\n4:memory:/default/t1\n2:cpu,cpuacct:/default/t1\n0::/\n";
        let p = parse_proc_cgroup(text);
        assert_eq!(p["memory"], "/default/t1");
        assert_eq!(p["cpuacct"], "/default/t1");
        assert_eq!(p["cpu"], "/default/t1");
        assert_eq!(p["systemd"], "/default/t1");
        assert_eq!(p[""], "/");
    }

    #[test]
    fn v1_metrics_from_fake_tree() {
        let root = tempfile::tempdir().unwrap();
        let mem = root.path().join("memory/default/t1");
        let acct = root.path().join("cpuacct/default/t1");
        let pids = root.path().join("pids/default/t1");
        for d in [&mem, &acct, &pids] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(
            mem.join("memory.stat"),
            "cache 4096\nrss 8192\ntotal_rss 8192\n",
        )
        .unwrap();
        std::fs::write(mem.join("memory.usage_in_bytes"), "12288\n").unwrap();
        std::fs::write(mem.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        std::fs::write(acct.join("cpuacct.usage"), "5000\n").unwrap();
        std::fs::write(acct.join("cpuacct.usage_percpu"), "3000 2000 \n").unwrap();
        std::fs::write(acct.join("cpuacct.stat"), "user 3\nsystem 1\n").unwrap();
        std::fs::write(pids.join("pids.current"), "2\n").unwrap();
        std::fs::write(pids.join("pids.max"), "max\n").unwrap();
        let cg = Cgroup::from_proc(
            root.path(),
            "4:memory:/default/t1\n3:cpuacct:/default/t1\n2:pids:/default/t1\n",
        );
        assert!(matches!(cg, Cgroup::V1 { .. }));
        let m = cg.v1_metrics();
        let memory = m.memory.unwrap();
        assert_eq!(memory.cache, 4096);
        assert_eq!(memory.total_rss, 8192);
        assert_eq!(memory.usage.unwrap().usage, 12288);
        assert_eq!(m.memory_oom_control.unwrap().oom_kill, 2);
        let cpu = m.cpu.unwrap().usage.unwrap();
        assert_eq!(cpu.total, 5000);
        assert_eq!(cpu.per_cpu, vec![3000, 2000]);
        assert_eq!(cpu.user, 30_000_000);
        assert_eq!(m.pids.unwrap().current, 2);
        assert_eq!(cg.stats().type_url, "io.containerd.cgroups.v1.Metrics");
    }

    #[test]
    fn v2_from_fake_tree() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let dir = root.path().join("default/t1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.current"), "100\n").unwrap();
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("cpu.stat"),
            "usage_usec 7\nuser_usec 5\nsystem_usec 2\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("io.stat"),
            "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0\n",
        )
        .unwrap();
        let cg = Cgroup::from_proc(root.path(), "0::/default/t1\n");
        assert_eq!(cg, Cgroup::V2 { dir: dir.clone() });
        let m = v2_metrics(&dir);
        let mem = m.memory.unwrap();
        assert_eq!(mem.usage, 100);
        assert_eq!(mem.usage_limit, u64::MAX);
        assert_eq!(m.memory_events.unwrap().oom_kill, 1);
        assert_eq!(m.cpu.unwrap().usage_usec, 7);
        let io = &m.io.unwrap().usage[0];
        assert_eq!((io.major, io.minor, io.rbytes, io.wios), (8, 0, 1, 4));
        assert_eq!(cg.stats().type_url, "io.containerd.cgroups.v2.Metrics");
    }

    #[test]
    fn blkio_lines() {
        let e = parse_blkio("8:0 Read 10\n8:0 Write 20\nTotal 30\n");
        assert_eq!(e.len(), 2);
        assert_eq!((e[1].op.as_str(), e[1].value), ("Write", 20));
    }
}
