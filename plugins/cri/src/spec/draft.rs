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

    /// A draft holding what `base` (a runtime handler's `base_runtime_spec`) says for every
    /// field a draft models; the rest of `base` is kept by [`Draft::into_spec_on`].
    pub fn from_spec(base: &Spec) -> Draft {
        let mut d = Draft::default();
        if let Some(p) = base.process() {
            d.args = p.args().clone().unwrap_or_default();
            d.env = p.env().clone().unwrap_or_default();
            d.cwd = p.cwd().display().to_string();
            d.terminal = p.terminal().unwrap_or(false);
            d.uid = p.user().uid();
            d.gid = p.user().gid();
            d.additional_gids = p.user().additional_gids().clone().unwrap_or_default();
            d.caps = p
                .capabilities()
                .as_ref()
                .and_then(|c| c.bounding().clone())
                .map(|set| {
                    let mut names: Vec<String> = set
                        .iter()
                        .filter_map(|c| serde_json::to_value(c).ok())
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect();
                    names.sort();
                    names
                })
                .unwrap_or_default();
            d.no_new_privileges = p.no_new_privileges().unwrap_or(false);
            d.oom_score_adj = p.oom_score_adj();
        }
        d.hostname = base.hostname().clone();
        d.root_readonly = base
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false);
        d.mounts = base
            .mounts()
            .iter()
            .flatten()
            .map(|m| MountEntry {
                destination: m.destination().display().to_string(),
                typ: m.typ().clone().unwrap_or_default(),
                source: m
                    .source()
                    .as_ref()
                    .map(|s| s.display().to_string())
                    .unwrap_or_default(),
                options: m.options().clone().unwrap_or_default(),
            })
            .collect();
        d.annotations = base
            .annotations()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(l) = base.linux() {
            d.namespaces = l
                .namespaces()
                .iter()
                .flatten()
                .map(|n| Namespace {
                    typ: n.typ(),
                    path: n.path().clone(),
                })
                .collect();
            d.cgroups_path = l.cgroups_path().as_ref().map(|p| p.display().to_string());
            d.devices = l.devices().clone().unwrap_or_default();
            d.sysctl = l
                .sysctl()
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            d.masked_paths = l.masked_paths().clone().unwrap_or_default();
            d.readonly_paths = l.readonly_paths().clone().unwrap_or_default();
            d.rootfs_propagation = l.rootfs_propagation().clone();
            d.seccomp = l.seccomp().clone();
            if let Some(r) = l.resources() {
                d.device_rules = r.devices().clone().unwrap_or_default();
                d.cpu = r.cpu().clone();
                d.memory = *r.memory();
                d.hugepage_limits = r.hugepage_limits().clone().unwrap_or_default();
                d.unified = r
                    .unified()
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
            }
        }
        d
    }

    /// The OCI spec: `base` with every field a draft models replaced by the draft's (its
    /// rlimits, hooks, AppArmor profile, inheritable capabilities, pids and block I/O limits,
    /// ID mappings and the like are kept), or the draft alone without a base.
    pub fn into_spec_on(self, base: Option<Spec>) -> Result<Spec> {
        let Some(mut base) = base else {
            return self.into_spec();
        };
        let mut fresh = self.into_spec()?;
        if let (Some(process), Some(old)) = (fresh.process_mut().as_mut(), base.process()) {
            process.set_rlimits(old.rlimits().clone());
            process.set_apparmor_profile(old.apparmor_profile().clone());
            process.set_selinux_label(old.selinux_label().clone());
            process.set_scheduler(old.scheduler().clone());
            process.set_io_priority(*old.io_priority());
            let inheritable = old
                .capabilities()
                .as_ref()
                .and_then(|c| c.inheritable().clone());
            if let Some(caps) = process.capabilities().clone() {
                let mut caps = caps;
                caps.set_inheritable(inheritable);
                process.set_capabilities(Some(caps));
            }
        }
        if let (Some(linux), Some(old)) = (fresh.linux_mut().as_mut(), base.linux()) {
            linux.set_uid_mappings(old.uid_mappings().clone());
            linux.set_gid_mappings(old.gid_mappings().clone());
            linux.set_intel_rdt(old.intel_rdt().clone());
            linux.set_personality(old.personality().clone());
            linux.set_mount_label(old.mount_label().clone());
            if let (Some(res), Some(old_res)) = (linux.resources_mut().as_mut(), old.resources()) {
                res.set_pids(*old_res.pids());
                res.set_block_io(old_res.block_io().clone());
                res.set_network(old_res.network().clone());
                res.set_rdma(old_res.rdma().clone());
            }
        }
        base.set_process(fresh.process().clone());
        base.set_root(fresh.root().clone());
        base.set_mounts(fresh.mounts().clone());
        base.set_hostname(fresh.hostname().clone());
        base.set_annotations(fresh.annotations().clone());
        base.set_linux(fresh.linux().clone());
        Ok(base)
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
    fn a_base_spec_round_trips_and_keeps_what_drafts_do_not_model() {
        let base: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "user": {"uid": 0, "gid": 0},
                "args": ["sh"],
                "env": ["BASE=1"],
                "cwd": "/",
                "capabilities": {"bounding": ["CAP_KILL"], "inheritable": ["CAP_KILL"]},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}]
            },
            "root": {"path": "rootfs"},
            "hooks": {"prestart": [{"path": "/bin/true"}]},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "annotations": {"base": "yes"},
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "mount"}],
                "resources": {"pids": {"limit": 100}},
                "seccomp": {"defaultAction": "SCMP_ACT_ALLOW"}
            }
        }))
        .unwrap();
        let mut d = Draft::from_spec(&base);
        assert_eq!(d.env, vec!["BASE=1"]);
        assert_eq!(d.caps, vec!["CAP_KILL"]);
        assert_eq!(d.mounts[0].destination, "/proc");
        assert!(d.seccomp.is_some());
        d.args = vec!["/app".into()];
        d.caps.push("CAP_CHOWN".into());
        d.annotations.insert("added".into(), "1".into());
        let v = serde_json::to_value(d.into_spec_on(Some(base)).unwrap()).unwrap();
        assert_eq!(v["process"]["args"], serde_json::json!(["/app"]));
        assert_eq!(v["process"]["rlimits"][0]["hard"], 4096);
        assert_eq!(
            v["process"]["capabilities"]["inheritable"],
            serde_json::json!(["CAP_KILL"])
        );
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(v["hooks"]["prestart"][0]["path"], "/bin/true");
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 100);
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(v["annotations"]["base"], "yes");
        assert_eq!(v["annotations"]["added"], "1");
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
