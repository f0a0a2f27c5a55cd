//! The shared harness of the CRI tests: a `berthd` configured as an offline Kubernetes node
//! ([`CriEnv`]), a client for `runtime.v1` ([`CriClient`]) with pod and container config
//! builders, the test images under upstream names ([`images`]), a private CNI bridge per daemon
//! ([`network`]) and checks for what a pod leaves behind ([`leftovers`]).
//!
//! A test looks like:
//!
//! ```no_run
//! # async fn example() {
//! use berth_integration::cri::{require_cri, CriEnv};
//! if !require_cri() {
//!     return;
//! }
//! let env = CriEnv::start().await;
//! let mut cri = env.client().await;
//! let pod = env.pod_config("web");
//! let pod_id = cri.run_pod(&pod).await.expect("RunPodSandbox");
//! let c = env.busybox_container("app", &["sleep", "3600"]);
//! let id = cri.run_container(&pod_id, &c, &pod).await.expect("create and start");
//! assert_eq!(cri.sh(&id, "echo hi").await, "hi\n");
//! cri.stop_and_remove_pod(&pod_id).await.expect("teardown");
//! assert!(env.host_state().is_empty());
//! # }
//! ```
//!
//! Every name a pod or cgroup gets here is unique to its env, so tests run in parallel.

mod client;
mod env;
pub mod images;
pub mod leftovers;
pub mod network;
mod reference;

pub use client::{
    basic_auth, container_config, container_log_path, env_var, image_spec, pod_config,
    sleeper_config, unique_pod_uid, CriClient, CRI_API_VERSION, DNS_OPTIONS, DNS_SEARCHES,
    DNS_SERVERS, POD_NAMESPACE,
};
pub use env::{
    build_pause, require_cri, write_hosts_toml, CriEnv, CriEnvOptions, AUTH_IMAGE, AUTH_PASSWORD,
    AUTH_REGISTRY_HOST, AUTH_USER, CGROUP_ROOT, CRI_SECTION, MIRRORED_HOSTS, PAUSE_SOURCE,
};
pub use images::{BUSYBOX_IMAGE, PAUSE_IMAGE};
pub use leftovers::HostState;
pub use network::{free_port, TestNetwork};
pub use reference::CriContainerd;
