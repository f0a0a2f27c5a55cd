//! containerd's default Linux spec (`oci/spec.go` `populateDefaultUnixSpec`, `oci/mounts.go`),
//! the start of every sandbox and container spec.

use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxNamespaceType};

use super::draft::{Draft, MountEntry};
use crate::error::{CriError, Result};

/// The OCI runtime spec version written into specs.
pub const OCI_VERSION: &str = "1.0.2-dev";

/// The rootfs directory, relative to the bundle.
pub const ROOTFS: &str = "rootfs";

/// `PATH` of a process whose image sets none.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capabilities a container gets unless its security context says otherwise.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths of the default spec that read as empty inside the container.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// Paths of the default spec mounted read-only inside the container.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The default mounts; containerd's CRI leaves `/run` out of every spec
/// (`oci.WithoutRunMount`), so it is not here.
pub fn default_mounts() -> Vec<MountEntry> {
    vec![
        MountEntry::new("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        MountEntry::new(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        MountEntry::new(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        MountEntry::new(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        MountEntry::new(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        MountEntry::new(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
    ]
}

/// containerd's default spec for `id`, as the CRI starts from it: no rlimits, seccomp or
/// AppArmor profile (`WithoutDefaultSecuritySettings`), no `/run` mount, cgroup
/// `/k8s.io/<id>` unless the pod names a parent.
pub fn default_draft(id: &str) -> Result<Draft> {
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .map_err(|e| CriError::Internal(format!("building the OCI spec: {e}")))?;
    let mut draft = Draft {
        cwd: "/".to_owned(),
        no_new_privileges: true,
        caps: DEFAULT_CAPS.iter().map(|c| (*c).to_owned()).collect(),
        mounts: default_mounts(),
        cgroups_path: Some(format!("/{}/{id}", crate::K8S_NAMESPACE)),
        device_rules: vec![deny_all],
        masked_paths: DEFAULT_MASKED_PATHS
            .iter()
            .map(|p| (*p).to_owned())
            .collect(),
        readonly_paths: DEFAULT_READONLY_PATHS
            .iter()
            .map(|p| (*p).to_owned())
            .collect(),
        ..Draft::default()
    };
    for typ in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
    ] {
        draft.set_namespace(typ, None);
    }
    Ok(draft)
}
