//! What the benchmark reads from `/proc`: resident and proportional memory, CPU time, command
//! lines and mounts.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use nix::sys::resource::{getrusage, UsageWho};
use nix::unistd::{sysconf, SysconfVar};

/// The value in kB of the `key:` line of a `/proc` file laid out as `Key:   123 kB`.
fn kib_field(path: &str, key: &str) -> Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
            let number = rest.split_whitespace().next().unwrap_or("");
            return number
                .parse()
                .with_context(|| format!("parse {key} {number:?} in {path}"));
        }
    }
    bail!("no {key} line in {path}")
}

/// Resident set size of `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS")
}

/// Proportional set size of `pid` in KiB (`Pss` of `/proc/<pid>/smaps_rollup`): shared pages
/// count once, split among the processes mapping them.
pub fn pss_kib(pid: u32) -> Result<u64> {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss")
}

/// User plus system CPU time of `pid` in clock ticks (fields 14 and 15 of `/proc/<pid>/stat`).
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces; count from its end.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state), so field 14 (utime) is index 11.
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .ok_or_else(|| anyhow!("short {path}"))?
            .parse()
            .with_context(|| format!("parse field {} of {path}", i + 3))
    };
    Ok(field(11)? + field(12)?)
}

/// Clock ticks per second, the unit of [`cpu_ticks`].
pub fn ticks_per_second() -> f64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        // Linux has reported 100 on every architecture since 2.6.
        _ => 100.0,
    }
}

/// CPU time (user plus system) this process has used, in seconds, at microsecond resolution.
pub fn self_cpu_seconds() -> Result<f64> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).context("getrusage(RUSAGE_SELF)")?;
    let secs = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    Ok(secs(usage.user_time()) + secs(usage.system_time()))
}

/// The NUL-separated arguments of `/proc/<pid>/cmdline`; empty for kernel threads and for
/// processes that exited meanwhile.
pub fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every process id currently in `/proc`.
fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// True when `args` is a long-running shim of binary `binary` serving daemon socket `address`:
/// `argv[0]` ends in the binary name, `-address <address>` is present, and it is not one of the
/// short-lived `start` / `delete` invocations.
pub fn is_shim_of(args: &[String], binary: &str, address: &Path) -> bool {
    let Some(argv0) = args.first() else {
        return false;
    };
    if Path::new(argv0).file_name().and_then(|n| n.to_str()) != Some(binary) {
        return false;
    }
    let address = address.to_string_lossy();
    let serves = args
        .windows(2)
        .any(|w| w[0] == "-address" && w[1] == address);
    serves && !args.iter().any(|a| a == "start" || a == "delete")
}

/// Pids of the long-running `binary` shims started for the daemon on `address`.
pub fn shim_pids(binary: &str, address: &Path) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&pid| is_shim_of(&cmdline(pid), binary, address))
        .collect()
}

/// Decodes the octal escapes (`\040` for a space) `/proc/self/mountinfo` uses in paths.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(Ok(v)) = field.get(i + 1..i + 4).map(|o| u8::from_str_radix(o, 8)) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or below `dir`, deepest first (the order to unmount them in).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn own_process_figures() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(pss_kib(pid).unwrap() > 0);
        cpu_ticks(pid).unwrap();
        assert!(self_cpu_seconds().unwrap() >= 0.0);
        assert!(!cmdline(pid).is_empty());
    }

    #[test]
    fn recognises_long_running_shims() {
        let sock = Path::new("/tmp/x/s.sock");
        let shim = "/usr/bin/containerd-shim-runc-v2 -namespace n -id c1 -address /tmp/x/s.sock";
        assert!(is_shim_of(&args(shim), "containerd-shim-runc-v2", sock));
        assert!(!is_shim_of(&args(shim), "containerd-shim-berth-v2", sock));
        assert!(!is_shim_of(
            &args(shim),
            "containerd-shim-runc-v2",
            Path::new("/tmp/y/s.sock")
        ));
        let start = format!("{shim} start");
        assert!(!is_shim_of(&args(&start), "containerd-shim-runc-v2", sock));
    }

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/end\"), r"/end\");
    }
}
