//! A CRI client over a daemon's unix socket: the kubelet's two gRPC services with thin helpers
//! for the calls tests make most, and builders for minimal pod and container configs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use berth_proto::runtime::v1::image_service_client::ImageServiceClient;
use berth_proto::runtime::v1::runtime_service_client::RuntimeServiceClient;
use berth_proto::runtime::v1::{
    AuthConfig, Container, ContainerConfig, ContainerFilter, ContainerMetadata,
    ContainerStatusRequest, ContainerStatusResponse, CreateContainerRequest, DnsConfig,
    ExecSyncRequest, ExecSyncResponse, Image, ImageSpec, ImageStatusRequest, KeyValue,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListContainersRequest, ListImagesRequest, ListPodSandboxRequest,
    PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata, PodSandboxStatusRequest,
    PodSandboxStatusResponse, PullImageRequest, RemoveContainerRequest, RemoveImageRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StatusRequest,
    StatusResponse, StopContainerRequest, StopPodSandboxRequest, VersionRequest, VersionResponse,
};
use tonic::transport::Channel;
use tonic::Status;

use crate::grpc::channel_at;

/// The CRI API version every kubelet sends in `Version`.
pub const CRI_API_VERSION: &str = "v1";

/// The Kubernetes namespace of the pods [`pod_config`] makes.
pub const POD_NAMESPACE: &str = "berth-test";

/// The DNS servers [`pod_config`] asks for (a documentation address: nothing answers there).
pub const DNS_SERVERS: [&str; 1] = ["198.51.100.53"];

/// The DNS search domains [`pod_config`] asks for.
pub const DNS_SEARCHES: [&str; 1] = ["berth.test"];

/// The resolver options [`pod_config`] asks for.
pub const DNS_OPTIONS: [&str; 1] = ["ndots:2"];

/// Makes pod uids unique within the test process.
static NEXT_POD: AtomicU32 = AtomicU32::new(0);

/// The kubelet's view of a CRI runtime: `runtime.v1.RuntimeService` and
/// `runtime.v1.ImageService` on one unix socket.
///
/// The raw tonic clients are public for calls without a helper here; every helper returns the
/// gRPC status unchanged on failure, so tests can assert codes and messages.
#[derive(Debug, Clone)]
pub struct CriClient {
    /// `runtime.v1.RuntimeService`.
    pub runtime: RuntimeServiceClient<Channel>,
    /// `runtime.v1.ImageService`.
    pub image: ImageServiceClient<Channel>,
}

impl CriClient {
    /// Connects both services to the socket at `address` (berthd's or a containerd's); panics
    /// when the socket does not accept the connection.
    pub async fn connect(address: &Path) -> Self {
        let channel = channel_at(address).await;
        Self {
            runtime: RuntimeServiceClient::new(channel.clone()),
            image: ImageServiceClient::new(channel),
        }
    }

    /// `Version` as the kubelet calls it (`version = "v1"`).
    pub async fn version(&mut self) -> Result<VersionResponse, Status> {
        let request = VersionRequest {
            version: CRI_API_VERSION.to_owned(),
        };
        Ok(self.runtime.version(request).await?.into_inner())
    }

    /// `Status`, with the runtime's `info` map when `verbose`.
    pub async fn status(&mut self, verbose: bool) -> Result<StatusResponse, Status> {
        Ok(self
            .runtime
            .status(StatusRequest { verbose })
            .await?
            .into_inner())
    }

    /// `PullImage` of `image` without credentials; returns the image reference the runtime
    /// answers (an image id, `sha256:<hex>`, for containerd).
    pub async fn pull_image(&mut self, image: &str) -> Result<String, Status> {
        self.pull_image_with(image, None, None).await
    }

    /// `PullImage` of `image` with registry credentials and the pod config, as the kubelet
    /// sends them.
    pub async fn pull_image_with(
        &mut self,
        image: &str,
        auth: Option<AuthConfig>,
        sandbox_config: Option<PodSandboxConfig>,
    ) -> Result<String, Status> {
        let request = PullImageRequest {
            image: Some(image_spec(image)),
            auth,
            sandbox_config,
        };
        Ok(self.image.pull_image(request).await?.into_inner().image_ref)
    }

