//! The CRI security context, read from inside the containers: every field a pod or container
//! config can set (run-as user, group and username, the image's `USER`, supplemental groups,
//! privileged, capabilities, read-only rootfs, no-new-privileges, masked and read-only paths,
//! seccomp in all its spellings), the image's volumes, and the pause container's
//! `oom_score_adj` on a host where it cannot be lowered (issue 14, items 5 and 8).
//!
//! What a container sees is read twice: by its main process, which prints
//! `/proc/self/status` and `id` to its log before sleeping, and through ExecSync, as
//! `kubectl exec` shows it. Every case runs against `berthd` (`cri_*`) and against a private
//! containerd 1.6 with the same CRI section (`reference_containerd_*`); the few checks where
//! Berth is deliberately stricter than containerd (error codes and messages that name the
//! field, `CAP_`-prefixed capability names) only run on berthd.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use berth_integration::cri::images::{
    BUSYBOX_UID_GID_IMAGE, BUSYBOX_UID_IMAGE, BUSYBOX_USERNAME_IMAGE, BUSYBOX_VOLUME_IMAGE,
    USER1_GROUPS, USER1_UID, VOLUME_SEED,
};
use berth_integration::cri::{
    container_config, container_log_path, require_cri, CriClient, CriEnv, CriEnvOptions,
    BUSYBOX_IMAGE,
};
use berth_proto::runtime::v1::security_profile::ProfileType;
use berth_proto::runtime::v1::{
    Capability, ContainerConfig, Int64Value, LinuxContainerSecurityContext,
    LinuxSandboxSecurityContext, PodSandboxConfig, SecurityProfile,
};
use tonic::Code;

/// Capability names by bit, as `/proc/<pid>/status` masks number them.
const CAP_BITS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capabilities a container gets by default (containerd's default spec).
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The mask of capability `names` (without `CAP_`).
fn mask(names: &[&str]) -> u64 {
    names
        .iter()
        .map(|n| {
            let bit = CAP_BITS
                .iter()
                .position(|b| b == n)
                .unwrap_or_else(|| panic!("unknown capability {n}"));
            1u64 << bit
        })
        .fold(0, |a, b| a | b)
}

/// The value of `key:` in `/proc/<pid>/status` text.
fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} in {status}"))
}

/// A hex capability mask of `/proc/<pid>/status`.
fn cap_field(status: &str, key: &str) -> u64 {
    u64::from_str_radix(status_field(status, key), 16)
        .unwrap_or_else(|e| panic!("{key} of {status}: {e}"))
}

/// The test process's own effective capabilities (berthd and containerd, started by it,
/// hold the same).
fn own_caps() -> u64 {
    cap_field(
        &std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status"),
        "CapEff",
    )
}

/// The numbers of a `Groups:` or `Uid:` line.
fn numbers(field: &str) -> BTreeSet<u32> {
    field
        .split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect()
}

/// A container config of `image` running `sleep` with `sc`, whose main process first prints
/// its `/proc/self/status` and `id` to its log.
fn observed(name: &str, image: &str, sc: LinuxContainerSecurityContext) -> ContainerConfig {
    let mut c = container_config(
        name,
        image,
        &[
            "sh",
            "-c",
            "cat /proc/self/status; echo \"uid=$(id -u) gid=$(id -g) groups=$(id -G)\"; \
             echo END-OF-VIEW; exec sleep 3600",
        ],
    );
    if let Some(linux) = c.linux.as_mut() {
        linux.security_context = Some(sc);
    }
    c
}

/// What one container saw: its main process's view (from its log) and an exec's.
struct View {
    id: String,
    main: String,
    exec: String,
}

impl View {
    /// `key:` of both views' status; asserts they agree.
    fn field(&self, key: &str) -> String {
        let main = status_field(&self.main, key).to_owned();
        let exec = status_field(&self.exec, key).to_owned();
        assert_eq!(
            main, exec,
            "{key} of the main process and of an exec differ"
        );
        main
    }

    fn caps(&self) -> u64 {
        let caps = cap_field(&self.main, "CapEff");
        assert_eq!(
            caps,
            cap_field(&self.exec, "CapEff"),
            "CapEff of main and exec"
        );
        caps
    }

