//! The spec while it is put together: plain fields every rule can change, turned into an
//! [`oci_spec::runtime::Spec`] once at the end (the way containerd applies `SpecOpts` to one
//! `specs.Spec` in order, without the getter and builder ceremony at every step).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::str::FromStr;

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpu, LinuxDevice,
    LinuxDeviceCgroup, LinuxHugepageLimit, LinuxMemory, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, LinuxSeccomp, MountBuilder, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

use crate::error::{CriError, Result};

/// One mount of the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where in the container.
    pub destination: String,
    /// Filesystem type (`bind`, `proc`, `tmpfs`, ...).
    pub typ: String,
    /// Source path or name.
    pub source: String,
    /// Mount options.
    pub options: Vec<String>,
}

impl MountEntry {
    /// A mount from its four parts.
    pub fn new(destination: &str, typ: &str, source: &str, options: &[&str]) -> MountEntry {
        MountEntry {
            destination: destination.to_owned(),
            typ: typ.to_owned(),
            source: source.to_owned(),
            options: options.iter().map(|o| (*o).to_owned()).collect(),
        }
    }
}

/// A namespace of the spec: new (`path` None) or joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Which namespace.
    pub typ: LinuxNamespaceType,
    /// The namespace to join, `None` for a new one.
    pub path: Option<PathBuf>,
}

/// The spec under construction.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    /// `process.args`.
    pub args: Vec<String>,
    /// `process.env`, `KEY=value`.
    pub env: Vec<String>,
    /// `process.cwd`.
    pub cwd: String,
    /// `process.terminal`.
    pub terminal: bool,
    /// `process.user.uid`.
    pub uid: u32,
    /// `process.user.gid`.
    pub gid: u32,
    /// `process.user.additionalGids`, sorted, without duplicates.
    pub additional_gids: Vec<u32>,
    /// The bounding, effective and permitted capability sets (`CAP_...`), in order.
    pub caps: Vec<String>,
    /// `process.noNewPrivileges`.
    pub no_new_privileges: bool,
    /// `process.oomScoreAdj`.
    pub oom_score_adj: Option<i32>,
    /// `hostname`.
    pub hostname: Option<String>,
    /// `root.readonly`.
    pub root_readonly: bool,
    /// `mounts`, in mount order.
    pub mounts: Vec<MountEntry>,
    /// `linux.namespaces`.
    pub namespaces: Vec<Namespace>,
    /// `linux.cgroupsPath`.
    pub cgroups_path: Option<String>,
    /// `linux.resources.devices`.
    pub device_rules: Vec<LinuxDeviceCgroup>,
    /// `linux.devices`.
    pub devices: Vec<LinuxDevice>,
    /// `linux.resources.cpu`.
    pub cpu: Option<LinuxCpu>,
    /// `linux.resources.memory`.
    pub memory: Option<LinuxMemory>,
    /// `linux.resources.hugepageLimits`.
    pub hugepage_limits: Vec<LinuxHugepageLimit>,
    /// `linux.resources.unified`.
    pub unified: BTreeMap<String, String>,
    /// `linux.sysctl`.
    pub sysctl: BTreeMap<String, String>,
    /// `linux.maskedPaths`.
    pub masked_paths: Vec<String>,
    /// `linux.readonlyPaths`.
    pub readonly_paths: Vec<String>,
    /// `linux.rootfsPropagation`.
    pub rootfs_propagation: Option<String>,
    /// `linux.seccomp`.
    pub seccomp: Option<LinuxSeccomp>,
    /// `annotations`.
    pub annotations: BTreeMap<String, String>,
}

impl Draft {
    /// Sets `KEY=value` entries, replacing the same keys, as containerd's `WithEnv` (an entry
    /// without `=` unsets the key).
    pub fn set_env(&mut self, entries: &[String]) {
        for entry in entries {
            match entry.split_once('=') {
                Some((key, _)) => match self.env.iter_mut().find(|e| env_key(e) == key) {
                    Some(existing) => existing.clone_from(entry),
                    None => self.env.push(entry.clone()),
                },
                None => self.env.retain(|e| env_key(e) != entry),
            }
        }
    }

    /// Replaces or adds the namespace of `typ`.
    pub fn set_namespace(&mut self, typ: LinuxNamespaceType, path: Option<PathBuf>) {
        match self.namespaces.iter_mut().find(|n| n.typ == typ) {
            Some(ns) => ns.path = path,
            None => self.namespaces.push(Namespace { typ, path }),
        }
    }

    /// Removes the namespace of `typ` (the host's is used).
    pub fn remove_namespace(&mut self, typ: LinuxNamespaceType) {
        self.namespaces.retain(|n| n.typ != typ);
    }

    /// Removes the mounts at `destination`.
    pub fn remove_mount(&mut self, destination: &str) {
        self.mounts.retain(|m| m.destination != destination);
    }

    /// Adds supplementary groups, keeping the list sorted and unique.
    pub fn add_gids(&mut self, gids: impl IntoIterator<Item = u32>) {
        self.additional_gids.extend(gids);
        self.additional_gids.sort_unstable();
        self.additional_gids.dedup();
    }

