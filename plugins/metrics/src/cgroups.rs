//! The per-container series of a shim's `Stats` answer, under containerd's names
//! (`metrics/cgroups/v1` and `v2`: a `container_` prefix, the unit as a suffix, every series a
//! gauge). A cgroup v1 host and a cgroup v2 host therefore name some series differently, as
//! with containerd: CPU time is `container_cpu_total_nanoseconds` on v1 and
//! `container_cpu_usage_usec_microseconds` on v2, memory in use `container_memory_usage_usage_bytes`
//! on v1 and `container_memory_usage_bytes` on v2.

use berth_proto::io::containerd::cgroups::{v1, v2};
use berth_proto::prost_types::Any;
use prost::Message;

/// A shim's cgroup metrics, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Stats {
    /// `io.containerd.cgroups.v1.Metrics`.
    V1(Box<v1::Metrics>),
    /// `io.containerd.cgroups.v2.Metrics`.
    V2(Box<v2::Metrics>),
}

/// Why a `Stats` answer was not usable.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The `Any` holds another type.
    #[error("stats of type {0:?} are not cgroup metrics")]
    UnknownType(String),
    /// The bytes do not decode.
    #[error("decode {type_url}: {source}")]
    Decode {
        /// The `Any`'s type.
        type_url: String,
        /// The protobuf error.
        source: prost::DecodeError,
    },
}

impl Stats {
    /// Decodes the `Any` a shim's `Stats` returns.
    pub fn decode(any: &Any) -> Result<Stats, StatsError> {
        let url = any.type_url.as_str();
        let decode_err = |source| StatsError::Decode {
            type_url: url.to_owned(),
            source,
        };
        if url.ends_with("io.containerd.cgroups.v1.Metrics") {
            let m = v1::Metrics::decode(any.value.as_slice()).map_err(decode_err)?;
            Ok(Stats::V1(Box::new(m)))
        } else if url.ends_with("io.containerd.cgroups.v2.Metrics") {
            let m = v2::Metrics::decode(any.value.as_slice()).map_err(decode_err)?;
            Ok(Stats::V2(Box::new(m)))
        } else {
            Err(StatsError::UnknownType(url.to_owned()))
        }
    }

    /// Every sample, each with its series name, help, labels beyond the container's, and value.
    pub fn samples(&self, out: &mut dyn FnMut(Sample)) {
        match self {
            Stats::V1(m) => v1_samples(m, out),
            Stats::V2(m) => v2_samples(m, out),
        }
    }
}

/// One sample of a container's series.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series name.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Labels besides `namespace` and `container_id`.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: u64,
}

fn plain(name: &'static str, help: &'static str, value: u64) -> Sample {
    Sample {
        name,
        help,
        labels: Vec::new(),
        value,
    }
}

