//! A container's spec (containerd `containerSpec`, `containerSpecOpts`, `containerMounts`,
//! `volumeMounts`).

use berth_proto::runtime::v1::ContainerConfig;
use oci_spec::image::Config as ImageConfig;

use super::annotations as ann;
use super::draft::Draft;
use super::namespaces::{self, Modes};
use super::security;
use super::{capabilities, defaults, devices, mounts, resources, rootfs, user, ContainerSpecInput};
use crate::error::{CriError, Result};

const SC: &str = "config.linux.security_context";

/// The process arguments: the request's command and args over the image's entrypoint and
/// cmd, as Kubernetes documents (`command` replaces the entrypoint and drops the cmd; `args`
/// alone replace the cmd; an entrypoint of `[""]` means none).
pub fn process_args(config: &ContainerConfig, image: &ImageConfig) -> Result<Vec<String>> {
    let mut command = config.command.clone();
    let mut args = config.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd().clone().unwrap_or_default();
        }
        let entrypoint = image.entrypoint().clone().unwrap_or_default();
        if !(entrypoint.len() == 1 && entrypoint[0].is_empty()) {
            command = entrypoint;
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(CriError::invalid(
            "config.command",
            "no command specified and the image has no entrypoint or cmd",
        ));
    }
    Ok(command)
}