    /// The `uid=.. gid=.. groups=..` line of the main process.
    fn id_line(&self) -> String {
        self.main
            .lines()
            .find(|l| l.starts_with("uid="))
            .unwrap_or_else(|| panic!("no id line in {}", self.main))
            .to_owned()
    }
}

/// A running pod of a fresh env, on berthd or on the reference containerd.
struct Pod {
    env: CriEnv,
    cri: CriClient,
    config: PodSandboxConfig,
    id: String,
    next: u32,
}

impl Pod {
    /// A pod whose sandbox has `sc`; `None` when the prerequisites are missing (skipped).
    async fn start(reference: bool, sc: LinuxSandboxSecurityContext) -> Option<Pod> {
        if !require_cri() {
            return None;
        }
        let env = CriEnv::start_with(CriEnvOptions {
            containerd: reference,
            ..CriEnvOptions::default()
        })
        .await;
        let mut cri = env.client().await;
        let mut config = env.pod_config("sec");
        if let Some(linux) = config.linux.as_mut() {
            linux.security_context = Some(sc);
        }
        let id = cri.run_pod(&config).await.expect("RunPodSandbox");
        Some(Pod {
            env,
            cri,
            config,
            id,
            next: 0,
        })
    }

    async fn pull(&mut self, image: &str) {
        self.cri
            .pull_image(image)
            .await
            .unwrap_or_else(|s| panic!("PullImage {image}: {s:?}"));
    }

    fn name(&mut self) -> String {
        self.next += 1;
        format!("c{}", self.next)
    }

    /// CreateContainer and StartContainer of `config`.
    async fn run_config(&mut self, config: &ContainerConfig) -> String {
        self.pull(&config.image.as_ref().expect("an image").image.clone())
            .await;
        self.cri
            .run_container(&self.id, config, &self.config)
            .await
            .unwrap_or_else(|s| panic!("create and start {config:?}: {s:?}"))
    }

    /// Runs a container of `image` with `sc` and reads what it sees.
    async fn view(&mut self, image: &str, sc: LinuxContainerSecurityContext) -> View {
        let name = self.name();
        let config = observed(&name, image, sc);
        let id = self.run_config(&config).await;
        let log = container_log_path(&self.config, &config);
        let deadline = Instant::now() + Duration::from_secs(20);
        let main = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("END-OF-VIEW") {
                // `<time> stdout F <line>`: keep the line.
                break text
                    .lines()
                    .filter_map(|l| l.splitn(4, ' ').nth(3))
                    .collect::<Vec<_>>()
                    .join("\n");
            }
            assert!(
                Instant::now() < deadline,
                "container {id} printed no view to {}: {text:?}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let exec = self
            .cri
            .sh(
                &id,
                "cat /proc/self/status; echo \"uid=$(id -u) gid=$(id -g) groups=$(id -G)\"",
            )
            .await;
        View { id, main, exec }
    }

    /// CreateContainer of `image` with `sc`, which must fail; the status.
    async fn refused(&mut self, image: &str, sc: LinuxContainerSecurityContext) -> tonic::Status {
        self.pull(image).await;
        let name = self.name();
        let config = observed(&name, image, sc);
        match self
            .cri
            .create_container(&self.id, &config, &self.config)
            .await
        {
            Ok(id) => panic!("CreateContainer with {config:?} succeeded: {id}"),
            Err(status) => status,
        }
    }

    /// `sh -c script` in container `id`: (exit code, stdout, stderr).
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

    /// Tears the pod down (the env's drop cleans whatever is left otherwise).
    async fn finish(mut self) {
        self.cri
            .stop_and_remove_pod(&self.id)
            .await
            .expect("StopPodSandbox and RemovePodSandbox");
        drop(self.env);
    }
}

/// A refusal says InvalidArgument and names `field` (berthd; containerd only fails).
fn assert_invalid(pod: &Pod, status: &tonic::Status, field: &str) {
    if pod.env.is_reference() {
        return;
    }
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(field),
        "{status:?} does not name {field}"
    );
}

fn int(v: i64) -> Option<Int64Value> {
    Some(Int64Value { value: v })
}

fn caps(add: &[&str], drop: &[&str]) -> Option<Capability> {
    Some(Capability {
        add_capabilities: add.iter().map(|c| (*c).to_owned()).collect(),
        drop_capabilities: drop.iter().map(|c| (*c).to_owned()).collect(),
        ..Capability::default()
    })
}