fn v1_samples(m: &v1::Metrics, out: &mut dyn FnMut(Sample)) {
    if let Some(cpu) = &m.cpu {
        if let Some(u) = &cpu.usage {
            out(plain(
                "container_cpu_total_nanoseconds",
                "The total cpu time",
                u.total,
            ));
            out(plain(
                "container_cpu_kernel_nanoseconds",
                "The total kernel cpu time",
                u.kernel,
            ));
            out(plain(
                "container_cpu_user_nanoseconds",
                "The total user cpu time",
                u.user,
            ));
            for (i, v) in u.per_cpu.iter().enumerate() {
                out(Sample {
                    name: "container_per_cpu_nanoseconds",
                    help: "The total cpu time per cpu",
                    labels: vec![("cpu", i.to_string())],
                    value: *v,
                });
            }
        }
        if let Some(t) = &cpu.throttling {
            out(plain(
                "container_cpu_throttle_periods_total",
                "The total throttle periods",
                t.periods,
            ));
            out(plain(
                "container_cpu_throttled_periods_total",
                "The total throttled periods",
                t.throttled_periods,
            ));
            out(plain(
                "container_cpu_throttled_time_nanoseconds",
                "The total throttled time",
                t.throttled_time,
            ));
        }
    }
    if let Some(mem) = &m.memory {
        for (name, help, v) in [
            (
                "container_memory_cache_bytes",
                "The cache amount used",
                mem.cache,
            ),
            ("container_memory_rss_bytes", "The rss amount used", mem.rss),
            (
                "container_memory_rss_huge_bytes",
                "The rss_huge amount used",
                mem.rss_huge,
            ),
            (
                "container_memory_mapped_file_bytes",
                "The mapped_file amount used",
                mem.mapped_file,
            ),
            (
                "container_memory_dirty_bytes",
                "The dirty amount",
                mem.dirty,
            ),
            (
                "container_memory_writeback_bytes",
                "The writeback amount",
                mem.writeback,
            ),
            (
                "container_memory_inactive_anon_bytes",
                "The inactive_anon amount",
                mem.inactive_anon,
            ),
            (
                "container_memory_active_anon_bytes",
                "The active_anon amount",
                mem.active_anon,
            ),
            (
                "container_memory_inactive_file_bytes",
                "The inactive_file amount",
                mem.inactive_file,
            ),
            (
                "container_memory_active_file_bytes",
                "The active_file amount",
                mem.active_file,
            ),
            (
                "container_memory_unevictable_bytes",
                "The unevictable amount",
                mem.unevictable,
            ),
            (
                "container_memory_total_cache_bytes",
                "The total_cache amount used",
                mem.total_cache,
            ),
            (
                "container_memory_total_rss_bytes",
                "The total_rss amount used",
                mem.total_rss,
            ),
        ] {
            out(plain(name, help, v));
        }
        let entries = [
            (
                &mem.usage,
                [
                    ("container_memory_usage_failcnt_total", "The usage failcnt"),
                    ("container_memory_usage_limit_bytes", "The memory limit"),
                    (
                        "container_memory_usage_max_bytes",
                        "The memory maximum usage",
                    ),
                    ("container_memory_usage_usage_bytes", "The memory usage"),
                ],
            ),
            (
                &mem.swap,
                [
                    ("container_memory_swap_failcnt_total", "The swap failcnt"),
                    ("container_memory_swap_limit_bytes", "The swap limit"),
                    ("container_memory_swap_max_bytes", "The swap maximum usage"),
                    ("container_memory_swap_usage_bytes", "The swap usage"),
                ],
            ),
            (
                &mem.kernel,
                [
                    (
                        "container_memory_kernel_failcnt_total",
                        "The kernel failcnt",
                    ),
                    ("container_memory_kernel_limit_bytes", "The kernel limit"),
                    (
                        "container_memory_kernel_max_bytes",
                        "The kernel maximum usage",
                    ),
                    ("container_memory_kernel_usage_bytes", "The kernel usage"),
                ],
            ),
        ];
        for (entry, names) in entries {
            if let Some(e) = entry {
                for ((name, help), v) in names.into_iter().zip([e.failcnt, e.limit, e.max, e.usage])
                {
                    out(plain(name, help, v));
                }
            }
        }
    }
    if let Some(p) = &m.pids {
        pids(p.current, p.limit, out);
    }
    if let Some(b) = &m.blkio {
        for (name, help, entries) in [
            (
                "container_blkio_io_service_bytes_recursive_bytes",
                "The blkio io service bytes recursive",
                &b.io_service_bytes_recursive,
            ),
            (
                "container_blkio_io_serviced_recursive_total",
                "The blkio io serviced recursive",
                &b.io_serviced_recursive,
            ),
            (
                "container_blkio_io_queued_recursive_total",
                "The blkio io queued recursive",
                &b.io_queued_recursive,
            ),
            (
                "container_blkio_io_merged_recursive_total",
                "The blkio io merged recursive",
                &b.io_merged_recursive,
            ),
            (
                "container_blkio_io_service_time_recursive_total",
                "The blkio io service time recursive",
                &b.io_service_time_recursive,
            ),
            (
                "container_blkio_io_time_recursive_total",
                "The blkio io time recursive",
                &b.io_time_recursive,
            ),
            (
                "container_blkio_sectors_recursive_total",
                "The blkio sectors recursive",
                &b.sectors_recursive,
            ),
        ] {
            for e in entries {
                out(Sample {
                    name,
                    help,
                    labels: vec![
                        ("op", e.op.clone()),
                        ("device", e.device.clone()),
                        ("major", e.major.to_string()),
                        ("minor", e.minor.to_string()),
                    ],
                    value: e.value,
                });
            }
        }
    }
    for h in &m.hugetlb {
        for (name, help, v) in [
            (
                "container_hugetlb_usage_bytes",
                "The hugetlb usage",
                h.usage,
            ),
            (
                "container_hugetlb_max_bytes",
                "The hugetlb maximum usage",
                h.max,
            ),
            (
                "container_hugetlb_failcnt_total",
                "The hugetlb failcnt",
                h.failcnt,
            ),
        ] {
            out(Sample {
                name,
                help,
                labels: vec![("page", h.pagesize.clone())],
                value: v,
            });
        }
    }
}

