//! The container spec the CRI builds, read from inside the containers: process (args, env,
//! working directory), the pod's hostname and sysctls, mounts (read-only, created host paths,
//! propagation), devices with their cgroup permissions, resources as cgroup limits, and the
//! PID namespace modes (issue 14, items 3 and 5).
//!
//! Every case runs against `berthd` (`cri_*`) and a private containerd 1.6 with the same CRI
//! section (`reference_containerd_*`); refusals Berth makes earlier than containerd (a network
//! sysctl in a host-network pod) run on berthd only.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::path::Path;

use berth_integration::cri::{
    container_config, env_var, require_cri, CriClient, CriEnv, CriEnvOptions, BUSYBOX_IMAGE,
};
use berth_proto::runtime::v1::{
    ContainerConfig, Device, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxSandboxSecurityContext, Mount, MountPropagation, NamespaceMode, NamespaceOption,
    PodSandboxConfig,
};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tonic::Code;

/// A running pod of a fresh env.
struct Pod {
    env: CriEnv,
    cri: CriClient,
    config: PodSandboxConfig,
    id: String,
    next: u32,
}

impl Pod {
    /// A pod made from the env's default config changed by `edit`; `None` when skipped.
    async fn start(reference: bool, edit: impl FnOnce(&mut PodSandboxConfig)) -> Option<Pod> {
        if !require_cri() {
            return None;
        }
        let env = CriEnv::start_with(CriEnvOptions {
            containerd: reference,
            ..CriEnvOptions::default()
        })
        .await;
        let mut cri = env.client().await;
        cri.pull_image(BUSYBOX_IMAGE)
            .await
            .expect("PullImage busybox");
        let mut config = env.pod_config("spec");
        edit(&mut config);
        let id = cri.run_pod(&config).await.expect("RunPodSandbox");
        Some(Pod {
            env,
            cri,
            config,
            id,
            next: 0,
        })
    }

    /// A busybox container config running `sleep 3600`, changed by `edit`.
    fn container(&mut self, edit: impl FnOnce(&mut ContainerConfig)) -> ContainerConfig {
        self.next += 1;
        let mut c = container_config(
            &format!("c{}", self.next),
            BUSYBOX_IMAGE,
            &["sleep", "3600"],
        );
        edit(&mut c);
        c
    }

    async fn run(&mut self, config: &ContainerConfig) -> String {
        self.cri
            .run_container(&self.id, config, &self.config)
            .await
            .unwrap_or_else(|s| panic!("create and start {config:?}: {s:?}"))
    }

    /// `sh -c script` in `id`: (exit code, stdout, stderr).
    async fn try_sh(&mut self, id: &str, script: &str) -> (i32, String, String) {
        let reply = self
            .cri
            .exec_sync(id, &["sh", "-c", script], 30)
            .await
            .unwrap_or_else(|s| panic!("ExecSync {script}: {s:?}"));
        (
            reply.exit_code,
            String::from_utf8_lossy(&reply.stdout).into_owned(),
            String::from_utf8_lossy(&reply.stderr).into_owned(),
        )
    }

    async fn finish(mut self) {
        self.cri
            .stop_and_remove_pod(&self.id)
            .await
            .expect("StopPodSandbox and RemovePodSandbox");
        drop(self.env);
    }
}

async fn process_args_env_and_working_dir(reference: bool) {
    let Some(mut pod) = Pod::start(reference, |_| {}).await else {
        return;
    };
    let c = pod.container(|c| {
        c.command = vec!["sh".into(), "-c".into()];
        c.args = vec![
            "echo \"$0 $1\" > /tmp/args; exec sleep 3600".into(),
            "zero".into(),
            "one".into(),
        ];
        c.working_dir = "/home".into();
        c.envs = vec![env_var("GREETING", "hello world"), env_var("EMPTY", "")];
    });
    let id = pod.run(&c).await;
    let wait = "for i in $(seq 100); do [ -s /tmp/args ] && pidof sleep >/dev/null && break; \
                usleep 100000; done";
    assert_eq!(
        pod.cri.sh(&id, &format!("{wait}; cat /tmp/args")).await,
        "zero one\n"
    );
    // The main process's environment.
    let env = pod
        .cri
        .sh(&id, "tr '\\0' '\\n' < /proc/$(pidof sleep)/environ")
        .await;
    let lines: Vec<&str> = env.lines().collect();
    assert!(lines.contains(&"GREETING=hello world"), "{env}");
    assert!(lines.contains(&"EMPTY="), "{env}");
    assert!(
        lines.contains(&"HOSTNAME=spec"),
        "the pod's hostname: {env}"
    );
    assert!(lines.iter().any(|l| l.starts_with("PATH=")), "{env}");
    assert_eq!(pod.cri.sh(&id, "pwd").await, "/home\n");
    assert_eq!(
        pod.cri.sh(&id, "hostname; cat /etc/hostname").await,
        "spec\nspec\n"
    );
    pod.finish().await;
}