    /// `ImageStatus` of `image`: `None` when the runtime does not have it (the CRI answers an
    /// empty status, not NotFound).
    pub async fn image_status(&mut self, image: &str) -> Result<Option<Image>, Status> {
        let request = ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        };
        Ok(self.image.image_status(request).await?.into_inner().image)
    }

    /// `ListImages` without a filter.
    pub async fn list_images(&mut self) -> Result<Vec<Image>, Status> {
        let request = ListImagesRequest { filter: None };
        Ok(self.image.list_images(request).await?.into_inner().images)
    }

    /// `RemoveImage` of `image` (a reference or an id).
    pub async fn remove_image(&mut self, image: &str) -> Result<(), Status> {
        let request = RemoveImageRequest {
            image: Some(image_spec(image)),
        };
        self.image.remove_image(request).await?;
        Ok(())
    }

    /// `RunPodSandbox` with the default runtime handler; returns the sandbox id.
    pub async fn run_pod(&mut self, config: &PodSandboxConfig) -> Result<String, Status> {
        self.run_pod_with_handler(config, "").await
    }

    /// `RunPodSandbox` with the runtime handler `runtime_handler` ("" for the default).
    pub async fn run_pod_with_handler(
        &mut self,
        config: &PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String, Status> {
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: runtime_handler.to_owned(),
        };
        Ok(self
            .runtime
            .run_pod_sandbox(request)
            .await?
            .into_inner()
            .pod_sandbox_id)
    }

    /// `StopPodSandbox`.
    pub async fn stop_pod(&mut self, pod_id: &str) -> Result<(), Status> {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: pod_id.to_owned(),
        };
        self.runtime.stop_pod_sandbox(request).await?;
        Ok(())
    }

    /// `RemovePodSandbox`.
    pub async fn remove_pod(&mut self, pod_id: &str) -> Result<(), Status> {
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.to_owned(),
        };
        self.runtime.remove_pod_sandbox(request).await?;
        Ok(())
    }

    /// `StopPodSandbox` then `RemovePodSandbox`, as the kubelet tears a pod down.
    pub async fn stop_and_remove_pod(&mut self, pod_id: &str) -> Result<(), Status> {
        self.stop_pod(pod_id).await?;
        self.remove_pod(pod_id).await
    }

    /// `PodSandboxStatus`, with the `info` map when `verbose`.
    pub async fn pod_status(
        &mut self,
        pod_id: &str,
        verbose: bool,
    ) -> Result<PodSandboxStatusResponse, Status> {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.to_owned(),
            verbose,
        };
        Ok(self.runtime.pod_sandbox_status(request).await?.into_inner())
    }

    /// The pod's IP from `PodSandboxStatus` (`network.ip`); "" when it has none.
    pub async fn pod_ip(&mut self, pod_id: &str) -> Result<String, Status> {
        let status = self.pod_status(pod_id, false).await?;
        Ok(status
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default())
    }

    /// `ListPodSandbox` with `filter` (`None`: all).
    pub async fn list_pods(
        &mut self,
        filter: Option<PodSandboxFilter>,
    ) -> Result<Vec<PodSandbox>, Status> {
        let request = ListPodSandboxRequest { filter };
        Ok(self
            .runtime
            .list_pod_sandbox(request)
            .await?
            .into_inner()
            .items)
    }

    /// `CreateContainer` of `config` in pod `pod_id` (whose config the kubelet sends again);
    /// returns the container id.
    pub async fn create_container(
        &mut self,
        pod_id: &str,
        config: &ContainerConfig,
        pod_config: &PodSandboxConfig,
    ) -> Result<String, Status> {
        let request = CreateContainerRequest {
            pod_sandbox_id: pod_id.to_owned(),
            config: Some(config.clone()),
            sandbox_config: Some(pod_config.clone()),
        };
        Ok(self
            .runtime
            .create_container(request)
            .await?
            .into_inner()
            .container_id)
    }

    /// `StartContainer`.
    pub async fn start_container(&mut self, container_id: &str) -> Result<(), Status> {
        let request = StartContainerRequest {
            container_id: container_id.to_owned(),
        };
        self.runtime.start_container(request).await?;
        Ok(())
    }

    /// `CreateContainer` then `StartContainer`; returns the container id.
    pub async fn run_container(
        &mut self,
        pod_id: &str,
        config: &ContainerConfig,
        pod_config: &PodSandboxConfig,
    ) -> Result<String, Status> {
        let id = self.create_container(pod_id, config, pod_config).await?;
        self.start_container(&id).await?;
        Ok(id)
    }

    /// `StopContainer` with a grace period of `timeout_secs` seconds (SIGTERM, then SIGKILL).
    pub async fn stop_container(
        &mut self,
        container_id: &str,
        timeout_secs: i64,
    ) -> Result<(), Status> {
        let request = StopContainerRequest {
            container_id: container_id.to_owned(),
            timeout: timeout_secs,
        };
        self.runtime.stop_container(request).await?;
        Ok(())
    }

    /// `RemoveContainer`.
    pub async fn remove_container(&mut self, container_id: &str) -> Result<(), Status> {
        let request = RemoveContainerRequest {
            container_id: container_id.to_owned(),
        };
        self.runtime.remove_container(request).await?;
        Ok(())
    }

    /// `ContainerStatus`, with the `info` map when `verbose`.
    pub async fn container_status(
        &mut self,
        container_id: &str,
        verbose: bool,
    ) -> Result<ContainerStatusResponse, Status> {
        let request = ContainerStatusRequest {
            container_id: container_id.to_owned(),
            verbose,
        };
        Ok(self.runtime.container_status(request).await?.into_inner())
    }

    /// `ListContainers` with `filter` (`None`: all).
    pub async fn list_containers(
        &mut self,
        filter: Option<ContainerFilter>,
    ) -> Result<Vec<Container>, Status> {
        let request = ListContainersRequest { filter };
        Ok(self
            .runtime
            .list_containers(request)
            .await?
            .into_inner()
            .containers)
    }

    /// `ExecSync` of `cmd` in the container, with a timeout in seconds (0: none).
    pub async fn exec_sync(
        &mut self,
        container_id: &str,
        cmd: &[&str],
        timeout_secs: i64,
    ) -> Result<ExecSyncResponse, Status> {
        let request = ExecSyncRequest {
            container_id: container_id.to_owned(),
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
            timeout: timeout_secs,
        };
        Ok(self.runtime.exec_sync(request).await?.into_inner())
    }

    /// `ExecSync` of `sh -c script` that must exit 0; returns its stdout. Panics with the exit
    /// code and both streams otherwise, or with the status when the call fails.
    pub async fn sh(&mut self, container_id: &str, script: &str) -> String {
        let reply = self
            .exec_sync(container_id, &["sh", "-c", script], 30)
            .await
            .unwrap_or_else(|s| panic!("ExecSync `{script}` in {container_id} failed: {s:?}"));
        assert_eq!(
            reply.exit_code,
            0,
            "`{script}` in {container_id} exited {}: stdout {:?}, stderr {:?}",
            reply.exit_code,
            String::from_utf8_lossy(&reply.stdout),
            String::from_utf8_lossy(&reply.stderr)
        );
        String::from_utf8_lossy(&reply.stdout).into_owned()
    }
}