/// A container's spec; see [`super::container_spec`].
pub fn spec(input: &ContainerSpecInput<'_>) -> Result<oci_spec::runtime::Spec> {
    let config = input.config;
    let linux = config.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let pod_linux = input.sandbox_config.linux.clone().unwrap_or_default();
    let pod_sc = pod_linux.security_context.clone().unwrap_or_default();
    let modes = Modes::of(
        sc.namespace_options.as_ref(),
        &format!("{SC}.namespace_options"),
    )?;
    let image = input.image.config.config().clone().unwrap_or_default();

    // Refusals first: nothing is created for a request that cannot run.
    if sc.privileged && !pod_sc.privileged {
        return Err(CriError::invalid(
            format!("{SC}.privileged"),
            "no privileged container allowed in a sandbox that is not privileged",
        ));
    }
    let seccomp = security::seccomp_choice(sc.seccomp.as_ref(), &sc.seccomp_profile_path, SC)?;
    let userstr = user::user_string(
        &sc.run_as_username,
        sc.run_as_user.as_ref(),
        sc.run_as_group.as_ref(),
        SC,
    )?;
    let args = process_args(config, &image)?;

    let base = base_spec(&input.runtime.base_runtime_spec)?;
    let mut d: Draft = match &base {
        None => defaults::default_draft(input.id)?,
        Some(base) => {
            // containerd keeps a base spec's security settings (rlimits, seccomp) and puts the
            // container in its namespace's cgroup (`WithNamespacedCgroup`).
            let mut d = Draft::from_spec(base);
            d.cgroups_path = Some(format!("/{}/{}", crate::K8S_NAMESPACE, input.id));
            d.remove_mount("/run");
            d
        }
    };
    d.args = args;
    d.set_env(&[defaults::DEFAULT_PATH_ENV.to_owned()]);
    d.no_new_privileges = false;
    if !config.working_dir.is_empty() {
        d.cwd = config.working_dir.clone();
    } else if let Some(wd) = image.working_dir().as_deref().filter(|w| !w.is_empty()) {
        d.cwd = wd.to_owned();
    }
    if config.tty {
        d.terminal = true;
        d.env.push("TERM=xterm".to_owned());
    }
    let hostname = if input.sandbox_config.hostname.is_empty() {
        nix::unistd::gethostname()
            .map_err(|e| CriError::Internal(format!("reading the host name: {e}")))?
            .to_string_lossy()
            .into_owned()
    } else {
        input.sandbox_config.hostname.clone()
    };
    d.set_env(&[format!("HOSTNAME={hostname}")]);
    let mut env = image.env().clone().unwrap_or_default();
    env.extend(
        config
            .envs
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value)),
    );
    d.set_env(&env);

    // Mounts: the request's, the pod's files, the image's volumes.
    let mut extra = mounts::pod_file_mounts(input.files, &config.mounts, sc.readonly_rootfs);
    let volumes = if input.cri.ignore_image_defined_volumes {
        Vec::new()
    } else {
        let listed = image.volumes().clone().unwrap_or_default();
        mounts::image_volume_mounts(input.container_dir, &listed, &config.mounts)?
    };
    extra.extend(volumes.iter().cloned());
    mounts::apply(&mut d, &config.mounts, extra)?;

    security::proc_paths(
        &mut d,
        &sc.masked_paths,
        &sc.readonly_paths,
        input.cri.disable_proc_mount,
    );
    let before = d.devices.len();
    devices::apply(&mut d, &config.devices)?;
    if input.cri.device_ownership_from_security_context {
        let id = |v: &Option<berth_proto::runtime::v1::Int64Value>| {
            v.as_ref().map_or(0, |v| v.value as u32)
        };
        devices::own_devices(&mut d, before, id(&sc.run_as_user), id(&sc.run_as_group));
    }
    let all_caps = capabilities::current_effective()?;
    if let Some(caps) = &sc.capabilities {
        capabilities::apply(&mut d, caps, &all_caps, &format!("{SC}.capabilities"))?;
    }
    if sc.privileged {
        security::privileged(
            &mut d,
            &all_caps,
            !input.runtime.privileged_without_host_devices,
        )?;
    }
    if sc.no_new_privs {
        d.no_new_privileges = true;
    }
    if sc.readonly_rootfs {
        d.root_readonly = true;
    }

    if input.cri.disable_cgroup {
        d.cgroups_path = None;
    } else {
        if let Some(r) = &linux.resources {
            resources::apply(&mut d, r, input.cri)?;
        }
        if !pod_linux.cgroup_parent.is_empty() {
            d.cgroups_path = Some(resources::cgroups_path(&pod_linux.cgroup_parent, input.id));
        }
    }

    d.annotations.extend(ann::passthrough(
        &input.sandbox_config.annotations,
        &input.runtime.pod_annotations,
    ));
    d.annotations.extend(ann::passthrough(
        &config.annotations,
        &input.runtime.container_annotations,
    ));
    if let Some(r) = &linux.resources {
        let adj = i32::try_from(r.oom_score_adj).map_err(|_| {
            CriError::invalid("config.linux.resources.oom_score_adj", "out of range")
        })?;
        d.oom_score_adj = Some(resources::oom_score_adj(adj, input.cri)?);
    }
    let cgroup_ns = namespaces::cgroup_v2() && !sc.privileged;
    namespaces::container(
        &mut d,
        modes,
        input.sandbox_pid,
        input.target_pid,
        cgroup_ns,
    )?;
    let pod_meta = input.sandbox_config.metadata.clone().unwrap_or_default();
    let meta = config.metadata.clone().unwrap_or_default();
    let image_name = input
        .image
        .references
        .first()
        .cloned()
        .or_else(|| config.image.as_ref().map(|i| i.image.clone()))
        .unwrap_or_default();
    for (k, v) in [
        (ann::CONTAINER_TYPE, ann::CONTAINER_TYPE_CONTAINER),
        (ann::SANDBOX_ID, input.sandbox_id),
        (ann::SANDBOX_NAMESPACE, pod_meta.namespace.as_str()),
        (ann::SANDBOX_UID, pod_meta.uid.as_str()),
        (ann::SANDBOX_NAME, pod_meta.name.as_str()),
        (ann::CONTAINER_NAME, meta.name.as_str()),
        (ann::IMAGE_NAME, image_name.as_str()),
    ] {
        d.annotations.insert(k.to_owned(), v.to_owned());
    }

    // User and groups from the image's files, and the image volumes' content: one look
    // at the rootfs.
    let userstr = if userstr.is_empty() {
        image.user().clone().unwrap_or_default()
    } else {
        userstr
    };
    // containerd looks up the groups of the requested user, or of uid 0 when none is given.
    let group_user = if !sc.run_as_username.is_empty() {
        sc.run_as_username.clone()
    } else {
        sc.run_as_user.as_ref().map_or(0, |u| u.value).to_string()
    };
    let db = rootfs::with_rootfs(input.rootfs, |root| {
        mounts::copy_image_volume_content(root, &volumes)?;
        user::UserDb::read(root)
    })?;
    if !userstr.is_empty() {
        let field = if sc.run_as_username.is_empty() && sc.run_as_user.is_none() {
            "image.config.User".to_owned()
        } else {
            format!("{SC}.run_as_user")
        };
        let (uid, gid) = user::resolve(&db, &userstr, &field)?;
        d.uid = uid;
        d.gid = gid;
    }
    d.add_gids([d.gid]);
    d.add_gids(user::member_gids(&db, &group_user));
    d.add_gids(sc.supplemental_groups.iter().map(|g| *g as u32));

    security::seccomp_filter(&mut d, &seccomp, sc.privileged, SC)?;
    d.into_spec_on(base)
}

