//! What a pod may leave on the host after it is gone: mounts, pinned network namespaces,
//! cgroup directories, iptables rules and processes. Each helper reads the host as it is now;
//! [`HostState`] gathers them for one test daemon so that a test can compare before and after.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One line of `/proc/self/mountinfo`, the fields tests look at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MountInfo {
    /// Where it is mounted (octal escapes decoded).
    pub mount_point: PathBuf,
    /// The filesystem type (`overlay`, `nsfs`, `proc`, ...).
    pub fs_type: String,
    /// The mount source (`overlay`, `nsfs`, `/dev/vda`, ...).
    pub source: String,
}

/// Decodes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let code = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(code, 8) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every mount of this process's mount namespace (`/proc/self/mountinfo`).
pub fn mounts() -> Vec<MountInfo> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|line| {
            // id parent major:minor root mount-point options [optional...] - type source super
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fs_type = right.next()?;
            let source = right.next().unwrap_or_default();
            Some(MountInfo {
                mount_point: PathBuf::from(unescape(mount_point)),
                fs_type: fs_type.to_owned(),
                source: unescape(source),
            })
        })
        .collect()
}

/// The mounts at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<MountInfo> {
    mounts()
        .into_iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .collect()
}

/// The mounts whose mount point contains `needle` (say a container or sandbox id).
pub fn mounts_mentioning(needle: &str) -> Vec<MountInfo> {
    mounts()
        .into_iter()
        .filter(|m| m.mount_point.to_string_lossy().contains(needle))
        .collect()
}

/// The network (or other) namespaces pinned by a bind mount (`nsfs`) at or below `dir`.
pub fn nsfs_mounts_under(dir: &Path) -> Vec<PathBuf> {
    mounts_under(dir)
        .into_iter()
        .filter(|m| m.fs_type == "nsfs")
        .map(|m| m.mount_point)
        .collect()
}

/// The files (not directories) at or below `dir`, recursively; empty when `dir` does not exist.
/// For a netns directory: the pinned namespace files that remain.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(_) => out.push(path),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

/// The cgroup hierarchies' mount points: `/sys/fs/cgroup` itself on cgroup v2, each
/// controller's directory (`/sys/fs/cgroup/memory`, ...) on v1.
pub fn cgroup_roots() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    mounts()
        .into_iter()
        .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
        .map(|m| m.mount_point)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The cgroup directories at or below `cgroup_path` (a cgroup path such as a pod's
/// `cgroup_parent`, `/berth-test/pod-1`) in every hierarchy, parents included.
pub fn cgroup_dirs_under(cgroup_path: &str) -> Vec<PathBuf> {
    let relative = cgroup_path.trim_start_matches('/');
    let mut out = Vec::new();
    for root in cgroup_roots() {
        let top = root.join(relative);
        if !top.is_dir() {
            continue;
        }
        let mut stack = vec![top];
        while let Some(dir) = stack.pop() {
            if let Ok(entries) = fs::read_dir(&dir) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            out.push(dir);
        }
    }
    out.sort();
    out
}

/// The cgroup directories at or below `cgroup_path` whose name contains `needle` (a container
/// or sandbox id).
pub fn cgroup_dirs_mentioning(cgroup_path: &str, needle: &str) -> Vec<PathBuf> {
    cgroup_dirs_under(cgroup_path)
        .into_iter()
        .filter(|d| d.to_string_lossy().contains(needle))
        .collect()
}

/// The pids listed in the `cgroup.procs` of every cgroup at or below `cgroup_path`.
pub fn pids_in_cgroups_under(cgroup_path: &str) -> BTreeSet<u32> {
    cgroup_dirs_under(cgroup_path)
        .iter()
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Every rule of every table as `iptables-save` prints it (`-A CHAIN ...` lines, chain
/// declarations included). Panics when `iptables-save` cannot run.
pub fn iptables_rules() -> Vec<String> {
    let out = Command::new("iptables-save")
        .output()
        .expect("run iptables-save (Debian package iptables)");
    assert!(
        out.status.success(),
        "iptables-save failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A ") || l.starts_with(':'))
        .map(str::to_owned)
        .collect()
}

/// The iptables rules mentioning `ip` as an address (`10.100.7.3/32`, `10.100.7.3:80`, or
/// followed by a space), not a longer address that starts the same (`10.100.7.30`).
pub fn iptables_rules_mentioning_ip(ip: &str) -> Vec<String> {
    iptables_rules()
        .into_iter()
        .filter(|rule| {
            rule.match_indices(ip).any(|(at, _)| {
                let before = rule[..at].chars().next_back();
                let after = rule[at + ip.len()..].chars().next();
                let before_ok = !before.is_some_and(|c| c.is_ascii_digit() || c == '.');
                let after_ok = !after.is_some_and(|c| c.is_ascii_digit() || c == '.');
                before_ok && after_ok
            })
        })
        .collect()
}

/// The iptables rules containing `needle` anywhere (a network name, a container id in a
/// comment).
pub fn iptables_rules_mentioning(needle: &str) -> Vec<String> {
    iptables_rules()
        .into_iter()
        .filter(|rule| rule.contains(needle))
        .collect()
}

/// A process: pid and command line (arguments joined by spaces).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcessInfo {
    /// The process id.
    pub pid: u32,
    /// `/proc/<pid>/cmdline` with NULs as spaces.
    pub cmdline: String,
}

/// Every process whose command line can be read.
pub fn processes() -> Vec<ProcessInfo> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<ProcessInfo> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw)
                .trim_end_matches('\0')
                .replace('\0', " ");
            Some(ProcessInfo { pid, cmdline })
        })
        .collect();
    out.sort();
    out
}