/// An `ImageSpec` naming `image`.
pub fn image_spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_owned(),
        annotations: HashMap::new(),
    }
}

/// `AuthConfig` with a username and password, as the kubelet sends from a pull secret.
pub fn basic_auth(username: &str, password: &str) -> AuthConfig {
    AuthConfig {
        username: username.to_owned(),
        password: password.to_owned(),
        ..AuthConfig::default()
    }
}

/// A unique pod uid for this test process (`<pid>-<n>`, in uid-like form).
pub fn unique_pod_uid() -> String {
    let n = NEXT_POD.fetch_add(1, Ordering::Relaxed);
    format!("b3a7c0de-0000-4000-8000-{:06x}{n:06x}", std::process::id())
}

/// A minimal `PodSandboxConfig` named `name`: metadata with a fresh uid in namespace
/// [`POD_NAMESPACE`], attempt 0; hostname `name`; logs in `log_directory`; a Linux config with
/// `cgroup_parent` and an empty security context (the pod's own PID, IPC and network
/// namespaces); DNS [`DNS_SERVERS`], [`DNS_SEARCHES`], [`DNS_OPTIONS`]. No port mappings.
///
/// `CriEnv::pod_config` fills `log_directory` and `cgroup_parent` with the test daemon's own,
/// which its leftover checks and cleanup know about: prefer it.
pub fn pod_config(name: &str, log_directory: &Path, cgroup_parent: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_owned(),
            uid: unique_pod_uid(),
            namespace: POD_NAMESPACE.to_owned(),
            attempt: 0,
        }),
        hostname: name.to_owned(),
        log_directory: log_directory.display().to_string(),
        dns_config: Some(DnsConfig {
            servers: DNS_SERVERS.iter().map(|s| (*s).to_owned()).collect(),
            searches: DNS_SEARCHES.iter().map(|s| (*s).to_owned()).collect(),
            options: DNS_OPTIONS.iter().map(|s| (*s).to_owned()).collect(),
        }),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.to_owned(),
            security_context: Some(LinuxSandboxSecurityContext::default()),
            ..LinuxPodSandboxConfig::default()
        }),
        ..PodSandboxConfig::default()
    }
}

/// A minimal `ContainerConfig`: metadata `name` (attempt 0), `image`, `command` as the
/// entrypoint (empty: the image's), log path `<name>.log` (relative to the pod's log
/// directory), and a Linux config with an empty security context.
pub fn container_config(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_owned(),
            attempt: 0,
        }),
        image: Some(image_spec(image)),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            resources: None,
            security_context: Some(LinuxContainerSecurityContext::default()),
        }),
        ..ContainerConfig::default()
    }
}

/// A container running `sleep 3600`: something to exec into.
pub fn sleeper_config(name: &str, image: &str) -> ContainerConfig {
    container_config(name, image, &["sleep", "3600"])
}

/// A `KeyValue` environment entry.
pub fn env_var(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

/// The absolute log path of a container made by [`container_config`] in a pod made by
/// [`pod_config`].
pub fn container_log_path(pod: &PodSandboxConfig, container: &ContainerConfig) -> PathBuf {
    Path::new(&pod.log_directory).join(&container.log_path)
}