    /// The OCI spec.
    pub fn into_spec(self) -> Result<Spec> {
        let caps = to_capabilities(&self.caps);
        let mut capabilities = LinuxCapabilitiesBuilder::default()
            .bounding(caps.clone())
            .effective(caps.clone())
            .permitted(caps)
            .build()
            .map_err(build_error)?;
        // oci-spec's defaults put three capabilities in the inheritable and ambient sets:
        // containerd's CRI sets neither (`WithoutAmbientCaps`), and a non-root process would
        // keep ambient ones.
        capabilities.set_inheritable(None);
        capabilities.set_ambient(None);
        let user = UserBuilder::default()
            .uid(self.uid)
            .gid(self.gid)
            .additional_gids(self.additional_gids)
            .build()
            .map_err(build_error)?;
        let mut process = ProcessBuilder::default()
            .terminal(self.terminal)
            .user(user)
            .args(self.args)
            .env(self.env)
            .cwd(if self.cwd.is_empty() {
                "/".to_owned()
            } else {
                self.cwd
            })
            .capabilities(capabilities)
            .no_new_privileges(self.no_new_privileges)
            .build()
            .map_err(build_error)?;
        process.set_rlimits(None);
        process.set_oom_score_adj(self.oom_score_adj);

        let mounts = self
            .mounts
            .into_iter()
            .map(|m| {
                MountBuilder::default()
                    .destination(m.destination)
                    .typ(m.typ)
                    .source(m.source)
                    .options(m.options)
                    .build()
                    .map_err(build_error)
            })
            .collect::<Result<Vec<_>>>()?;

        let namespaces = self
            .namespaces
            .into_iter()
            .map(|n| {
                let mut b = LinuxNamespaceBuilder::default().typ(n.typ);
                if let Some(path) = n.path {
                    b = b.path(path);
                }
                b.build().map_err(build_error)
            })
            .collect::<Result<Vec<_>>>()?;

        let mut resources = LinuxResourcesBuilder::default().devices(self.device_rules);
        if let Some(cpu) = self.cpu {
            resources = resources.cpu(cpu);
        }
        if let Some(memory) = self.memory {
            resources = resources.memory(memory);
        }
        if !self.hugepage_limits.is_empty() {
            resources = resources.hugepage_limits(self.hugepage_limits);
        }
        if !self.unified.is_empty() {
            resources = resources.unified(self.unified.into_iter().collect::<HashMap<_, _>>());
        }
        let resources = resources.build().map_err(build_error)?;

        let mut linux = LinuxBuilder::default()
            .resources(resources)
            .namespaces(namespaces)
            .masked_paths(self.masked_paths)
            .readonly_paths(self.readonly_paths);
        if !self.devices.is_empty() {
            linux = linux.devices(self.devices);
        }
        if !self.sysctl.is_empty() {
            linux = linux.sysctl(self.sysctl.into_iter().collect::<HashMap<_, _>>());
        }
        if let Some(path) = self.cgroups_path {
            linux = linux.cgroups_path(PathBuf::from(path));
        }
        if let Some(propagation) = self.rootfs_propagation {
            linux = linux.rootfs_propagation(propagation);
        }
        if let Some(seccomp) = self.seccomp {
            linux = linux.seccomp(seccomp);
        }
        let linux = linux.build().map_err(build_error)?;

        let root = RootBuilder::default()
            .path(super::defaults::ROOTFS)
            .readonly(self.root_readonly)
            .build()
            .map_err(build_error)?;

        let mut spec = SpecBuilder::default()
            .version(super::defaults::OCI_VERSION)
            .root(root)
            .process(process)
            .mounts(mounts)
            .annotations(self.annotations.into_iter().collect::<HashMap<_, _>>())
            .linux(linux)
            .build()
            .map_err(build_error)?;
        spec.set_hostname(self.hostname);
        Ok(spec)
    }
}

/// The key of a `KEY=value` entry.
fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// The known capabilities among `names` (`CAP_...`); names this oci-spec does not know are
/// left out (runc would refuse them).
fn to_capabilities(names: &[String]) -> Capabilities {
    names
        .iter()
        .filter_map(|n| Capability::from_str(n.trim_start_matches("CAP_")).ok())
        .collect()
}

fn build_error(e: impl std::fmt::Display) -> CriError {
    CriError::Internal(format!("building the OCI spec: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_entries_replace_and_unset() {
        let mut d = Draft {
            env: vec!["PATH=/bin".into(), "A=1".into(), "B=2".into()],
            ..Draft::default()
        };
        d.set_env(&["A=3".into(), "B".into(), "C=x=y".into()]);
        assert_eq!(d.env, vec!["PATH=/bin", "A=3", "C=x=y"]);
    }

    #[test]
    fn spec_serialises_every_part() {
        let mut d = Draft {
            args: vec!["/pause".into()],
            caps: vec!["CAP_CHOWN".into(), "CAP_NOT_A_CAP".into()],
            uid: 7,
            gid: 8,
            oom_score_adj: Some(-998),
            ..Draft::default()
        };
        d.add_gids([9, 8, 9]);
        d.set_namespace(LinuxNamespaceType::Pid, None);
        d.set_namespace(LinuxNamespaceType::Network, Some("/run/netns/x".into()));
        d.mounts
            .push(MountEntry::new("/proc", "proc", "proc", &["nosuid"]));
        let v = serde_json::to_value(d.into_spec().unwrap()).unwrap();
        assert_eq!(v["process"]["args"][0], "/pause");
        assert_eq!(v["process"]["cwd"], "/");
        assert_eq!(v["process"]["user"]["uid"], 7);
        assert_eq!(
            v["process"]["user"]["additionalGids"],
            serde_json::json!([8, 9])
        );
        assert_eq!(v["process"]["oomScoreAdj"], -998);
        assert_eq!(
            v["process"]["capabilities"]["effective"],
            serde_json::json!(["CAP_CHOWN"])
        );
        assert!(v["process"]["capabilities"]["ambient"].is_null());
        assert!(v["process"]["capabilities"]["inheritable"].is_null());
        assert!(v["process"]["rlimits"].is_null());
        assert!(v["hostname"].is_null());
        assert_eq!(v["linux"]["namespaces"][1]["path"], "/run/netns/x");
        assert_eq!(v["mounts"][0]["type"], "proc");
        assert_eq!(v["root"]["path"], "rootfs");
    }
}
