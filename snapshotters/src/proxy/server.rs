//! The server half: any [`Snapshotter`] served over containerd's Snapshots gRPC API, without
//! namespaces (the daemon namespaces keys before they get here).

use std::pin::Pin;
use std::sync::Arc;

use berth_errdefs::{grpc, Classify};
use berth_proto::containerd::services::snapshots::v1::snapshots_server::Snapshots;
use berth_proto::containerd::services::snapshots::v1::{
    CleanupRequest, CommitSnapshotRequest, ListSnapshotsRequest, ListSnapshotsResponse,
    MountsRequest, MountsResponse, PrepareSnapshotRequest, PrepareSnapshotResponse,
    RemoveSnapshotRequest, StatSnapshotRequest, StatSnapshotResponse, UpdateSnapshotRequest,
    UpdateSnapshotResponse, UsageRequest, UsageResponse, ViewSnapshotRequest, ViewSnapshotResponse,
};
use berth_proto::containerd::types::Mount as ProtoMount;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert::{info_from_proto, info_to_proto};
use crate::error::SnapshotError;
use crate::snapshotter::Snapshotter;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Serves one snapshotter.
#[derive(Debug, Clone)]
pub struct SnapshotterService {
    inner: Arc<dyn Snapshotter>,
}

impl SnapshotterService {
    /// Wraps a snapshotter.
    pub fn new(inner: Arc<dyn Snapshotter>) -> Self {
        SnapshotterService { inner }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Snapshotter) -> Result<T, SnapshotError> + Send + 'static,
    ) -> Result<T, Status> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(inner.as_ref()))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::new(grpc::to_grpc(e.kind()), e.to_string()))
    }
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl Snapshots for SnapshotterService {
    async fn prepare(
        &self,
        req: Request<PrepareSnapshotRequest>,
    ) -> Result<Response<PrepareSnapshotResponse>, Status> {
        let r = req.into_inner();
        let labels = r.labels.into_iter().collect();
        let mounts = self
            .run(move |s| s.prepare(&r.key, opt(r.parent).as_deref(), labels))
            .await?;
        Ok(Response::new(PrepareSnapshotResponse {
            mounts: mounts.into_iter().map(ProtoMount::from).collect(),
        }))
    }

    async fn view(
        &self,
        req: Request<ViewSnapshotRequest>,
    ) -> Result<Response<ViewSnapshotResponse>, Status> {
        let r = req.into_inner();
        let labels = r.labels.into_iter().collect();
        let mounts = self
            .run(move |s| s.view(&r.key, opt(r.parent).as_deref(), labels))
            .await?;
        Ok(Response::new(ViewSnapshotResponse {
            mounts: mounts.into_iter().map(ProtoMount::from).collect(),
        }))
    }

    async fn mounts(
        &self,
        req: Request<MountsRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        let key = req.into_inner().key;
        let mounts = self.run(move |s| s.mounts(&key)).await?;
        Ok(Response::new(MountsResponse {
            mounts: mounts.into_iter().map(ProtoMount::from).collect(),
        }))
    }

    async fn commit(&self, req: Request<CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        let labels = r.labels.into_iter().collect();
        self.run(move |s| s.commit(&r.name, &r.key, labels)).await?;
        Ok(Response::new(()))
    }

    async fn remove(&self, req: Request<RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let key = req.into_inner().key;
        self.run(move |s| s.remove(&key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<StatSnapshotRequest>,
    ) -> Result<Response<StatSnapshotResponse>, Status> {
        let key = req.into_inner().key;
        let info = self.run(move |s| s.stat(&key)).await?;
        Ok(Response::new(StatSnapshotResponse {
            info: Some(info_to_proto(info)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateSnapshotRequest>,
    ) -> Result<Response<UpdateSnapshotResponse>, Status> {
        let r = req.into_inner();
        let info = info_from_proto(r.info.unwrap_or_default());
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let info = self.run(move |s| s.update(info, &paths)).await?;
        Ok(Response::new(UpdateSnapshotResponse {
            info: Some(info_to_proto(info)),
        }))
    }

    type ListStream = BoxStream<ListSnapshotsResponse>;

    async fn list(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let filter = berth_filters::parse_any(&req.get_ref().filters)
            .map_err(|e| Status::new(grpc::to_grpc(e.kind()), e.to_string()))?;
        let infos = self.run(move |s| s.walk(&filter)).await?;
        let batches: Vec<Result<ListSnapshotsResponse, Status>> = infos
            .chunks(100)
            .map(|c| {
                Ok(ListSnapshotsResponse {
                    info: c.iter().cloned().map(info_to_proto).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(&self, req: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        let key = req.into_inner().key;
        let u = self.run(move |s| s.usage(&key)).await?;
        Ok(Response::new(UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    async fn cleanup(&self, _req: Request<CleanupRequest>) -> Result<Response<()>, Status> {
        self.run(|s| s.cleanup()).await?;
        Ok(Response::new(()))
    }
}
