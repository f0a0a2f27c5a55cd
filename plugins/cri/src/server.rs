//! The two CRI gRPC services: each RPC records the ids its request names on the call's span
//! ([`berth_services::rpc_span`]) and hands the request to the module that does the work;
//! errors become statuses in one place ([`berth_services::status::to_status`]).

use berth_proto::runtime::v1::image_service_server::ImageService;
use berth_proto::runtime::v1::runtime_service_server::RuntimeService;
use berth_proto::runtime::v1::*;
use berth_services::rpc_span;
use berth_services::status::to_status;
use tonic::{Request, Response, Status};

use crate::error::CriError;
use crate::service::Cri;

/// The image a CRI image request names, or "" when it names none.
fn image_name(spec: Option<&ImageSpec>) -> &str {
    spec.map_or("", |i| i.image.as_str())
}

fn answer<T>(result: Result<T, CriError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(|e| to_status(&e))
}

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(
        &self,
        req: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        answer(crate::runtime_info::version(self, req.into_inner()).await)
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        answer(crate::sandbox::run::run_pod_sandbox(self, req.into_inner()).await)
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        rpc_span::record("sandbox_id", &req.get_ref().pod_sandbox_id);
        answer(crate::sandbox::stop::stop_pod_sandbox(self, req.into_inner()).await)
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        rpc_span::record("sandbox_id", &req.get_ref().pod_sandbox_id);
        answer(crate::sandbox::remove::remove_pod_sandbox(self, req.into_inner()).await)
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        rpc_span::record("sandbox_id", &req.get_ref().pod_sandbox_id);
        answer(crate::sandbox::status::pod_sandbox_status(self, req.into_inner()).await)
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        answer(crate::sandbox::list::list_pod_sandbox(self, req.into_inner()).await)
    }

    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        rpc_span::record("sandbox_id", &req.get_ref().pod_sandbox_id);
        answer(crate::container::create::create_container(self, req.into_inner()).await)
    }

    async fn start_container(
        &self,
        req: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        rpc_span::record("container_id", &req.get_ref().container_id);
        answer(crate::container::start::start_container(self, req.into_inner()).await)
    }

    async fn stop_container(
        &self,
        req: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        rpc_span::record("container_id", &req.get_ref().container_id);
        answer(crate::container::stop::stop_container(self, req.into_inner()).await)
    }

    async fn remove_container(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        rpc_span::record("container_id", &req.get_ref().container_id);
        answer(crate::container::remove::remove_container(self, req.into_inner()).await)
    }

    async fn list_containers(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        answer(crate::container::list::list_containers(self, req.into_inner()).await)
    }

    async fn container_status(
        &self,
        req: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        rpc_span::record("container_id", &req.get_ref().container_id);
        answer(crate::container::status::container_status(self, req.into_inner()).await)
    }

    async fn update_container_resources(
        &self,
        req: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        rpc_span::record("container_id", &req.get_ref().container_id);
        answer(crate::container::update::update_container_resources(self, req.into_inner()).await)
    }

    async fn reopen_container_log(
        &self,
        req: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        rpc_span::record("container_id", &req.get_ref().container_id);
        answer(crate::container::reopen_log::reopen_container_log(self, req.into_inner()).await)
    }

    async fn exec_sync(
        &self,
        req: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        rpc_span::record("container_id", &req.get_ref().container_id);
        answer(crate::container::exec_sync::exec_sync(self, req.into_inner()).await)
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        rpc_span::record("container_id", &req.get_ref().container_id);
        answer(crate::container::stream::exec(self, req.into_inner()).await)
    }

    async fn attach(
        &self,
        req: Request<AttachRequest>,
    ) -> Result<Response<AttachResponse>, Status> {
        rpc_span::record("container_id", &req.get_ref().container_id);
        answer(crate::container::stream::attach(self, req.into_inner()).await)
    }

    async fn port_forward(
        &self,
        req: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        rpc_span::record("sandbox_id", &req.get_ref().pod_sandbox_id);
        answer(crate::sandbox::port_forward::port_forward(self, req.into_inner()).await)
    }

    async fn container_stats(
        &self,
        req: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        rpc_span::record("container_id", &req.get_ref().container_id);
        answer(crate::container::stats::container_stats(self, req.into_inner()).await)
    }

    async fn list_container_stats(
        &self,
        req: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        answer(crate::container::stats::list_container_stats(self, req.into_inner()).await)
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        rpc_span::record("sandbox_id", &req.get_ref().pod_sandbox_id);
        answer(crate::sandbox::stats::pod_sandbox_stats(self, req.into_inner()).await)
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        answer(crate::sandbox::stats::list_pod_sandbox_stats(self, req.into_inner()).await)
    }

    async fn update_runtime_config(
        &self,
        req: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        answer(crate::runtime_info::update_runtime_config(self, req.into_inner()).await)
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        answer(crate::runtime_info::status(self, req.into_inner()).await)
    }

    async fn checkpoint_container(
        &self,
        _req: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        answer(Err(CriError::NotImplemented("CheckpointContainer")))
    }

    type GetContainerEventsStream =
        tokio_stream::wrappers::ReceiverStream<Result<ContainerEventResponse, Status>>;

    async fn get_container_events(
        &self,
        _req: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Err(to_status(&CriError::NotImplemented("GetContainerEvents")))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        answer(Err(CriError::NotImplemented("ListMetricDescriptors")))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        answer(Err(CriError::NotImplemented("ListPodSandboxMetrics")))
    }
}

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        answer(crate::image::list::list_images(self, req.into_inner()).await)
    }

    async fn image_status(
        &self,
        req: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        rpc_span::record("image", image_name(req.get_ref().image.as_ref()));
        answer(crate::image::status::image_status(self, req.into_inner()).await)
    }

    async fn pull_image(
        &self,
        req: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        rpc_span::record("image", image_name(req.get_ref().image.as_ref()));
        answer(crate::image::pull::pull_image(self, req.into_inner()).await)
    }

    async fn remove_image(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        rpc_span::record("image", image_name(req.get_ref().image.as_ref()));
        answer(crate::image::remove::remove_image(self, req.into_inner()).await)
    }

    async fn image_fs_info(
        &self,
        req: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        answer(crate::image::fs_info::image_fs_info(self, req.into_inner()).await)
    }
}
