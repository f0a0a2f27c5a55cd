//! The pause container's spec (containerd `sandboxContainerSpec`,
//! `sandboxContainerSpecOpts`).

use std::path::PathBuf;

use berth_proto::runtime::v1::NamespaceMode;

use super::annotations as ann;
use super::draft::{Draft, MountEntry};
use super::namespaces::{self, Modes};
use super::security::{self, SeccompChoice};
use super::{defaults, mounts, resources, user, SandboxSpecInput};
use crate::error::{CriError, Result};

const SC: &str = "config.linux.security_context";

/// The pause container's spec: the pause image's entrypoint, cmd, env and working dir; the
/// pod's hostname and namespaces; a read-only rootfs; the pod's shm, resolv.conf and
/// hostname; sysctls; the cgroup under the pod's parent with 2 CPU shares; `oom_score_adj`
/// -998 (never below berthd's when it cannot be lowered); the security context's user,
/// supplemental groups and seccomp profile; the CRI annotations.
pub fn spec(input: &SandboxSpecInput<'_>) -> Result<oci_spec::runtime::Spec> {
    let config = input.config;
    let linux = config.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let modes = Modes::of(
        sc.namespace_options.as_ref(),
        &format!("{SC}.namespace_options"),
    )?;
    let image = input.image.config.config().clone().unwrap_or_default();

    let mut d: Draft = defaults::default_draft(input.id)?;
    d.root_readonly = true;
    d.set_env(image.env().as_deref().unwrap_or_default());
    if let Some(wd) = image.working_dir().as_deref().filter(|w| !w.is_empty()) {
        d.cwd = wd.to_owned();
    }
    let args: Vec<String> = image
        .entrypoint()
        .iter()
        .flatten()
        .chain(image.cmd().iter().flatten())
        .cloned()
        .collect();
    if args.is_empty() {
        return Err(CriError::FailedPrecondition(format!(
            "sandbox image {} has neither entrypoint nor cmd",
            input.image.id
        )));
    }
    d.args = args;
    // A host-network pod shares the host's UTS namespace: no hostname can be set there.
    if modes.network != NamespaceMode::Node && !config.hostname.is_empty() {
        d.hostname = Some(config.hostname.clone());
    }

    if !linux.cgroup_parent.is_empty() {
        d.cgroups_path = Some(resources::cgroups_path(&linux.cgroup_parent, input.id));
    }
    namespaces::sandbox(&mut d, modes, input.netns_path)?;

    let shm = match (&input.files.shm, modes.ipc) {
        (Some(shm), m) if m != NamespaceMode::Node => shm.clone(),
        _ => PathBuf::from(mounts::DEV_SHM),
    };
    d.remove_mount(mounts::DEV_SHM);
    d.mounts.push(MountEntry::new(
        mounts::DEV_SHM,
        "bind",
        &shm.display().to_string(),
        &["rbind", "ro"],
    ));
    d.mounts.push(MountEntry::new(
        mounts::RESOLV_CONF,
        "bind",
        &input.files.resolv_conf.display().to_string(),
        &["rbind", "ro"],
    ));
    if !input.files.hostname.as_os_str().is_empty() {
        d.mounts.push(MountEntry::new(
            mounts::ETC_HOSTNAME,
            "bind",
            &input.files.hostname.display().to_string(),
            &["rbind", "ro"],
        ));
    }

    d.add_gids(sc.supplemental_groups.iter().map(|g| *g as u32));
    d.sysctl = resources::sysctls(&linux.sysctls, modes, input.cri)?;
    if !input.cri.disable_cgroup {
        d.cpu = Some(
            oci_spec::runtime::LinuxCpuBuilder::default()
                .shares(resources::SANDBOX_CPU_SHARES)
                .build()
                .map_err(|e| CriError::Internal(format!("building the OCI spec: {e}")))?,
        );
    } else {
        d.cgroups_path = None;
    }
    if let Some(r) = &linux.resources {
        d.annotations
            .insert(ann::SANDBOX_CPU_PERIOD.into(), r.cpu_period.to_string());
        d.annotations
            .insert(ann::SANDBOX_CPU_QUOTA.into(), r.cpu_quota.to_string());
        d.annotations
            .insert(ann::SANDBOX_CPU_SHARES.into(), r.cpu_shares.to_string());
        d.annotations.insert(
            ann::SANDBOX_MEMORY.into(),
            r.memory_limit_in_bytes.to_string(),
        );
    }
    d.oom_score_adj = Some(resources::oom_score_adj(
        resources::SANDBOX_OOM_SCORE_ADJ,
        input.cri,
    )?);

    d.annotations.extend(ann::passthrough(
        &config.annotations,
        &input.runtime.pod_annotations,
    ));
    let meta = config.metadata.clone().unwrap_or_default();
    for (k, v) in [
        (ann::CONTAINER_TYPE, ann::CONTAINER_TYPE_SANDBOX),
        (ann::SANDBOX_ID, input.id),
        (ann::SANDBOX_NAMESPACE, meta.namespace.as_str()),
        (ann::SANDBOX_UID, meta.uid.as_str()),
        (ann::SANDBOX_NAME, meta.name.as_str()),
        (ann::SANDBOX_LOG_DIR, config.log_directory.as_str()),
    ] {
        d.annotations.insert(k.to_owned(), v.to_owned());
    }
    if let Some(name) = input.image.references.first() {
        d.annotations
            .insert(ann::IMAGE_NAME.to_owned(), name.clone());
    }

    // Security context: seccomp and user (containerd's sandboxContainerSpecOpts).
    let choice = security::seccomp_choice(sc.seccomp.as_ref(), &sc.seccomp_profile_path, SC)?;
    let choice = if sc.privileged {
        SeccompChoice::Unconfined
    } else {
        choice
    };
    security::seccomp_filter(&mut d, &choice, sc.privileged, SC)?;
    let requested = user::user_string("", sc.run_as_user.as_ref(), sc.run_as_group.as_ref(), SC)?;
    let (userstr, field) = if requested.is_empty() {
        let from_image = image.user().clone().unwrap_or_default();
        (from_image, "image.config.User".to_owned())
    } else {
        (requested, format!("{SC}.run_as_user"))
    };
    if !userstr.is_empty() {
        // The pause image's files are not read (its rootfs is not mounted yet): a name that
        // is not a number is refused, a uid runs with gid 0 unless a group is given.
        let (uid, gid) = user::resolve(&user::UserDb::default(), &userstr, &field)?;
        d.uid = uid;
        d.gid = gid;
        d.add_gids([gid]);
    }
    if sc.readonly_rootfs {
        d.root_readonly = true;
    }
    d.into_spec()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use berth_proto::runtime::v1::{
        Int64Value, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceOption,
        PodSandboxConfig, PodSandboxMetadata,
    };
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};
    use serde_json::Value;

    use super::*;
    use crate::config::{CriConfig, RuntimeHandler};
    use crate::image::lookup::LocalImage;
    use crate::spec::SandboxFiles;

    fn pause() -> LocalImage {
        let cfg = ConfigBuilder::default()
            .entrypoint(vec!["/pause".to_owned()])
            .env(vec!["PATH=/bin".to_owned()])
            .user("65535:65535".to_owned())
            .build()
            .unwrap();
        LocalImage {
            id: "sha256:abc".into(),
            references: vec!["registry.k8s.io/pause:3.6".into()],
            config: ImageConfigurationBuilder::default()
                .config(cfg)
                .build()
                .unwrap(),
            chain_id: String::new(),
            size: 0,
            target: Default::default(),
        }
    }

    fn files() -> SandboxFiles {
        SandboxFiles {
            hostname: "/s/hostname".into(),
            hosts: "/s/hosts".into(),
            resolv_conf: "/s/resolv.conf".into(),
            shm: Some("/s/shm".into()),
        }
    }

    fn config(sc: LinuxSandboxSecurityContext) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "ns".into(),
                attempt: 0,
            }),
            hostname: "web-host".into(),
            log_directory: "/var/log/pods/x".into(),
            annotations: HashMap::from([("pass/x".to_owned(), "1".to_owned())]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: "/kubepods/pod1".into(),
                security_context: Some(sc),
                sysctls: HashMap::from([("net.ipv4.ip_forward".to_owned(), "1".to_owned())]),
                ..LinuxPodSandboxConfig::default()
            }),
            ..PodSandboxConfig::default()
        }
    }

    fn build(config: &PodSandboxConfig, netns: Option<&Path>) -> Result<Value> {
        let image = pause();
        let files = files();
        let runtime = RuntimeHandler {
            pod_annotations: vec!["pass/*".into()],
            ..RuntimeHandler::default()
        };
        let cri = CriConfig::default();
        let spec = spec(&SandboxSpecInput {
            id: "sb1",
            config,
            image: &image,
            netns_path: netns,
            files: &files,
            runtime: &runtime,
            cri: &cri,
        })?;
        Ok(serde_json::to_value(spec).unwrap())
    }

    fn has_mount(v: &Value, dst: &str, src: &str) -> bool {
        v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == dst && m["source"] == src)
    }

    #[test]
    fn pause_spec_as_containerd() {
        let v = build(
            &config(Default::default()),
            Some(Path::new("/run/netns/sb1")),
        )
        .unwrap();
        assert_eq!(v["process"]["args"], serde_json::json!(["/pause"]));
        assert_eq!(v["process"]["env"], serde_json::json!(["PATH=/bin"]));
        assert_eq!(v["process"]["user"]["uid"], 65535);
        assert_eq!(v["process"]["user"]["gid"], 65535);
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert!(v["process"]["oomScoreAdj"].as_i64().unwrap() >= -998);
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["hostname"], "web-host");
        assert_eq!(v["linux"]["cgroupsPath"], "/kubepods/pod1/sb1");
        assert_eq!(v["linux"]["resources"]["cpu"]["shares"], 2);
        assert_eq!(v["linux"]["sysctl"]["net.ipv4.ip_forward"], "1");
        assert!(v["linux"]["seccomp"].is_null());
        assert!(has_mount(&v, "/dev/shm", "/s/shm"));
        assert!(has_mount(&v, "/etc/resolv.conf", "/s/resolv.conf"));
        assert!(has_mount(&v, "/etc/hostname", "/s/hostname"));
        assert!(!v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/run"));
        let ns: Vec<&Value> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .collect();
        assert!(ns
            .iter()
            .any(|n| n["type"] == "network" && n["path"] == "/run/netns/sb1"));
        let a = &v["annotations"];
        assert_eq!(a[ann::CONTAINER_TYPE], "sandbox");
        assert_eq!(a[ann::SANDBOX_ID], "sb1");
        assert_eq!(a[ann::SANDBOX_NAME], "web");
        assert_eq!(a[ann::SANDBOX_NAMESPACE], "ns");
        assert_eq!(a[ann::SANDBOX_UID], "u1");
        assert_eq!(a[ann::SANDBOX_LOG_DIR], "/var/log/pods/x");
        assert_eq!(a[ann::IMAGE_NAME], "registry.k8s.io/pause:3.6");
        assert_eq!(a["pass/x"], "1");
    }

    #[test]
    fn host_namespaces_and_security_context() {
        let sc = LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
                pid: NamespaceMode::Node as i32,
                ipc: NamespaceMode::Node as i32,
                ..NamespaceOption::default()
            }),
            run_as_user: Some(Int64Value { value: 1000 }),
            run_as_group: Some(Int64Value { value: 3000 }),
            supplemental_groups: vec![5, 6],
            seccomp_profile_path: "runtime/default".into(),
            ..LinuxSandboxSecurityContext::default()
        };
        let mut c = config(sc);
        c.linux.as_mut().unwrap().sysctls.clear();
        let v = build(&c, None).unwrap();
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, vec!["mount"]);
        assert!(v["hostname"].is_null());
        assert!(has_mount(&v, "/dev/shm", "/dev/shm"));
        assert_eq!(v["process"]["user"]["uid"], 1000);
        assert_eq!(v["process"]["user"]["gid"], 3000);
        assert_eq!(
            v["process"]["user"]["additionalGids"],
            serde_json::json!([5, 6, 3000])
        );
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    }

    #[test]
    fn bad_requests_are_refused() {
        let sc = LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
                ..NamespaceOption::default()
            }),
            ..LinuxSandboxSecurityContext::default()
        };
        let err = build(&config(sc), None).unwrap_err();
        assert!(err.to_string().contains("sysctls"), "{err}");

        let sc = LinuxSandboxSecurityContext {
            run_as_group: Some(Int64Value { value: 1 }),
            ..LinuxSandboxSecurityContext::default()
        };
        let err = build(&config(sc), Some(Path::new("/n"))).unwrap_err();
        assert!(err.to_string().contains("run_as_group"), "{err}");

        let sc = LinuxSandboxSecurityContext {
            seccomp_profile_path: "/abs/profile.json".into(),
            ..LinuxSandboxSecurityContext::default()
        };
        let err = build(&config(sc), Some(Path::new("/n"))).unwrap_err();
        assert!(err.to_string().contains("seccomp_profile_path"), "{err}");
    }
}
