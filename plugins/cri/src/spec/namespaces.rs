//! Which namespaces a pod's pause container creates and which its containers join
//! (containerd `sandboxContainerSpec`, `opts.WithPodNamespaces`).

use std::path::{Path, PathBuf};

use berth_proto::runtime::v1::{NamespaceMode, NamespaceOption};
use oci_spec::runtime::LinuxNamespaceType;

use super::draft::Draft;
use crate::error::{CriError, Result};

/// A namespace mode of the request, refused when out of range.
pub fn mode(value: i32, field: &str) -> Result<NamespaceMode> {
    NamespaceMode::try_from(value)
        .map_err(|_| CriError::invalid(field, format!("unknown namespace mode {value}")))
}

/// The modes of `options` (all POD when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    /// Network.
    pub network: NamespaceMode,
    /// PID.
    pub pid: NamespaceMode,
    /// IPC.
    pub ipc: NamespaceMode,
}

impl Modes {
    /// The modes of `options`; `field` is the request path of the options, for errors.
    pub fn of(options: Option<&NamespaceOption>, field: &str) -> Result<Modes> {
        let Some(o) = options else {
            return Ok(Modes {
                network: NamespaceMode::Pod,
                pid: NamespaceMode::Pod,
                ipc: NamespaceMode::Pod,
            });
        };
        Ok(Modes {
            network: mode(o.network, &format!("{field}.network"))?,
            pid: mode(o.pid, &format!("{field}.pid"))?,
            ipc: mode(o.ipc, &format!("{field}.ipc"))?,
        })
    }
}

/// The pause container's namespaces: new PID, IPC, UTS and mount namespaces; the pinned
/// network namespace; the host's network (and UTS), PID or IPC namespace for NODE.
pub fn sandbox(draft: &mut Draft, modes: Modes, netns_path: Option<&Path>) -> Result<()> {
    if modes.network == NamespaceMode::Node {
        draft.remove_namespace(LinuxNamespaceType::Network);
        draft.remove_namespace(LinuxNamespaceType::Uts);
    } else {
        let Some(path) = netns_path else {
            return Err(CriError::Internal(
                "a pod with its own network has no pinned network namespace".to_owned(),
            ));
        };
        draft.set_namespace(LinuxNamespaceType::Network, Some(path.to_path_buf()));
    }
    if modes.pid == NamespaceMode::Node {
        draft.remove_namespace(LinuxNamespaceType::Pid);
    }
    if modes.ipc == NamespaceMode::Node {
        draft.remove_namespace(LinuxNamespaceType::Ipc);
    }
    Ok(())
}

/// `/proc/<pid>/ns/<name>`.
pub fn proc_ns(pid: u32, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/{name}"))
}

/// A container's namespaces: the pod's network, IPC and UTS namespaces (the pause process's,
/// which are the host's for a NODE pod); the pod's PID namespace (POD), the host's (NODE),
/// another container's (TARGET, `target_pid`) or a new one (CONTAINER); a new mount
/// namespace; a new cgroup namespace on cgroup v2 unless privileged.
pub fn container(
    draft: &mut Draft,
    modes: Modes,
    sandbox_pid: u32,
    target_pid: Option<u32>,
    cgroup_ns: bool,
) -> Result<()> {
    draft.set_namespace(
        LinuxNamespaceType::Network,
        Some(proc_ns(sandbox_pid, "net")),
    );
    draft.set_namespace(LinuxNamespaceType::Ipc, Some(proc_ns(sandbox_pid, "ipc")));
    draft.set_namespace(LinuxNamespaceType::Uts, Some(proc_ns(sandbox_pid, "uts")));
    match modes.pid {
        NamespaceMode::Container => draft.set_namespace(LinuxNamespaceType::Pid, None),
        NamespaceMode::Pod | NamespaceMode::Node => {
            // The pause process is in the host's PID namespace for a NODE pod: joining its
            // namespace is joining the host's, as containerd does.
            draft.set_namespace(LinuxNamespaceType::Pid, Some(proc_ns(sandbox_pid, "pid")))
        }
        NamespaceMode::Target => {
            let Some(pid) = target_pid else {
                return Err(CriError::invalid(
                    "config.linux.security_context.namespace_options.target_id",
                    "no running container to share a PID namespace with",
                ));
            };
            draft.set_namespace(LinuxNamespaceType::Pid, Some(proc_ns(pid, "pid")))
        }
    }
    if cgroup_ns {
        draft.set_namespace(LinuxNamespaceType::Cgroup, None);
    }
    Ok(())
}

