//! The OCI runtime spec of sandboxes and containers, from image config, request and security
//! context (containerd `pkg/cri/server/{sandbox,container}_create_linux.go`, `pkg/cri/opts`).
//!
//! - [`sandbox`] and [`container`] put a spec together; every rule they apply lives in its own
//!   module: [`namespaces`], [`mounts`], [`resources`] (cgroups, `oom_score_adj`), [`devices`],
//!   [`security`] (privileged, capabilities, masked paths, seccomp choice), [`capabilities`],
//!   [`seccomp`] (with the built-in default profile), [`user`] (`/etc/passwd`, `/etc/group`).
//! - [`defaults`] is containerd's default Linux spec (`oci/spec.go`, `oci/mounts.go`).

use std::path::{Path, PathBuf};

use berth_mount::Mount;
use berth_proto::runtime::v1::{ContainerConfig, PodSandboxConfig};
use oci_spec::runtime::Spec;

use crate::config::{CriConfig, RuntimeHandler};
use crate::error::Result;
use crate::image::lookup::LocalImage;

pub mod annotations;
pub mod capabilities;
pub mod container;
pub mod defaults;
pub mod devices;
pub mod draft;
pub mod mounts;
pub mod namespaces;
pub mod resources;
pub mod rootfs;
pub mod sandbox;
pub mod seccomp;
pub mod security;
pub mod user;

/// Files a sandbox keeps on the host and every container of the pod mounts.
#[derive(Debug, Clone, Default)]
pub struct SandboxFiles {
    /// `/etc/hostname`.
    pub hostname: PathBuf,
    /// `/etc/hosts`.
    pub hosts: PathBuf,
    /// `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// A tmpfs for `/dev/shm` shared by the pod, `None` when IPC is the host's.
    pub shm: Option<PathBuf>,
}

/// What a sandbox's (pause container's) spec is made from.
#[derive(Debug)]
pub struct SandboxSpecInput<'a> {
    /// The sandbox id.
    pub id: &'a str,
    /// The request's config.
    pub config: &'a PodSandboxConfig,
    /// The pause image.
    pub image: &'a LocalImage,
    /// The pinned network namespace, `None` for a host-network pod.
    pub netns_path: Option<&'a Path>,
    /// The pod's files.
    pub files: &'a SandboxFiles,
    /// The runtime handler.
    pub runtime: &'a RuntimeHandler,
    /// The CRI config.
    pub cri: &'a CriConfig,
}

/// What a container's spec is made from.
#[derive(Debug)]
pub struct ContainerSpecInput<'a> {
    /// The container id.
    pub id: &'a str,
    /// The pod's sandbox id (annotation `io.kubernetes.cri.sandbox-id`).
    pub sandbox_id: &'a str,
    /// The request's container config.
    pub config: &'a ContainerConfig,
    /// The pod's config.
    pub sandbox_config: &'a PodSandboxConfig,
    /// The pod's pause process: its namespaces (`/proc/<pid>/ns/*`) are joined.
    pub sandbox_pid: u32,
    /// With `namespace_options.pid == TARGET`: the pid of the container `target_id` names
    /// (its PID namespace is joined). `None` refuses TARGET.
    pub target_pid: Option<u32>,
    /// The pod's network namespace, `None` for a host-network pod.
    pub netns_path: Option<&'a Path>,
    /// The pod's files.
    pub files: &'a SandboxFiles,
    /// The container's image.
    pub image: &'a LocalImage,
    /// The container's rootfs mounts (to read `/etc/passwd` and `/etc/group` from).
    pub rootfs: &'a [Mount],
    /// The container's own directory on the host: the image's `Volumes` are created under
    /// `<container_dir>/volumes/` (removed with it).
    pub container_dir: &'a Path,
    /// The runtime handler.
    pub runtime: &'a RuntimeHandler,
    /// The CRI config.
    pub cri: &'a CriConfig,
}

/// The pause container's spec.
pub fn sandbox_spec(input: &SandboxSpecInput<'_>) -> Result<Spec> {
    sandbox::spec(input)
}

/// A container's spec. Blocking (may mount the rootfs to resolve users, creates the image's
/// volume directories): call it on the blocking pool.
pub fn container_spec(input: &ContainerSpecInput<'_>) -> Result<Spec> {
    container::spec(input)
}