fn profile(t: ProfileType, localhost_ref: &str) -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: t as i32,
        localhost_ref: localhost_ref.to_owned(),
    })
}

async fn defaults_as_containerd(reference: bool) {
    let Some(mut pod) = Pod::start(reference, Default::default()).await else {
        return;
    };
    let v = pod.view(BUSYBOX_IMAGE, Default::default()).await;
    assert_eq!(v.caps(), mask(DEFAULT_CAPS), "default capabilities");
    assert_eq!(v.field("NoNewPrivs"), "0");
    assert_eq!(
        v.field("Seccomp"),
        "0",
        "no profile asked for: none applied"
    );
    assert_eq!(v.id_line(), "uid=0 gid=0 groups=0");
    let (code, _, err) = pod
        .try_sh(&v.id, "touch /probe && echo x > /etc/hosts")
        .await;
    assert_eq!(
        code, 0,
        "the rootfs and /etc/hosts are writable by default: {err}"
    );
    pod.finish().await;
}

async fn run_as_user_group_and_username(reference: bool) {
    let Some(mut pod) = Pod::start(reference, Default::default()).await else {
        return;
    };
    let uid = i64::from(USER1_UID);
    let user1_groups: BTreeSet<u32> = [USER1_UID].into_iter().chain(USER1_GROUPS).collect();

    let v = pod
        .view(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                run_as_user: int(uid),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(numbers(&v.field("Uid")), [USER1_UID].into(), "run_as_user");
    assert_eq!(
        numbers(&v.field("Gid")),
        [USER1_UID].into(),
        "primary gid from passwd"
    );
    assert_eq!(
        numbers(&v.field("Groups")),
        user1_groups,
        "groups from /etc/group"
    );
    assert_eq!(v.caps(), 0, "a non-root user has no effective capabilities");

    let v = pod
        .view(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                run_as_user: int(uid),
                run_as_group: int(3000),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(numbers(&v.field("Gid")), [3000].into(), "run_as_group");
    assert!(numbers(&v.field("Groups")).contains(&3000));

    let v = pod
        .view(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                run_as_username: "user1".to_owned(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        numbers(&v.field("Uid")),
        [USER1_UID].into(),
        "run_as_username"
    );
    assert_eq!(numbers(&v.field("Groups")), user1_groups);

    let v = pod
        .view(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                run_as_user: int(4321),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        v.id_line(),
        "uid=4321 gid=0 groups=0",
        "a uid missing from passwd"
    );

    let status = pod
        .refused(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                run_as_group: int(3000),
                ..Default::default()
            },
        )
        .await;
    assert_invalid(&pod, &status, "run_as_group");

    let status = pod
        .refused(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                run_as_username: "nosuchuser".to_owned(),
                ..Default::default()
            },
        )
        .await;
    assert_invalid(&pod, &status, "run_as_user");
    pod.finish().await;
}

async fn image_user(reference: bool) {
    let Some(mut pod) = Pod::start(reference, Default::default()).await else {
        return;
    };
    for (image, uid, gid) in [
        (BUSYBOX_UID_IMAGE, USER1_UID, USER1_UID),
        (BUSYBOX_USERNAME_IMAGE, USER1_UID, USER1_UID),
        (BUSYBOX_UID_GID_IMAGE, USER1_UID, 3000),
    ] {
        let v = pod.view(image, Default::default()).await;
        assert_eq!(numbers(&v.field("Uid")), [uid].into(), "USER of {image}");
        assert_eq!(numbers(&v.field("Gid")), [gid].into(), "USER of {image}");
    }
    // run_as_user wins over the image's USER.
    let v = pod
        .view(
            BUSYBOX_UID_IMAGE,
            LinuxContainerSecurityContext {
                run_as_user: int(0),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(numbers(&v.field("Uid")), [0].into());
    pod.finish().await;
}

async fn supplemental_groups(reference: bool) {
    let Some(mut pod) = Pod::start(reference, Default::default()).await else {
        return;
    };
    let v = pod
        .view(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                run_as_user: int(1001),
                supplemental_groups: vec![4242, 4343],
                ..Default::default()
            },
        )
        .await;
    assert_eq!(numbers(&v.field("Groups")), [1001, 4242, 4343].into());
    assert!(
        v.id_line().ends_with("groups=1001 4242 4343"),
        "{}",
        v.id_line()
    );
    pod.finish().await;
}

async fn capabilities_add_and_drop(reference: bool) {
    let Some(mut pod) = Pod::start(reference, Default::default()).await else {
        return;
    };
    let v = pod
        .view(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                capabilities: caps(&["NET_ADMIN", "SYS_TIME"], &["CHOWN", "KILL"]),
                ..Default::default()
            },
        )
        .await;
    let expected =
        (mask(DEFAULT_CAPS) | mask(&["NET_ADMIN", "SYS_TIME"])) & !mask(&["CHOWN", "KILL"]);
    assert_eq!(v.caps(), expected);
    assert_eq!(
        cap_field(&v.main, "CapBnd"),
        expected,
        "the bounding set too"
    );
    // Dropping CHOWN is seen: chown of a file fails.
    let (code, _, err) = pod.try_sh(&v.id, "touch /f && chown 1000 /f").await;
    assert_ne!(code, 0, "chown without CAP_CHOWN succeeded: {err}");

    let v = pod
        .view(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                capabilities: caps(&["ALL"], &[]),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(v.caps(), own_caps(), "ALL: everything the runtime holds");

    let v = pod
        .view(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                capabilities: caps(&[], &["ALL"]),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(v.caps(), 0, "drop ALL");

    let v = pod
        .view(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                capabilities: caps(&["NET_RAW"], &["ALL"]),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(v.caps(), mask(&["NET_RAW"]), "drop ALL, add one");
    pod.finish().await;
}

async fn capability_names_with_prefix() {
    let Some(mut pod) = Pod::start(false, Default::default()).await else {
        return;
    };
    let v = pod
        .view(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                capabilities: caps(&["CAP_NET_ADMIN", "sys_time"], &["cap_chown"]),
                ..Default::default()
            },
        )
        .await;
    let expected = (mask(DEFAULT_CAPS) | mask(&["NET_ADMIN", "SYS_TIME"])) & !mask(&["CHOWN"]);
    assert_eq!(v.caps(), expected);
    let status = pod
        .refused(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                capabilities: caps(&["CAP_FLY"], &[]),
                ..Default::default()
            },
        )
        .await;
    assert_invalid(&pod, &status, "add_capabilities");
    pod.finish().await;
}

async fn privileged(reference: bool) {
    let Some(mut pod) = Pod::start(
        reference,
        LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let v = pod
        .view(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                privileged: true,
                // Ignored for a privileged container.
                seccomp_profile_path: "runtime/default".to_owned(),
                masked_paths: vec!["/proc/cpuinfo".to_owned()],
                readonly_paths: vec!["/proc/sys".to_owned()],
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        v.caps(),
        own_caps(),
        "privileged: all the runtime's capabilities"
    );
    assert_eq!(v.field("Seccomp"), "0", "privileged: no seccomp filter");
    // The read-only paths are not applied: no read-only mount of /proc/sys.
    let mounts = pod.cri.sh(&v.id, "cat /proc/self/mounts").await;
    assert!(
        !mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some("/proc/sys")),
        "{mounts}"
    );
    let cpuinfo = pod.cri.sh(&v.id, "wc -c < /proc/cpuinfo").await;
    assert_ne!(
        cpuinfo.trim(),
        "0",
        "masked paths do not apply to a privileged container"
    );
    // The host's devices: a node only the host's /dev has.
    let host_dev = ["/dev/loop-control", "/dev/kmsg", "/dev/mem", "/dev/vda"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a host device to look for");
    pod.cri.sh(&v.id, &format!("test -e {host_dev}")).await;
    pod.finish().await;

    // A privileged container needs a privileged pod.
    let Some(mut pod) = Pod::start(reference, Default::default()).await else {
        return;
    };
    let status = pod
        .refused(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            },
        )
        .await;
    assert_invalid(&pod, &status, "privileged");
    pod.finish().await;
}

async fn readonly_rootfs(reference: bool) {
    let Some(mut pod) = Pod::start(reference, Default::default()).await else {
        return;
    };
    let v = pod
        .view(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                readonly_rootfs: true,
                ..Default::default()
            },
        )
        .await;
    let (code, _, err) = pod.try_sh(&v.id, "touch /probe").await;
    assert_ne!(code, 0, "wrote to a read-only rootfs");
    assert!(err.contains("Read-only file system"), "{err}");
    let (code, _, err) = pod.try_sh(&v.id, "echo x >> /etc/hosts").await;
    assert_ne!(code, 0, "wrote /etc/hosts of a read-only rootfs: {err}");
    pod.cri.sh(&v.id, "touch /dev/shm/probe").await;
    pod.finish().await;
}

async fn no_new_privs(reference: bool) {
    let Some(mut pod) = Pod::start(reference, Default::default()).await else {
        return;
    };
    let v = pod
        .view(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                no_new_privs: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(v.field("NoNewPrivs"), "1");
    let v = pod.view(BUSYBOX_IMAGE, Default::default()).await;
    assert_eq!(v.field("NoNewPrivs"), "0");
    pod.finish().await;
}

async fn masked_and_readonly_paths(reference: bool) {
    let Some(mut pod) = Pod::start(reference, Default::default()).await else {
        return;
    };
    let v = pod
        .view(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                masked_paths: vec!["/proc/cpuinfo".to_owned(), "/etc/group".to_owned()],
                readonly_paths: vec!["/etc".to_owned()],
                ..Default::default()
            },
        )
        .await;
    assert_eq!(pod.cri.sh(&v.id, "wc -c < /proc/cpuinfo").await.trim(), "0");
    assert_eq!(pod.cri.sh(&v.id, "cat /etc/group").await, "");
    let (code, _, err) = pod.try_sh(&v.id, "touch /etc/probe").await;
    assert_ne!(code, 0, "wrote into a read-only path");
    assert!(err.contains("Read-only file system"), "{err}");
    pod.cri.sh(&v.id, "touch /probe").await;

    let plain = pod.view(BUSYBOX_IMAGE, Default::default()).await;
    assert_ne!(
        pod.cri.sh(&plain.id, "wc -c < /proc/cpuinfo").await.trim(),
        "0"
    );
    pod.cri.sh(&plain.id, "touch /etc/probe").await;
    pod.finish().await;
}

/// A seccomp profile that refuses `mkdir` and allows everything else.
const NO_MKDIR: &str = r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "syscalls": [
    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}
  ]
}"#;

