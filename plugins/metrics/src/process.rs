//! The daemon's own process series under client_golang's process collector names
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, ...),
//! read from `/proc/self` when encoded (on the blocking pool).

use std::path::Path;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

/// What `/proc/self` says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessFigures {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: u64,
    /// Start time since the epoch, in seconds.
    pub start_time_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit of open file descriptors.
    pub max_fds: Option<u64>,
}

/// Parses `/proc/<pid>/stat` (`ticks` per second, `page` bytes, the boot time `btime` in
/// seconds since the epoch): CPU, memory and start time.
fn parse_stat(stat: &str, ticks: f64, page: u64, btime: u64) -> Option<ProcessFigures> {
    // The command name may hold spaces and parentheses; the fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field numbers of proc(5), counted from 1 at the pid: the state is field 3, here index 0.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let (utime, stime) = (field(14)?, field(15)?);
    let start_ticks = field(22)?;
    Some(ProcessFigures {
        cpu_seconds: (utime + stime) as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page,
        start_time_seconds: btime as f64 + start_ticks as f64 / ticks,
        open_fds: 0,
        max_fds: None,
    })
}

/// The soft "Max open files" of `/proc/<pid>/limits`.
fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `btime` of `/proc/stat`.
fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Reads the figures of the process whose proc directory is `dir`. Blocking.
pub fn read(dir: &Path) -> Option<ProcessFigures> {
    use nix::unistd::{sysconf, SysconfVar};
    let ticks = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    let page = sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    let btime = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| parse_btime(&s))
        .unwrap_or(0);
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let mut figures = parse_stat(&stat, ticks, page, btime)?;
    figures.open_fds = std::fs::read_dir(dir.join("fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    figures.max_fds = std::fs::read_to_string(dir.join("limits"))
        .ok()
        .and_then(|l| parse_max_fds(&l));
    Some(figures)
}

/// The collector of the daemon's own process series.
#[derive(Debug, Default)]
pub struct Process;

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> Result<(), std::fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = read(Path::new("/proc/self")) else {
            return Ok(());
        };
        let cpu = ConstCounter::new(p.cpu_seconds);
        // The encoder appends `_total` to counters.
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            p.resident_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            p.virtual_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            p.start_time_seconds,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Number of open file descriptors",
            p.open_fds,
        )?;
        if let Some(max) = p.max_fds {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors",
                max,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let stat = "1234 (we ird) name)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 \
                    3 0 1000 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1";
        let p = parse_stat(stat, 100.0, 4096, 1_700_000_000).unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.virtual_bytes, 104_857_600);
        assert_eq!(p.resident_bytes, 2560 * 4096);
        assert_eq!(p.start_time_seconds, 1_700_000_010.0);
        assert_eq!(parse_stat("garbage", 100.0, 4096, 0), None);
    }

    #[test]
    fn limits_and_boot_time() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_btime("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn this_process_is_read() {
        let p = read(Path::new("/proc/self")).unwrap();
        assert!(p.resident_bytes > 0 && p.open_fds > 0, "{p:?}");
    }
}