fn v2_samples(m: &v2::Metrics, out: &mut dyn FnMut(Sample)) {
    if let Some(c) = &m.cpu {
        for (name, help, v) in [
            ("container_cpu_usage_usec_microseconds", "Total cpu usage (cgroup v2)", c.usage_usec),
            ("container_cpu_user_usec_microseconds", "Current cpu usage in user space (cgroup v2)", c.user_usec),
            ("container_cpu_system_usec_microseconds", "Current cpu usage in kernel space (cgroup v2)", c.system_usec),
            ("container_cpu_nr_periods_total", "Current cpu number of periods (only if controller is enabled)", c.nr_periods),
            ("container_cpu_nr_throttled_total", "Total number of times tasks have been throttled (only if controller is enabled)", c.nr_throttled),
            ("container_cpu_throttled_usec_microseconds", "Total time duration for which tasks have been throttled. (only if controller is enabled)", c.throttled_usec),
        ] {
            out(plain(name, help, v));
        }
    }
    if let Some(mem) = &m.memory {
        for (name, help, v) in [
            ("container_memory_usage_bytes", "Current memory usage (cgroup v2)", mem.usage),
            ("container_memory_usage_limit_bytes", "Current memory usage limit (cgroup v2)", mem.usage_limit),
            ("container_memory_swap_usage_bytes", "Current swap usage (cgroup v2)", mem.swap_usage),
            ("container_memory_swap_limit_bytes", "Current swap usage limit (cgroup v2)", mem.swap_limit),
            ("container_memory_anon_bytes", "Amount of memory used in anonymous mappings", mem.anon),
            ("container_memory_file_bytes", "Amount of memory used to cache filesystem data", mem.file),
            ("container_memory_kernel_stack_bytes", "Amount of memory allocated to kernel stacks", mem.kernel_stack),
            ("container_memory_slab_bytes", "Amount of memory used for storing in-kernel data structures", mem.slab),
            ("container_memory_sock_bytes", "Amount of memory used in network transmission buffers", mem.sock),
            ("container_memory_shmem_bytes", "Amount of cached filesystem data that is swap-backed", mem.shmem),
            ("container_memory_file_mapped_bytes", "Amount of cached filesystem data mapped with mmap()", mem.file_mapped),
            ("container_memory_file_dirty_bytes", "Amount of cached filesystem data that was modified but not yet written back to disk", mem.file_dirty),
            ("container_memory_file_writeback_bytes", "Amount of cached filesystem data that was modified and is currently being written back to disk", mem.file_writeback),
        ] {
            out(plain(name, help, v));
        }
    }
    if let Some(e) = &m.memory_events {
        out(plain(
            "container_memory_oom_total",
            "The number of times a container has received an oom event",
            e.oom,
        ));
    }
    if let Some(p) = &m.pids {
        pids(p.current, p.limit, out);
    }
    if let Some(io) = &m.io {
        for e in &io.usage {
            for (name, help, v) in [
                ("container_io_rbytes_bytes", "IO bytes read", e.rbytes),
                ("container_io_wbytes_bytes", "IO bytes written", e.wbytes),
                ("container_io_rios_total", "Number of read IOs", e.rios),
                ("container_io_wios_total", "Number of write IOs", e.wios),
            ] {
                out(Sample {
                    name,
                    help,
                    labels: vec![
                        ("major", e.major.to_string()),
                        ("minor", e.minor.to_string()),
                    ],
                    value: v,
                });
            }
        }
    }
}

