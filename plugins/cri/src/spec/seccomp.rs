//! Seccomp profiles: the built-in default (`runtime/default`, `docker/default`), whose
//! syscall allow-list is data in `seccomp_default.json` (the facts of containerd's
//! `contrib/seccomp/seccomp_default.go`, with its conditions written as `includes` and
//! `excludes` on capabilities, architecture and kernel version, as Docker's profile format
//! does), and `localhost/` profiles read from an absolute path.

use std::collections::HashMap;
use std::path::Path;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscall,
};
use serde::Deserialize;

use crate::error::{CriError, Result};

/// The built-in default profile.
const DEFAULT_PROFILE: &str = include_str!("seccomp_default.json");

/// The default profile as stored: rules with their conditions.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileData {
    default_action: LinuxSeccompAction,
    /// Rust's `std::env::consts::ARCH` → the seccomp architectures of that host.
    arch_map: HashMap<String, Vec<Arch>>,
    syscalls: Vec<Rule>,
}

/// One syscall rule and when it applies.
#[derive(Debug, Deserialize)]
struct Rule {
    #[serde(flatten)]
    syscall: LinuxSyscall,
    #[serde(default)]
    includes: Condition,
    #[serde(default)]
    excludes: Condition,
}

/// A condition: every non-empty part must hold (includes) or any holding part excludes.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// What the default profile depends on.
#[derive(Debug, Clone)]
pub struct Host<'a> {
    /// `std::env::consts::ARCH`.
    pub arch: &'a str,
    /// The running kernel's (major, minor).
    pub kernel: (u32, u32),
    /// The container's bounding capabilities.
    pub caps: &'a [String],
}

/// The running kernel's (major, minor) from `/proc/sys/kernel/osrelease`.
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    parse_kernel(&release).unwrap_or((0, 0))
}

fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether the host has seccomp (containerd `seccomp.IsEnabled`).
pub fn enabled() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
        .unwrap_or(false)
}

/// The built-in default profile for a process with `host.caps` on `host`.
pub fn default_profile(host: &Host<'_>) -> Result<LinuxSeccomp> {
    let data: ProfileData = serde_json::from_str(DEFAULT_PROFILE)
        .map_err(|e| CriError::Internal(format!("the built-in seccomp profile: {e}")))?;
    let applies = |r: &Rule| {
        let inc = &r.includes;
        let exc = &r.excludes;
        let caps_in = inc.caps.iter().all(|c| host.caps.contains(c));
        let arch_in = inc.arches.is_empty() || inc.arches.iter().any(|a| a == host.arch);
        let kernel_in = inc
            .min_kernel
            .as_deref()
            .and_then(parse_kernel)
            .is_none_or(|min| host.kernel >= min);
        let caps_out = exc.caps.iter().any(|c| host.caps.contains(c));
        let arch_out = exc.arches.iter().any(|a| a == host.arch);
        caps_in && arch_in && kernel_in && !caps_out && !arch_out
    };
    let syscalls: Vec<LinuxSyscall> = data
        .syscalls
        .into_iter()
        .filter(applies)
        .map(|r| r.syscall)
        .collect();
    let arches = data.arch_map.get(host.arch).cloned().unwrap_or_default();
    LinuxSeccompBuilder::default()
        .default_action(data.default_action)
        .architectures(arches)
        .syscalls(syscalls)
        .build()
        .map_err(|e| CriError::Internal(format!("building the seccomp profile: {e}")))
}

/// The OCI seccomp profile in the JSON file at `path`; `field` names the request field
/// that pointed at it. A relative path, a missing or unreadable file and bad JSON are
/// InvalidArgument.
pub fn load_profile(path: &str, field: &str) -> Result<LinuxSeccomp> {
    if !Path::new(path).is_absolute() {
        return Err(CriError::invalid(
            field,
            format!("seccomp profile path {path:?} is not absolute"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        CriError::invalid(field, format!("cannot load seccomp profile {path:?}: {e}"))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        CriError::invalid(field, format!("seccomp profile {path:?} is not valid: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &LinuxSeccomp) -> Vec<String> {
        p.syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn default_profile_allows_the_common_calls_and_not_the_admin_ones() {
        let caps: Vec<String> = crate::spec::defaults::DEFAULT_CAPS
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
        let host = Host {
            arch: "x86_64",
            kernel: (6, 1),
            caps: &caps,
        };
        let p = default_profile(&host).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(
            p.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        let allowed = names(&p);
        for call in [
            "read",
            "write",
            "openat",
            "execve",
            "chroot",
            "arch_prctl",
            "ptrace",
        ] {
            assert!(allowed.iter().any(|n| n == call), "{call}");
        }
        for call in [
            "mount",
            "unshare",
            "reboot",
            "sethostname",
            "breakpoint",
            "acct",
        ] {
            assert!(!allowed.iter().any(|n| n == call), "{call}");
        }
        let rules = p.syscalls().as_ref().unwrap();
        let clone3 = rules.iter().find(|s| s.names() == &["clone3"]).unwrap();
        assert_eq!(clone3.errno_ret(), Some(38));
        assert!(rules
            .iter()
            .any(|s| s.names() == &["clone"] && s.args().is_some()));

        let admin = [caps.clone(), vec!["CAP_SYS_ADMIN".to_owned()]].concat();
        let p = default_profile(&Host {
            caps: &admin,
            ..host.clone()
        })
        .unwrap();
        let allowed = names(&p);
        assert!(allowed.iter().any(|n| n == "mount"));
        assert!(allowed.iter().any(|n| n == "clone3"));
        assert!(!p
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .any(|s| s.names() == &["clone3"] && s.action() == LinuxSeccompAction::ScmpActErrno));

        let old = default_profile(&Host {
            kernel: (4, 4),
            ..host
        })
        .unwrap();
        assert!(!names(&old).iter().any(|n| n == "ptrace"));
    }

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_kernel("6.1.0-13-amd64\n"), Some((6, 1)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel("x"), None);
        assert!(kernel_version() >= (3, 0));
    }

    #[test]
    fn localhost_profiles_load_from_absolute_paths() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("p.json");
        std::fs::write(
            &path,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sethostname"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let f = "config.linux.security_context.seccomp.localhost_ref";
        let p = load_profile(path.to_str().unwrap(), f).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        let err = load_profile("relative.json", f).unwrap_err();
        assert!(err.to_string().contains(f), "{err}");
        let err = load_profile(t.path().join("missing.json").to_str().unwrap(), f).unwrap_err();
        assert!(matches!(err, CriError::InvalidArgument { .. }), "{err}");
        std::fs::write(&path, "not json").unwrap();
        assert!(load_profile(path.to_str().unwrap(), f).is_err());
    }
}