/// The runtime handler's `base_runtime_spec` (a JSON OCI spec file), `None` when not set.
pub fn base_spec(path: &str) -> Result<Option<oci_spec::runtime::Spec>> {
    if path.is_empty() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|e| {
        CriError::FailedPrecondition(format!("runtime handler's base_runtime_spec {path}: {e}"))
    })?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        CriError::FailedPrecondition(format!(
            "runtime handler's base_runtime_spec {path} is not an OCI spec: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use berth_mount::Mount;
    use berth_proto::runtime::v1::{
        Capability, ContainerMetadata, ImageSpec, Int64Value, KeyValue, LinuxContainerConfig,
        LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
        LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
        PodSandboxMetadata,
    };
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};
    use serde_json::{json, Value};

    use super::*;
    use crate::config::{CriConfig, RuntimeHandler};
    use crate::image::lookup::LocalImage;
    use crate::spec::SandboxFiles;

    fn image_config(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        ConfigBuilder::default()
            .entrypoint(v(entrypoint))
            .cmd(v(cmd))
            .build()
            .unwrap()
    }

    fn cfg(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: command.iter().map(|x| (*x).to_owned()).collect(),
            args: args.iter().map(|x| (*x).to_owned()).collect(),
            ..ContainerConfig::default()
        }
    }

    #[test]
    fn args_follow_the_kubernetes_rules() {
        let img = image_config(&["/ep"], &["c1", "c2"]);
        assert_eq!(
            process_args(&cfg(&[], &[]), &img).unwrap(),
            ["/ep", "c1", "c2"]
        );
        assert_eq!(process_args(&cfg(&[], &["a"]), &img).unwrap(), ["/ep", "a"]);
        assert_eq!(process_args(&cfg(&["/cmd"], &[]), &img).unwrap(), ["/cmd"]);
        assert_eq!(
            process_args(&cfg(&["/cmd"], &["a"]), &img).unwrap(),
            ["/cmd", "a"]
        );
        let blank = image_config(&[""], &["c1"]);
        assert_eq!(process_args(&cfg(&[], &[]), &blank).unwrap(), ["c1"]);
        let none = image_config(&[], &[]);
        let err = process_args(&cfg(&[], &[]), &none).unwrap_err();
        assert!(err.to_string().contains("config.command"), "{err}");
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        rootfs: Vec<Mount>,
        container_dir: std::path::PathBuf,
        files: SandboxFiles,
        image: LocalImage,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::write(root.join("data/seed"), "seed").unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            root.join("etc/group"),
            "root:x:0:\nuser:x:1000:\nextra:x:2000:user\nwheel:x:10:root\n",
        )
        .unwrap();
        let pod = dir.path().join("pod");
        std::fs::create_dir_all(&pod).unwrap();
        for f in ["hostname", "hosts", "resolv.conf"] {
            std::fs::write(pod.join(f), "x\n").unwrap();
        }
        let config = ConfigBuilder::default()
            .entrypoint(vec!["/bin/sh".to_owned()])
            .cmd(vec!["-c".to_owned(), "sleep 1".to_owned()])
            .env(vec!["PATH=/img/bin".to_owned(), "IMG=1".to_owned()])
            .working_dir("/img".to_owned())
            .volumes(vec!["/data".to_owned()])
            .build()
            .unwrap();
        Fixture {
            rootfs: vec![Mount {
                mount_type: "bind".into(),
                source: root.display().to_string(),
                target: String::new(),
                options: vec!["rbind".into(), "rw".into()],
            }],
            container_dir: dir.path().join("ctr"),
            files: SandboxFiles {
                hostname: pod.join("hostname"),
                hosts: pod.join("hosts"),
                resolv_conf: pod.join("resolv.conf"),
                shm: Some(pod.join("shm")),
            },
            image: LocalImage {
                id: "sha256:img".into(),
                references: vec!["docker.io/library/busybox:1.36".into()],
                config: ImageConfigurationBuilder::default()
                    .config(config)
                    .build()
                    .unwrap(),
                chain_id: String::new(),
                size: 0,
                target: Default::default(),
            },
            _dir: dir,
        }
    }

    fn pod(privileged: bool) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "ns".into(),
                attempt: 0,
            }),
            hostname: "web-host".into(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: "/kubepods/pod1".into(),
                security_context: Some(LinuxSandboxSecurityContext {
                    privileged,
                    ..LinuxSandboxSecurityContext::default()
                }),
                ..LinuxPodSandboxConfig::default()
            }),
            ..PodSandboxConfig::default()
        }
    }

    fn container(sc: LinuxContainerSecurityContext) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: "busybox".into(),
                ..ImageSpec::default()
            }),
            envs: vec![KeyValue {
                key: "IMG".into(),
                value: "2".into(),
            }],
            linux: Some(LinuxContainerConfig {
                security_context: Some(sc),
                resources: Some(LinuxContainerResources {
                    cpu_shares: 256,
                    oom_score_adj: 1000,
                    ..LinuxContainerResources::default()
                }),
            }),
            ..ContainerConfig::default()
        }
    }

    fn build(f: &Fixture, config: &ContainerConfig, pod: &PodSandboxConfig) -> Result<Value> {
        let runtime = RuntimeHandler::default();
        let cri = CriConfig::default();
        let spec = spec(&ContainerSpecInput {
            id: "c1",
            sandbox_id: "sb1",
            config,
            sandbox_config: pod,
            sandbox_pid: 4242,
            target_pid: None,
            netns_path: Some(Path::new("/run/netns/x")),
            files: &f.files,
            image: &f.image,
            rootfs: &f.rootfs,
            container_dir: &f.container_dir,
            runtime: &runtime,
            cri: &cri,
        })?;
        Ok(serde_json::to_value(spec).unwrap())
    }

    fn caps(v: &Value) -> Vec<String> {
        let mut c: Vec<String> =
            serde_json::from_value(v["process"]["capabilities"]["effective"].clone()).unwrap();
        c.sort();
        c
    }

    #[test]
    fn a_plain_container() {
        let f = fixture();
        let v = build(&f, &container(Default::default()), &pod(false)).unwrap();
        let p = &v["process"];
        assert_eq!(p["args"], json!(["/bin/sh", "-c", "sleep 1"]));
        assert_eq!(
            p["env"],
            json!(["PATH=/img/bin", "HOSTNAME=web-host", "IMG=2"])
        );
        assert_eq!(p["cwd"], "/img");
        assert_eq!(p["noNewPrivileges"], false);
        assert_eq!(p["user"]["uid"], 0);
        assert_eq!(p["user"]["additionalGids"], json!([0, 10]));
        assert!(p["oomScoreAdj"].as_i64().unwrap() >= 0);
        assert_eq!(caps(&v).len(), crate::spec::defaults::DEFAULT_CAPS.len());
        assert_eq!(v["root"]["readonly"], false);
        assert!(v["linux"]["seccomp"].is_null());
        assert_eq!(v["linux"]["cgroupsPath"], "/kubepods/pod1/c1");
        assert_eq!(v["linux"]["resources"]["cpu"]["shares"], 256);
        assert_eq!(v["linux"]["maskedPaths"], json!([]));
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert!(ns
            .iter()
            .any(|n| n["type"] == "network" && n["path"] == "/proc/4242/ns/net"));
        assert!(ns
            .iter()
            .any(|n| n["type"] == "pid" && n["path"] == "/proc/4242/ns/pid"));
        let mounts = v["mounts"].as_array().unwrap();
        let dst = |d: &str| mounts.iter().find(|m| m["destination"] == d).cloned();
        assert_eq!(
            dst("/etc/hosts").unwrap()["source"],
            f.files.hosts.display().to_string()
        );
        assert_eq!(dst("/dev/shm").unwrap()["type"], "bind");
        assert_eq!(dst("/sys/fs/cgroup").unwrap()["type"], "cgroup");
        let data = dst("/data").unwrap();
        let vol = Path::new(data["source"].as_str().unwrap());
        assert!(vol.starts_with(&f.container_dir));
        assert_eq!(std::fs::read_to_string(vol.join("seed")).unwrap(), "seed");
        let a = &v["annotations"];
        assert_eq!(a[crate::spec::annotations::CONTAINER_TYPE], "container");
        assert_eq!(a[crate::spec::annotations::SANDBOX_ID], "sb1");
        assert_eq!(a[crate::spec::annotations::CONTAINER_NAME], "app");
        assert_eq!(
            a[crate::spec::annotations::IMAGE_NAME],
            "docker.io/library/busybox:1.36"
        );
    }

    #[test]
    fn security_context_fields() {
        let f = fixture();
        let sc = LinuxContainerSecurityContext {
            run_as_username: "user".into(),
            supplemental_groups: vec![3000],
            readonly_rootfs: true,
            no_new_privs: true,
            masked_paths: vec!["/proc/kcore".into()],
            readonly_paths: vec!["/proc/sys".into()],
            capabilities: Some(Capability {
                add_capabilities: vec!["SYS_ADMIN".into()],
                drop_capabilities: vec!["CAP_CHOWN".into()],
                ..Capability::default()
            }),
            seccomp_profile_path: "runtime/default".into(),
            ..LinuxContainerSecurityContext::default()
        };
        let v = build(&f, &container(sc), &pod(false)).unwrap();
        let p = &v["process"];
        assert_eq!(p["user"]["uid"], 1000);
        assert_eq!(p["user"]["gid"], 1000);
        assert_eq!(p["user"]["additionalGids"], json!([1000, 2000, 3000]));
        assert_eq!(p["noNewPrivileges"], true);
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["linux"]["maskedPaths"], json!(["/proc/kcore"]));
        assert_eq!(v["linux"]["readonlyPaths"], json!(["/proc/sys"]));
        let c = caps(&v);
        assert!(c.contains(&"CAP_SYS_ADMIN".to_owned()) && !c.contains(&"CAP_CHOWN".to_owned()));
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        let mounts = v["mounts"].as_array().unwrap();
        let hosts = mounts
            .iter()
            .find(|m| m["destination"] == "/etc/hosts")
            .unwrap();
        assert!(hosts["options"].as_array().unwrap().contains(&json!("ro")));

        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            run_as_group: Some(Int64Value { value: 50 }),
            ..LinuxContainerSecurityContext::default()
        };
        let v = build(&f, &container(sc), &pod(false)).unwrap();
        assert_eq!(v["process"]["user"]["uid"], 1000);
        assert_eq!(v["process"]["user"]["gid"], 50);
        assert_eq!(v["process"]["user"]["additionalGids"], json!([50, 2000]));
    }

    #[test]
    fn privileged_containers() {
        let f = fixture();
        let sc = LinuxContainerSecurityContext {
            privileged: true,
            seccomp_profile_path: "runtime/default".into(),
            ..LinuxContainerSecurityContext::default()
        };
        let err = build(&f, &container(sc.clone()), &pod(false)).unwrap_err();
        assert!(err.to_string().contains("privileged"), "{err}");
        let v = build(&f, &container(sc), &pod(true)).unwrap();
        assert!(v["linux"]["seccomp"].is_null());
        assert_eq!(v["linux"]["maskedPaths"], json!([]));
        assert_eq!(
            caps(&v).len(),
            capabilities::current_effective().unwrap().len()
        );
        assert!(v["linux"]["devices"]
            .as_array()
            .is_some_and(|d| !d.is_empty()));
        assert_eq!(v["linux"]["resources"]["devices"][0]["allow"], true);
    }

    #[test]
    fn a_base_runtime_spec_is_the_start() {
        let f = fixture();
        let base_path = f.container_dir.with_file_name("base.json");
        std::fs::write(
            &base_path,
            serde_json::to_vec(&json!({
                "ociVersion": "1.0.2",
                "process": {
                    "user": {"uid": 0, "gid": 0},
                    "cwd": "/",
                    "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                                     "permitted": ["CAP_KILL"]},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}]
                },
                "root": {"path": "rootfs"},
                "mounts": [
                    {"destination": "/proc", "type": "proc", "source": "proc"},
                    {"destination": "/run", "type": "tmpfs", "source": "tmpfs"}
                ],
                "linux": {
                    "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network"},
                                   {"type": "ipc"}, {"type": "uts"}],
                    "seccomp": {"defaultAction": "SCMP_ACT_ALLOW"}
                }
            }))
            .unwrap(),
        )
        .unwrap();
        let runtime = RuntimeHandler {
            base_runtime_spec: base_path.display().to_string(),
            ..RuntimeHandler::default()
        };
        let cri = CriConfig::default();
        let config = container(Default::default());
        let pod = pod(false);
        let input = ContainerSpecInput {
            id: "c1",
            sandbox_id: "sb1",
            config: &config,
            sandbox_config: &pod,
            sandbox_pid: 4242,
            target_pid: None,
            netns_path: None,
            files: &f.files,
            image: &f.image,
            rootfs: &f.rootfs,
            container_dir: &f.container_dir,
            runtime: &runtime,
            cri: &cri,
        };
        let v = serde_json::to_value(spec(&input).unwrap()).unwrap();
        assert_eq!(
            v["process"]["rlimits"][0]["hard"], 4096,
            "the base's rlimits stay"
        );
        assert_eq!(
            v["process"]["capabilities"]["effective"],
            json!(["CAP_KILL"])
        );
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(v["process"]["args"], json!(["/bin/sh", "-c", "sleep 1"]));
        assert_eq!(v["linux"]["cgroupsPath"], "/kubepods/pod1/c1");
        let mounts = v["mounts"].as_array().unwrap();
        assert!(!mounts.iter().any(|m| m["destination"] == "/run"));
        assert!(mounts.iter().any(|m| m["destination"] == "/etc/hosts"));

        let missing = RuntimeHandler {
            base_runtime_spec: "/nonexistent/base.json".into(),
            ..RuntimeHandler::default()
        };
        let err = spec(&ContainerSpecInput {
            runtime: &missing,
            ..input
        })
        .unwrap_err();
        assert!(err.to_string().contains("base_runtime_spec"), "{err}");
    }

    #[test]
    fn refusals_name_the_field() {
        let f = fixture();
        let check = |sc: LinuxContainerSecurityContext, field: &str| {
            let err = build(&f, &container(sc), &pod(false)).unwrap_err();
            assert!(matches!(err, CriError::InvalidArgument { .. }), "{err}");
            assert!(err.to_string().contains(field), "{err} should name {field}");
        };
        check(
            LinuxContainerSecurityContext {
                run_as_group: Some(Int64Value { value: 5 }),
                ..Default::default()
            },
            "run_as_group",
        );
        check(
            LinuxContainerSecurityContext {
                seccomp_profile_path: "/etc/profile.json".into(),
                ..Default::default()
            },
            "seccomp_profile_path",
        );
        check(
            LinuxContainerSecurityContext {
                seccomp_profile_path: "localhost//nonexistent/profile.json".into(),
                ..Default::default()
            },
            "seccomp",
        );
        check(
            LinuxContainerSecurityContext {
                run_as_username: "ghost".into(),
                ..Default::default()
            },
            "run_as_user",
        );
        check(
            LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Target as i32,
                    target_id: "other".into(),
                    ..NamespaceOption::default()
                }),
                ..Default::default()
            },
            "target_id",
        );
        let mut tty = container(Default::default());
        tty.tty = true;
        tty.annotations = HashMap::new();
        let v = build(&f, &tty, &pod(false)).unwrap();
        assert_eq!(v["process"]["terminal"], true);
        assert!(v["process"]["env"]
            .as_array()
            .unwrap()
            .contains(&json!("TERM=xterm")));
    }
}