/// Whether `/sys/fs/cgroup` is a cgroup v2 (unified) hierarchy.
pub fn cgroup_v2() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modes(network: NamespaceMode, pid: NamespaceMode, ipc: NamespaceMode) -> Modes {
        Modes { network, pid, ipc }
    }

    fn types(d: &Draft) -> Vec<(LinuxNamespaceType, Option<String>)> {
        d.namespaces
            .iter()
            .map(|n| (n.typ, n.path.as_ref().map(|p| p.display().to_string())))
            .collect()
    }

    fn base() -> Draft {
        super::super::defaults::default_draft("x").unwrap()
    }

    #[test]
    fn pod_sandbox_gets_new_namespaces_and_the_pinned_netns() {
        let mut d = base();
        let m = modes(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod);
        sandbox(&mut d, m, Some(Path::new("/run/berth/netns/cni-1"))).unwrap();
        let t = types(&d);
        assert!(t.contains(&(LinuxNamespaceType::Pid, None)));
        assert!(t.contains(&(LinuxNamespaceType::Uts, None)));
        assert!(t.contains(&(LinuxNamespaceType::Ipc, None)));
        assert!(t.contains(&(LinuxNamespaceType::Mount, None)));
        assert!(t.contains(&(
            LinuxNamespaceType::Network,
            Some("/run/berth/netns/cni-1".into())
        )));
        assert!(sandbox(&mut base(), m, None).is_err());
    }

    #[test]
    fn node_modes_use_the_hosts_namespaces() {
        let mut d = base();
        let m = modes(
            NamespaceMode::Node,
            NamespaceMode::Node,
            NamespaceMode::Node,
        );
        sandbox(&mut d, m, None).unwrap();
        assert_eq!(types(&d), vec![(LinuxNamespaceType::Mount, None)]);
    }

    #[test]
    fn containers_join_the_pod() {
        let mut d = base();
        let m = modes(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod);
        container(&mut d, m, 42, None, false).unwrap();
        let t = types(&d);
        for (typ, name) in [
            (LinuxNamespaceType::Network, "net"),
            (LinuxNamespaceType::Ipc, "ipc"),
            (LinuxNamespaceType::Uts, "uts"),
            (LinuxNamespaceType::Pid, "pid"),
        ] {
            assert!(
                t.contains(&(typ, Some(format!("/proc/42/ns/{name}")))),
                "{name}"
            );
        }
        assert!(t.contains(&(LinuxNamespaceType::Mount, None)));
        assert!(!t.iter().any(|(t, _)| *t == LinuxNamespaceType::Cgroup));
    }

    #[test]
    fn container_pid_modes() {
        let mut d = base();
        let m = modes(
            NamespaceMode::Pod,
            NamespaceMode::Container,
            NamespaceMode::Pod,
        );
        container(&mut d, m, 42, None, true).unwrap();
        assert!(types(&d).contains(&(LinuxNamespaceType::Pid, None)));
        assert!(types(&d).contains(&(LinuxNamespaceType::Cgroup, None)));

        let mut d = base();
        let m = modes(
            NamespaceMode::Pod,
            NamespaceMode::Target,
            NamespaceMode::Pod,
        );
        container(&mut d, m, 42, Some(77), false).unwrap();
        assert!(types(&d).contains(&(LinuxNamespaceType::Pid, Some("/proc/77/ns/pid".into()))));
        let err = container(&mut base(), m, 42, None, false).unwrap_err();
        assert!(err.to_string().contains("target_id"), "{err}");
    }

    #[test]
    fn unknown_modes_are_refused() {
        let o = NamespaceOption {
            pid: 9,
            ..NamespaceOption::default()
        };
        let err =
            Modes::of(Some(&o), "config.linux.security_context.namespace_options").unwrap_err();
        assert!(err.to_string().contains("namespace_options.pid"), "{err}");
    }
}
