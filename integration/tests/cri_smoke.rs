//! Smoke tests of the CRI harness (`berth_integration::cri`) and of the first CRI calls a
//! kubelet makes: Version, Status, PullImage of the sandbox image, then one pod with a busybox
//! container that runs, answers ExecSync and leaves nothing behind.
//!
//! Every case runs against `berthd` (`cri_*`) and against a private containerd 1.6 with its CRI
//! plugin and the very same CRI section (`reference_containerd_*`, STYLE.md §5): a case failing
//! on containerd is a wrong test or a broken harness.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use berth_integration::cri::images::{PASSWD, PAUSE_IMAGE};
use berth_integration::cri::leftovers;
use berth_integration::cri::{
    basic_auth, container_log_path, require_cri, CriEnv, CriEnvOptions, AUTH_IMAGE, AUTH_PASSWORD,
    AUTH_USER, CRI_API_VERSION, DNS_SERVERS,
};

/// Starts a CRI env on berthd or, for `reference`, on containerd.
async fn env(reference: bool, cni: bool) -> CriEnv {
    CriEnv::start_with(CriEnvOptions {
        containerd: reference,
        cni,
        ..CriEnvOptions::default()
    })
    .await
}

/// The condition `kind` of a Status reply: (status, reason).
fn condition(reply: &berth_proto::runtime::v1::StatusResponse, kind: &str) -> (bool, String) {
    let status = reply.status.as_ref().expect("Status has a RuntimeStatus");
    let c = status
        .conditions
        .iter()
        .find(|c| c.r#type == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {status:?}"));
    (c.status, c.reason.clone())
}

async fn version_names_the_runtime_and_api_v1(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = env(reference, true).await;
    let mut cri = env.client().await;
    let v = cri
        .version()
        .await
        .expect("RuntimeService.Version is served");
    assert_eq!(v.runtime_api_version, CRI_API_VERSION);
    assert!(!v.runtime_name.is_empty(), "{v:?}");
    assert!(!v.runtime_version.is_empty(), "{v:?}");
    assert_eq!(v.version, "0.1.0", "the kubelet API version field: {v:?}");
}

async fn status_reports_runtime_and_network_ready(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = env(reference, true).await;
    let mut cri = env.client().await;
    let reply = cri
        .status(false)
        .await
        .expect("RuntimeService.Status is served");
    assert!(condition(&reply, "RuntimeReady").0, "{reply:?}");
    assert!(condition(&reply, "NetworkReady").0, "{reply:?}");
}

async fn status_without_cni_config_reports_network_not_ready(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = env(reference, false).await;
    let mut cri = env.client().await;
    let reply = cri
        .status(false)
        .await
        .expect("RuntimeService.Status is served");
    assert!(condition(&reply, "RuntimeReady").0, "{reply:?}");
    let (ready, reason) = condition(&reply, "NetworkReady");
    assert!(!ready, "no conflist, yet NetworkReady: {reply:?}");
    assert!(
        !reason.is_empty(),
        "NetworkReady false needs a reason: {reply:?}"
    );
}

async fn pull_image_fetches_the_pause_image_from_the_local_registry(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = env(reference, true).await;
    let mut cri = env.client().await;
    let image_ref = cri
        .pull_image(PAUSE_IMAGE)
        .await
        .expect("ImageService.PullImage of the sandbox image");
    let pause = env.pause_image();
    assert_eq!(
        image_ref, pause.config_digest,
        "PullImage answers the image id"
    );
    let status = cri
        .image_status(PAUSE_IMAGE)
        .await
        .expect("ImageService.ImageStatus")
        .expect("the pulled image has a status");
    assert_eq!(status.id, pause.config_digest);
    assert!(
        status.repo_tags.iter().any(|t| t == PAUSE_IMAGE),
        "{status:?}"
    );
    let repo_digest = format!("registry.k8s.io/pause@{}", pause.manifest_digest);
    assert!(
        status.repo_digests.contains(&repo_digest),
        "{status:?} lacks {repo_digest}"
    );
    // The pull went to the local registry (hosts.toml), nowhere else.
    let log = env.registry().log_text();
    assert!(
        log.contains("GET /v2/pause/manifests/3.8") || log.contains("HEAD /v2/pause/manifests/3.8"),
        "the registry saw no request for pause:3.8"
    );
}

async fn pull_image_with_basic_auth_needs_the_credentials(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = CriEnv::start_with(CriEnvOptions {
        containerd: reference,
        auth_registry: true,
        ..CriEnvOptions::default()
    })
    .await;
    let mut cri = env.client().await;
    let anonymous = cri.pull_image(AUTH_IMAGE).await;
    assert!(
        anonymous.is_err(),
        "pulled {AUTH_IMAGE} without credentials"
    );
    let wrong = cri
        .pull_image_with(AUTH_IMAGE, Some(basic_auth(AUTH_USER, "wrong")), None)
        .await;
    assert!(wrong.is_err(), "pulled {AUTH_IMAGE} with a wrong password");
    let id = cri
        .pull_image_with(AUTH_IMAGE, Some(basic_auth(AUTH_USER, AUTH_PASSWORD)), None)
        .await
        .expect("PullImage with the registry's credentials");
    let status = cri
        .image_status(AUTH_IMAGE)
        .await
        .expect("ImageStatus")
        .expect("the pulled image has a status");
    assert_eq!(status.id, id);
}

async fn pod_with_a_busybox_container_runs_execs_and_leaves_nothing(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = env(reference, true).await;
    let before = env.host_state();
    let mut cri = env.client().await;
    let (pod, pod_id) = env.busybox_pod(&mut cri, "smoke").await;
    let ip = cri.pod_ip(&pod_id).await.expect("PodSandboxStatus");
    let network = env.network().expect("the env has a CNI network");
    assert!(
        network.contains(&ip),
        "pod IP {ip:?} not in {}",
        network.subnet()
    );
    let config = env.busybox_container("app", &["sh", "-c", "echo started; sleep 3600"]);
    let id = cri
        .run_container(&pod_id, &config, &pod)
        .await
        .expect("CreateContainer and StartContainer");
    assert_eq!(cri.sh(&id, "cat /etc/passwd").await, PASSWD);
    let resolv = cri.sh(&id, "cat /etc/resolv.conf").await;
    assert!(resolv.contains(DNS_SERVERS[0]), "{resolv}");
    let reply = cri
        .exec_sync(&id, &["sh", "-c", "echo out; echo err >&2; exit 3"], 10)
        .await
        .expect("ExecSync");
    assert_eq!(
        (
            reply.stdout.as_slice(),
            reply.stderr.as_slice(),
            reply.exit_code
        ),
        (&b"out\n"[..], &b"err\n"[..], 3)
    );
    let log = std::fs::read_to_string(container_log_path(&pod, &config)).expect("container log");
    assert!(log.contains(" stdout F started"), "{log:?}");
    cri.stop_container(&id, 1).await.expect("StopContainer");
    cri.remove_container(&id).await.expect("RemoveContainer");
    cri.stop_and_remove_pod(&pod_id)
        .await
        .expect("StopPodSandbox and RemovePodSandbox");
    let left = env.host_state().added_since(&before);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

async fn env_teardown_removes_the_pods_a_test_left(reference: bool) {
    if !require_cri() {
        return;
    }
    let env = env(reference, true).await;
    let mut cri = env.client().await;
    let pod = env.pod_config("left-behind");
    let pod_id = cri.run_pod(&pod).await.expect("RunPodSandbox");
    let ip = cri.pod_ip(&pod_id).await.expect("PodSandboxStatus");
    assert!(
        !leftovers::iptables_rules_mentioning_ip(&ip).is_empty(),
        "the bridge plugin masquerades {ip}: the check below would prove nothing"
    );
    drop(env);
    let rules = leftovers::iptables_rules_mentioning_ip(&ip);
    assert!(
        rules.is_empty(),
        "CNI DEL did not run on teardown: {rules:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_version_names_the_runtime_and_api_v1() {
    version_names_the_runtime_and_api_v1(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_version_names_the_runtime_and_api_v1() {
    version_names_the_runtime_and_api_v1(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_status_reports_runtime_and_network_ready() {
    status_reports_runtime_and_network_ready(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_status_reports_runtime_and_network_ready() {
    status_reports_runtime_and_network_ready(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_status_without_cni_config_reports_network_not_ready() {
    status_without_cni_config_reports_network_not_ready(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_status_without_cni_config_reports_network_not_ready() {
    status_without_cni_config_reports_network_not_ready(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_pull_image_fetches_the_pause_image_from_the_local_registry() {
    pull_image_fetches_the_pause_image_from_the_local_registry(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_pull_image_fetches_the_pause_image_from_the_local_registry() {
    pull_image_fetches_the_pause_image_from_the_local_registry(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_pod_with_a_busybox_container_runs_execs_and_leaves_nothing() {
    pod_with_a_busybox_container_runs_execs_and_leaves_nothing(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_pod_with_a_busybox_container_runs_execs_and_leaves_nothing() {
    pod_with_a_busybox_container_runs_execs_and_leaves_nothing(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_pull_image_with_basic_auth_needs_the_credentials() {
    pull_image_with_basic_auth_needs_the_credentials(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_pull_image_with_basic_auth_needs_the_credentials() {
    pull_image_with_basic_auth_needs_the_credentials(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_env_teardown_removes_the_pods_a_test_left() {
    env_teardown_removes_the_pods_a_test_left(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_containerd_env_teardown_removes_the_pods_a_test_left() {
    env_teardown_removes_the_pods_a_test_left(true).await;
}