async fn seccomp_profiles(reference: bool) {
    let Some(mut pod) = Pod::start(reference, Default::default()).await else {
        return;
    };
    let path = pod.env.dir().join("no-mkdir.json");
    std::fs::write(&path, NO_MKDIR).expect("write the seccomp profile");
    let path = path.display().to_string();

    for legacy in ["runtime/default", "docker/default"] {
        let v = pod
            .view(
                BUSYBOX_IMAGE,
                LinuxContainerSecurityContext {
                    seccomp_profile_path: legacy.to_owned(),
                    ..Default::default()
                },
            )
            .await;
        assert_eq!(v.field("Seccomp"), "2", "{legacy}");
        pod.cri.sh(&v.id, "mkdir /tmp/allowed").await;
    }
    let v = pod
        .view(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                seccomp_profile_path: "unconfined".to_owned(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(v.field("Seccomp"), "0", "unconfined");

    let v = pod
        .view(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                seccomp: profile(ProfileType::RuntimeDefault, ""),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(v.field("Seccomp"), "2", "SecurityProfile RuntimeDefault");
    let v = pod
        .view(
            BUSYBOX_IMAGE,
            LinuxContainerSecurityContext {
                seccomp: profile(ProfileType::Unconfined, ""),
                // The profile field wins over the legacy one.
                seccomp_profile_path: "runtime/default".to_owned(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(v.field("Seccomp"), "0", "SecurityProfile Unconfined");

    for sc in [
        LinuxContainerSecurityContext {
            seccomp_profile_path: format!("localhost/{path}"),
            ..Default::default()
        },
        LinuxContainerSecurityContext {
            seccomp: profile(ProfileType::Localhost, &path),
            ..Default::default()
        },
    ] {
        let v = pod.view(BUSYBOX_IMAGE, sc).await;
        assert_eq!(v.field("Seccomp"), "2", "localhost profile");
        let (code, _, err) = pod.try_sh(&v.id, "mkdir /tmp/refused").await;
        assert_ne!(code, 0, "mkdir passed the localhost profile");
        assert!(err.contains("Operation not permitted"), "{err}");
    }
    pod.finish().await;
}

async fn seccomp_refusals(reference: bool) {
    let Some(mut pod) = Pod::start(reference, Default::default()).await else {
        return;
    };
    let missing = pod.env.dir().join("missing-profile.json");
    for (sc, field) in [
        (
            LinuxContainerSecurityContext {
                seccomp_profile_path: "/etc/seccomp.json".to_owned(),
                ..Default::default()
            },
            "seccomp_profile_path",
        ),
        (
            LinuxContainerSecurityContext {
                seccomp_profile_path: format!("localhost/{}", missing.display()),
                ..Default::default()
            },
            "seccomp",
        ),
        (
            LinuxContainerSecurityContext {
                seccomp: profile(ProfileType::Localhost, &missing.display().to_string()),
                ..Default::default()
            },
            "seccomp",
        ),
    ] {
        let status = pod.refused(BUSYBOX_IMAGE, sc).await;
        assert_invalid(&pod, &status, field);
    }
    // Nothing half-made: the pod has no containers.
    let left = pod.cri.list_containers(None).await.expect("ListContainers");
    assert!(left.is_empty(), "{left:?}");
    pod.finish().await;
}

async fn image_volumes(reference: bool) {
    let Some(mut pod) = Pod::start(reference, Default::default()).await else {
        return;
    };
    let v = pod.view(BUSYBOX_VOLUME_IMAGE, Default::default()).await;
    let seed = pod.cri.sh(&v.id, "cat /data/seed").await;
    assert_eq!(seed.as_bytes(), VOLUME_SEED);
    // A volume is a mount of its own, writable even with a read-only rootfs.
    let v = pod
        .view(
            BUSYBOX_VOLUME_IMAGE,
            LinuxContainerSecurityContext {
                readonly_rootfs: true,
                ..Default::default()
            },
        )
        .await;
    pod.cri
        .sh(
            &v.id,
            "echo new > /data/new && grep -q ' /data ' /proc/self/mounts",
        )
        .await;
    pod.finish().await;
}

async fn sandbox_oom_score_adj_is_never_below_the_runtimes(reference: bool) {
    let Some(mut pod) = Pod::start(reference, Default::default()).await else {
        return;
    };
    let own_pid = if reference {
        std::process::id()
    } else {
        pod.env.daemon().pid()
    };
    let own: i32 = std::fs::read_to_string(format!("/proc/{own_pid}/oom_score_adj"))
        .expect("the runtime's oom_score_adj")
        .trim()
        .parse()
        .expect("a number");
    let v = pod.view(BUSYBOX_IMAGE, Default::default()).await;
    // The container shares the pod's PID namespace: pid 1 is the pause process.
    let pause: i32 = pod
        .cri
        .sh(&v.id, "cat /proc/1/oom_score_adj")
        .await
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(pause, own.max(-998), "the pause container's oom_score_adj");
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
    defaults_as_containerd,
    cri_defaults_as_containerd,
    reference_containerd_defaults_as_containerd
);
both!(
    run_as_user_group_and_username,
    cri_run_as_user_group_and_username,
    reference_containerd_run_as_user_group_and_username
);
both!(image_user, cri_image_user, reference_containerd_image_user);
both!(
    supplemental_groups,
    cri_supplemental_groups,
    reference_containerd_supplemental_groups
);
both!(
    capabilities_add_and_drop,
    cri_capabilities_add_and_drop,
    reference_containerd_capabilities_add_and_drop
);
both!(privileged, cri_privileged, reference_containerd_privileged);
both!(
    readonly_rootfs,
    cri_readonly_rootfs,
    reference_containerd_readonly_rootfs
);
both!(
    no_new_privs,
    cri_no_new_privs,
    reference_containerd_no_new_privs
);
both!(
    masked_and_readonly_paths,
    cri_masked_and_readonly_paths,
    reference_containerd_masked_and_readonly_paths
);
both!(
    seccomp_profiles,
    cri_seccomp_profiles,
    reference_containerd_seccomp_profiles
);
both!(
    seccomp_refusals,
    cri_seccomp_refusals,
    reference_containerd_seccomp_refusals
);
both!(
    image_volumes,
    cri_image_volumes,
    reference_containerd_image_volumes
);
both!(
    sandbox_oom_score_adj_is_never_below_the_runtimes,
    cri_sandbox_oom_score_adj_is_never_below_the_runtimes,
    reference_containerd_sandbox_oom_score_adj_is_never_below_the_runtimes
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_capability_names_with_and_without_prefix() {
    capability_names_with_prefix().await;
}
