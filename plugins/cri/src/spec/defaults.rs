//! containerd's default Linux spec (`oci/spec.go` `populateDefaultUnixSpec`, `oci/mounts.go`),
//! the start of every sandbox and container spec.

use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxNamespaceType};

use super::draft::{Draft, MountEntry};
use crate::error::{CriError, Result};

/// The OCI runtime spec version written into specs.
pub use berth_wellknown::oci::VERSION as OCI_VERSION;

/// The rootfs directory, relative to the bundle.
pub const ROOTFS: &str = "rootfs";

/// The default `PATH`, capabilities, masked and read-only paths (containerd's, shared with
/// `berth run`).
pub use berth_wellknown::oci::{
    DEFAULT_CAPS, DEFAULT_MASKED_PATHS, DEFAULT_PATH_ENV, DEFAULT_READONLY_PATHS,
};

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