/// The processes whose command line contains `needle` (a socket path given to shims, a
/// container id), this test process excluded.
pub fn processes_mentioning(needle: &str) -> Vec<ProcessInfo> {
    let me = std::process::id();
    processes()
        .into_iter()
        .filter(|p| p.pid != me && p.cmdline.contains(needle))
        .collect()
}

/// What one test daemon's pods have on the host, gathered from places unique to that daemon:
/// mounts under its directories, namespaces pinned there, cgroups under its cgroup root,
/// iptables rules for its subnet or network name, and processes in those cgroups or naming its
/// socket (shims).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    /// Mounts below the daemon's root, state and scratch directories (pinned namespaces too).
    pub mounts: BTreeSet<MountInfo>,
    /// Cgroup directories two or more levels below the daemon's cgroup root (those of
    /// sandboxes and containers, not the pods' cgroup parents).
    pub cgroups: BTreeSet<PathBuf>,
    /// iptables rules naming the daemon's subnet or CNI network.
    pub iptables: BTreeSet<String>,
    /// Processes in the daemon's cgroups, or whose command line names its socket.
    pub processes: BTreeSet<ProcessInfo>,
}

impl HostState {
    /// Reads the state now. `dirs` are the directories whose mounts count, `cgroup_root` the
    /// cgroup path all pods live under, `ip_prefix` the subnet prefix (`10.100.7.`),
    /// `network_name` the CNI network's name, `socket` the daemon's socket path.
    pub fn read(
        dirs: &[&Path],
        cgroup_root: &str,
        ip_prefix: &str,
        network_name: &str,
        socket: &Path,
    ) -> Self {
        let mounts = mounts()
            .into_iter()
            .filter(|m| dirs.iter().any(|d| m.mount_point.starts_with(d)))
            .collect();
        // A pod's cgroup parent (`<root>/pod<uid>`) is the kubelet's to make and remove, as
        // with containerd: only the sandbox's and containers' cgroups below it count.
        let root_dirs: Vec<PathBuf> = cgroup_roots()
            .iter()
            .map(|r| r.join(cgroup_root.trim_start_matches('/')))
            .collect();
        let cgroups = cgroup_dirs_under(cgroup_root)
            .into_iter()
            .filter(|d| {
                root_dirs.iter().any(|root| {
                    d.strip_prefix(root)
                        .is_ok_and(|rel| rel.components().count() >= 2)
                })
            })
            .collect();
        let iptables = iptables_rules()
            .into_iter()
            .filter(|r| r.contains(ip_prefix) || r.contains(network_name))
            .collect();
        let in_cgroups = pids_in_cgroups_under(cgroup_root);
        let socket = socket.display().to_string();
        let processes = processes()
            .into_iter()
            .filter(|p| in_cgroups.contains(&p.pid) || p.cmdline.contains(&socket))
            .collect();
        Self {
            mounts,
            cgroups,
            iptables,
            processes,
        }
    }

    /// What is in `self` and not in `before`: the leftovers of whatever ran in between.
    pub fn added_since(&self, before: &HostState) -> HostState {
        HostState {
            mounts: self.mounts.difference(&before.mounts).cloned().collect(),
            cgroups: self.cgroups.difference(&before.cgroups).cloned().collect(),
            iptables: self
                .iptables
                .difference(&before.iptables)
                .cloned()
                .collect(),
            processes: self
                .processes
                .difference(&before.processes)
                .cloned()
                .collect(),
        }
    }

    /// True when nothing is there.
    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty()
            && self.cgroups.is_empty()
            && self.iptables.is_empty()
            && self.processes.is_empty()
    }
}

/// SIGKILLs the processes `find` names, up to three rounds 200 ms apart (a dying shim may fork
/// meanwhile), until it names none. Only for processes a test or benchmark owns.
pub fn kill_until_gone(mut find: impl FnMut() -> BTreeSet<u32>) {
    for _ in 0..3 {
        let pids = find();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            if let Ok(pid) = i32::try_from(pid) {
                // They may exit meanwhile.
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Lazily unmounts `points`, deepest first so that a mount below another goes before it.
pub fn unmount_deepest_first(mut points: Vec<PathBuf>) {
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let _ = umount2(&point, MntFlags::MNT_DETACH);
    }
}

/// Removes the (empty) cgroup directories at or below `cgroup_path` in every hierarchy,
/// deepest first.
pub fn remove_cgroup_dirs(cgroup_path: &str) {
    let mut dirs = cgroup_dirs_under(cgroup_path);
    dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for dir in dirs {
        let _ = fs::remove_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_escapes_are_decoded() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\"), r"/end\");
    }

    #[test]
    fn reads_this_process_and_its_root_mount() {
        let me = std::process::id();
        assert!(processes().iter().any(|p| p.pid == me));
        assert!(mounts().iter().any(|m| m.mount_point == Path::new("/")));
    }
}