async fn pod_sysctls(reference: bool) {
    let Some(mut pod) = Pod::start(reference, |p| {
        let linux = p.linux.as_mut().expect("a linux config");
        linux
            .sysctls
            .insert("net.ipv4.ip_local_port_range".into(), "20000 30000".into());
        linux
            .sysctls
            .insert("kernel.shm_rmid_forced".into(), "1".into());
    })
    .await
    else {
        return;
    };
    let c = pod.container(|_| {});
    let id = pod.run(&c).await;
    let range = pod
        .cri
        .sh(&id, "cat /proc/sys/net/ipv4/ip_local_port_range")
        .await;
    assert_eq!(
        range.split_whitespace().collect::<Vec<_>>(),
        ["20000", "30000"]
    );
    assert_eq!(
        pod.cri
            .sh(&id, "cat /proc/sys/kernel/shm_rmid_forced")
            .await,
        "1\n"
    );
    pod.finish().await;
}

async fn network_sysctl_in_a_host_network_pod_is_refused() {
    if !require_cri() {
        return;
    }
    let env = CriEnv::start().await;
    let mut cri = env.client().await;
    let mut config = env.pod_config("hostnet");
    let linux = config.linux.as_mut().expect("a linux config");
    linux.security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(NamespaceOption {
            network: NamespaceMode::Node as i32,
            ..NamespaceOption::default()
        }),
        ..LinuxSandboxSecurityContext::default()
    });
    linux
        .sysctls
        .insert("net.ipv4.ip_local_port_range".into(), "20000 30000".into());
    let status = cri
        .run_pod(&config)
        .await
        .expect_err("RunPodSandbox succeeded");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("sysctls"), "{status:?}");
    assert!(cri
        .list_pods(None)
        .await
        .expect("ListPodSandbox")
        .is_empty());
}

async fn mounts_read_only_created_and_propagating(reference: bool) {
    let Some(mut pod) = Pod::start(reference, |_| {}).await else {
        return;
    };
    let dir = pod.env.dir().join("mounts");
    let ro = dir.join("ro");
    std::fs::create_dir_all(&ro).expect("create the ro dir");
    std::fs::write(ro.join("file"), "host\n").expect("write a host file");
    let missing = dir.join("created/by/runtime");
    // A shared mount point for rshared and rslave (as the kubelet's hosts have).
    let shared = dir.join("shared");
    std::fs::create_dir_all(&shared).expect("create the shared dir");
    mount(
        Some(&shared),
        &shared,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .expect("bind");
    mount(
        None::<&str>,
        &shared,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .expect("make shared");

    let path = |p: &Path| p.display().to_string();
    let c = pod.container(|c| {
        c.mounts = vec![
            Mount {
                container_path: "/ro".into(),
                host_path: path(&ro),
                readonly: true,
                ..Mount::default()
            },
            Mount {
                container_path: "/created".into(),
                host_path: path(&missing),
                ..Mount::default()
            },
            Mount {
                container_path: "/slave".into(),
                host_path: path(&shared),
                propagation: MountPropagation::PropagationHostToContainer as i32,
                ..Mount::default()
            },
            Mount {
                container_path: "/private".into(),
                host_path: path(&shared),
                propagation: MountPropagation::PropagationPrivate as i32,
                ..Mount::default()
            },
        ];
    });
    let id = pod.run(&c).await;
    assert_eq!(pod.cri.sh(&id, "cat /ro/file").await, "host\n");
    let (code, _, err) = pod.try_sh(&id, "touch /ro/new").await;
    assert_ne!(code, 0, "wrote into a read-only mount");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(missing.is_dir(), "a missing host path is created");
    pod.cri.sh(&id, "touch /created/from-container").await;
    assert!(missing.join("from-container").exists());

    // A mount made on the host under the shared path after the start reaches /slave only.
    let sub = shared.join("sub");
    std::fs::create_dir_all(&sub).expect("create sub");
    mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount tmpfs");
    std::fs::write(sub.join("marker"), "propagated\n").expect("write the marker");
    assert_eq!(
        pod.cri.sh(&id, "cat /slave/sub/marker").await,
        "propagated\n"
    );
    let (code, _, _) = pod.try_sh(&id, "cat /private/sub/marker").await;
    assert_ne!(
        code, 0,
        "a private mount saw a host mount made after the start"
    );
    let _ = umount2(&sub, MntFlags::MNT_DETACH);
    pod.finish().await;
    let _ = umount2(&shared, MntFlags::MNT_DETACH);
}

/// A host device outside runc's default allow-list (`/dev/null`, `/dev/zero`, ... are always
/// allowed), for the cgroup permissions to show.
const LOOP_CONTROL: &str = "/dev/loop-control";

async fn devices_with_permissions(reference: bool) {
    let Some(mut pod) = Pod::start(reference, |_| {}).await else {
        return;
    };
    assert!(
        Path::new(LOOP_CONTROL).exists(),
        "{LOOP_CONTROL} is needed on the host"
    );
    let c = pod.container(|c| {
        c.devices = vec![
            Device {
                container_path: "/dev/rw-null".into(),
                host_path: "/dev/null".into(),
                permissions: "rwm".into(),
            },
            Device {
                container_path: "/dev/lc-r".into(),
                host_path: LOOP_CONTROL.into(),
                permissions: "r".into(),
            },
        ];
    });
    let id = pod.run(&c).await;
    pod.cri
        .sh(&id, "test -c /dev/rw-null && echo x > /dev/rw-null")
        .await;
    let ls = pod.cri.sh(&id, "ls -l /dev/lc-r").await;
    assert!(ls.contains("10, 237"), "the device numbers: {ls}");
    // The device cgroup allows what the permissions say (per device number): reading, not
    // writing.
    pod.cri.sh(&id, ": < /dev/lc-r").await;
    let (code, _, err) = pod.try_sh(&id, ": > /dev/lc-r").await;
    assert_ne!(code, 0, "opened for writing a device allowed read-only");
    assert!(err.contains("Operation not permitted"), "{err}");
    pod.finish().await;
}

/// The container's limit `v1` (a cgroup v1 file) or `v2`, read inside.
async fn cgroup_value(pod: &mut Pod, id: &str, v1: &str, v2: &str) -> String {
    let script = format!("cat /sys/fs/cgroup/{v1} 2>/dev/null || cat /sys/fs/cgroup/{v2}");
    pod.cri.sh(id, &script).await.trim().to_owned()
}

async fn resources_are_cgroup_limits(reference: bool) {
    let Some(mut pod) = Pod::start(reference, |_| {}).await else {
        return;
    };
    let c = pod.container(|c| {
        c.linux.as_mut().expect("a linux config").resources = Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 512,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpuset_cpus: "0".into(),
            ..LinuxContainerResources::default()
        });
    });
    let id = pod.run(&c).await;
    assert_eq!(
        cgroup_value(&mut pod, &id, "memory/memory.limit_in_bytes", "memory.max").await,
        (64u64 << 20).to_string()
    );
    let quota = cgroup_value(&mut pod, &id, "cpu/cpu.cfs_quota_us", "cpu.max").await;
    assert!(quota.starts_with("50000"), "{quota}");
    let cpus = cgroup_value(&mut pod, &id, "cpuset/cpuset.cpus", "cpuset.cpus").await;
    assert_eq!(cpus, "0");
    let shares = pod
        .cri
        .sh(
            &id,
            "cat /sys/fs/cgroup/cpu/cpu.shares 2>/dev/null || echo v2",
        )
        .await;
    assert!(shares.trim() == "512" || shares.trim() == "v2", "{shares}");
    pod.finish().await;
}

