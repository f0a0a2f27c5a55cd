//! What the daemon does to its own process before any plugin loads (containerd
//! `services/server/server_linux.go` `apply`): its OOM score (`oom_score`) and its cgroup
//! (`[cgroup] path`). Shims inherit both, so every shim, and every container whose spec gives
//! a relative `cgroupsPath`, lands below that cgroup.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use berth_registry::Config;

/// Where the kernel lists the mounts of this process.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// cgroup v1 super options that are not controllers (besides `name=...` and other `k=v`).
const NOT_CONTROLLERS: [&str; 5] = ["rw", "ro", "xattr", "noprefix", "clone_children"];

/// Applies `oom_score` and `[cgroup] path` to the running process.
pub fn apply(config: &Config) -> anyhow::Result<()> {
    if config.oom_score != 0 {
        // As containerd: a score the kernel refuses (lowering it takes CAP_SYS_RESOURCE) is
        // logged, and the daemon runs on.
        match set_oom_score(config.oom_score) {
            Ok(()) => tracing::debug!(score = config.oom_score, "changed OOM score"),
            Err(e) => {
                tracing::error!(score = config.oom_score, error = %format!("{e:#}"), "failed to change OOM score")
            }
        }
    }
    if !config.cgroup.path.is_empty() {
        join_cgroup(&config.cgroup.path)?;
    }
    Ok(())
}

fn set_oom_score(score: i32) -> anyhow::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/oom_score_adj")
        .and_then(|mut f| f.write_all(score.to_string().as_bytes()))
        .context("write /proc/self/oom_score_adj")
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    /// Where it is mounted.
    mount_point: PathBuf,
    /// `cgroup` (v1) or `cgroup2`.
    fs_type: String,
    /// The v1 controllers bound to it (from the super options).
    controllers: Vec<String>,
}

/// The cgroup hierarchies in a mountinfo text, each once.
fn hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    let mut seen_options: Vec<(String, String)> = Vec::new();
    for line in mountinfo.lines() {
        // `<id> <parent> <dev> <root> <mount point> <options> [optional...] - <type> <source> <super options>`
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let (Some(fs_type), Some(_source), Some(options)) =
            (right.next(), right.next(), right.next())
        else {
            continue;
        };
        if fs_type != "cgroup" && fs_type != "cgroup2" {
            continue;
        }
        // The same hierarchy mounted twice shows the same type and super options.
        let key = (fs_type.to_owned(), options.to_owned());
        if seen_options.contains(&key) {
            continue;
        }
        seen_options.push(key);
        let controllers = if fs_type == "cgroup" {
            options
                .split(',')
                .filter(|o| !NOT_CONTROLLERS.contains(o) && !o.contains('='))
                .map(str::to_owned)
                .collect()
        } else {
            Vec::new()
        };
        out.push(Hierarchy {
            mount_point: PathBuf::from(mount_point.replace("\\040", " ")),
            fs_type: fs_type.to_owned(),
            controllers,
        });
    }
    out
}

/// Moves this process into `path` in every mounted hierarchy (v1 and v2), creating it where
/// missing. A new v1 cpuset cgroup gets its parent's CPUs and memory nodes first: the kernel
/// refuses tasks in a cpuset with none.
fn join_cgroup(path: &str) -> anyhow::Result<()> {
    let mountinfo = fs::read_to_string(MOUNTINFO).context("read /proc/self/mountinfo")?;
    let found = hierarchies(&mountinfo);
    if found.is_empty() {
        bail!("[cgroup] path {path:?}: no cgroup hierarchy is mounted");
    }
    let relative = path.trim_start_matches('/');
    let pid = std::process::id().to_string();
    for h in &found {
        let dir = h.mount_point.join(relative);
        fs::create_dir_all(&dir).with_context(|| format!("create cgroup {}", dir.display()))?;
        if h.controllers.iter().any(|c| c == "cpuset") {
            inherit_cpuset(&h.mount_point, &dir)?;
        }
        let procs = dir.join("cgroup.procs");
        fs::write(&procs, &pid).with_context(|| format!("move berthd into {}", procs.display()))?;
        tracing::info!(cgroup = %dir.display(), fs_type = %h.fs_type, "joined cgroup");
    }
    Ok(())
}

/// Copies `cpuset.cpus` and `cpuset.mems` down from `root` to `dir` wherever a level has none.
fn inherit_cpuset(root: &Path, dir: &Path) -> anyhow::Result<()> {
    let Ok(below) = dir.strip_prefix(root) else {
        return Ok(());
    };
    let mut parent = root.to_path_buf();
    for part in below.components() {
        let child = parent.join(part);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let mine = child.join(file);
            let current = fs::read_to_string(&mine).unwrap_or_default();
            if current.trim().is_empty() {
                let from = parent.join(file);
                let value = fs::read_to_string(&from)
                    .with_context(|| format!("read {}", from.display()))?;
                fs::write(&mine, value.trim())
                    .with_context(|| format!("write {}", mine.display()))?;
            }
        }
        parent = child;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v1_and_v2_hierarchies_once() {
        let text = "\
25 1 0:23 / /sys rw,nosuid - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw shared:10 - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw shared:13 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/cpuset rw shared:14 - cgroup cgroup rw,cpuset
90 30 0:32 / /mnt/again rw shared:14 - cgroup cgroup rw,cpuset
";
        let found = hierarchies(text);
        let points: Vec<_> = found.iter().map(|h| h.mount_point.clone()).collect();
        assert_eq!(
            points,
            [
                "/sys/fs/cgroup/unified",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/cpuset"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(found[0].fs_type, "cgroup2");
        assert!(found[1].controllers.is_empty());
        assert_eq!(found[2].controllers, ["cpu", "cpuacct"]);
        assert_eq!(found[3].controllers, ["cpuset"]);
    }

    #[test]
    fn cpuset_values_come_down_from_the_parent() {
        // No tempfile crate in this binary's dev-dependencies: a scratch dir of our own.
        let scratch = std::env::temp_dir().join(format!("berthd-cpuset-{}", std::process::id()));
        let _ = fs::remove_dir_all(&scratch);
        let root = scratch.as_path();
        let dir = root.join("a/b");
        fs::create_dir_all(&dir).unwrap();
        fs::write(root.join("cpuset.cpus"), "0-1\n").unwrap();
        fs::write(root.join("cpuset.mems"), "0\n").unwrap();
        fs::write(root.join("a/cpuset.cpus"), "1\n").unwrap();
        inherit_cpuset(root, &dir).unwrap();
        assert_eq!(fs::read_to_string(dir.join("cpuset.cpus")).unwrap(), "1");
        assert_eq!(fs::read_to_string(dir.join("cpuset.mems")).unwrap(), "0");
        fs::remove_dir_all(&scratch).unwrap();
    }
}