/// The pids series, named alike on v1 and v2.
fn pids(current: u64, limit: u64, out: &mut dyn FnMut(Sample)) {
    out(plain(
        "container_pids_current",
        "The current number of pids",
        current,
    ));
    out(plain(
        "container_pids_limit",
        "The limit to the number of pids allowed",
        limit,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> Any {
        Any {
            type_url: type_url.to_owned(),
            value,
        }
    }

    fn collect(stats: &Stats) -> Vec<Sample> {
        let mut all = Vec::new();
        stats.samples(&mut |s| all.push(s));
        all
    }

    fn value(samples: &[Sample], name: &str) -> Option<u64> {
        samples.iter().find(|s| s.name == name).map(|s| s.value)
    }

    #[test]
    fn v1_metrics_become_containerds_series() {
        let m = v1::Metrics {
            cpu: Some(v1::CpuStat {
                usage: Some(v1::CpuUsage {
                    total: 7,
                    per_cpu: vec![3, 4],
                    ..Default::default()
                }),
                throttling: None,
            }),
            memory: Some(v1::MemoryStat {
                usage: Some(v1::MemoryEntry {
                    usage: 4096,
                    limit: 8192,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            pids: Some(v1::PidsStat {
                current: 2,
                limit: 0,
            }),
            blkio: Some(v1::BlkIoStat {
                io_service_bytes_recursive: vec![v1::BlkIoEntry {
                    op: "Read".into(),
                    major: 8,
                    value: 512,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let stats =
            Stats::decode(&any("io.containerd.cgroups.v1.Metrics", m.encode_to_vec())).unwrap();
        let s = collect(&stats);
        assert_eq!(value(&s, "container_cpu_total_nanoseconds"), Some(7));
        assert_eq!(value(&s, "container_memory_usage_usage_bytes"), Some(4096));
        assert_eq!(value(&s, "container_memory_usage_limit_bytes"), Some(8192));
        assert_eq!(value(&s, "container_pids_current"), Some(2));
        assert_eq!(value(&s, "container_memory_swap_usage_bytes"), None);
        let per_cpu: Vec<_> = s
            .iter()
            .filter(|s| s.name == "container_per_cpu_nanoseconds")
            .map(|s| (s.labels[0].1.as_str(), s.value))
            .collect();
        assert_eq!(per_cpu, [("0", 3), ("1", 4)]);
        let blkio = s
            .iter()
            .find(|s| s.name == "container_blkio_io_service_bytes_recursive_bytes")
            .unwrap();
        assert_eq!(blkio.value, 512);
        assert!(blkio.labels.contains(&("op", "Read".into())));
        assert!(blkio.labels.contains(&("major", "8".into())));
    }

    #[test]
    fn v2_metrics_become_containerds_series() {
        let m = v2::Metrics {
            cpu: Some(v2::CpuStat {
                usage_usec: 11,
                ..Default::default()
            }),
            memory: Some(v2::MemoryStat {
                usage: 1 << 20,
                ..Default::default()
            }),
            io: Some(v2::IoStat {
                usage: vec![v2::IoEntry {
                    major: 253,
                    minor: 1,
                    rbytes: 9,
                    ..Default::default()
                }],
            }),
            ..Default::default()
        };
        let stats = Stats::decode(&any(
            "type.googleapis.com/io.containerd.cgroups.v2.Metrics",
            m.encode_to_vec(),
        ))
        .unwrap();
        let s = collect(&stats);
        assert_eq!(value(&s, "container_cpu_usage_usec_microseconds"), Some(11));
        assert_eq!(value(&s, "container_memory_usage_bytes"), Some(1 << 20));
        assert_eq!(value(&s, "container_io_rbytes_bytes"), Some(9));
        assert_eq!(value(&s, "container_pids_current"), None);
    }

    #[test]
    fn other_types_are_refused_by_name() {
        let err = Stats::decode(&any("x.Other", vec![])).unwrap_err();
        assert!(err.to_string().contains("x.Other"), "{err}");
        let err = Stats::decode(&any("io.containerd.cgroups.v1.Metrics", vec![0xff])).unwrap_err();
        assert!(matches!(err, StatsError::Decode { .. }), "{err}");
    }
}