async fn pid_namespace_modes(reference: bool) {
    let Some(mut pod) = Pod::start(reference, |_| {}).await else {
        return;
    };
    let shared = pod.container(|_| {});
    let shared = pod.run(&shared).await;
    let own = pod.container(|c| {
        c.linux.as_mut().expect("a linux config").security_context =
            Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..NamespaceOption::default()
                }),
                ..LinuxContainerSecurityContext::default()
            });
    });
    let own = pod.run(&own).await;
    // POD: pid 1 is the pause process and the sibling's sleep is visible.
    let comm = pod.cri.sh(&shared, "cat /proc/1/comm").await;
    assert_eq!(comm, "pause\n");
    // CONTAINER: the container's own process is pid 1.
    assert_eq!(pod.cri.sh(&own, "cat /proc/1/comm").await, "sleep\n");
    pod.finish().await;
}

macro_rules! both {
    ($case:ident, $berthd:ident, $reference:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $berthd() {
            $case(false).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $reference() {
            $case(true).await;
        }
    };
}

both!(
    process_args_env_and_working_dir,
    cri_process_args_env_and_working_dir,
    reference_containerd_process_args_env_and_working_dir
);
both!(
    pod_sysctls,
    cri_pod_sysctls,
    reference_containerd_pod_sysctls
);
both!(
    mounts_read_only_created_and_propagating,
    cri_mounts_read_only_created_and_propagating,
    reference_containerd_mounts_read_only_created_and_propagating
);
both!(
    devices_with_permissions,
    cri_devices_with_permissions,
    reference_containerd_devices_with_permissions
);
both!(
    resources_are_cgroup_limits,
    cri_resources_are_cgroup_limits,
    reference_containerd_resources_are_cgroup_limits
);
both!(
    pid_namespace_modes,
    cri_pid_namespace_modes,
    reference_containerd_pid_namespace_modes
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_network_sysctl_in_a_host_network_pod_is_refused() {
    network_sysctl_in_a_host_network_pod_is_refused().await;
}
