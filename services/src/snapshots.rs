//! `containerd.services.snapshots.v1.Snapshots`: every loaded snapshotter, namespaced; the
//! `snapshotter` field of each request picks the driver.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use berth_core::events::Exchange;
use berth_core::metadata::plugin::snapshot_view;
use berth_core::metadata::SnapshotRecord;
use berth_core::namespaced_snapshots::{NamespacedSnapshotError, NamespacedSnapshots};
use berth_proto::containerd::events::{SnapshotCommit, SnapshotPrepare, SnapshotRemove};
use berth_proto::containerd::services::snapshots::v1::snapshots_server::{
    Snapshots, SnapshotsServer, SERVICE_NAME,
};
use berth_proto::containerd::services::snapshots::v1::{
    CleanupRequest, CommitSnapshotRequest, Info, Kind as ProtoKind, ListSnapshotsRequest,
    ListSnapshotsResponse, MountsRequest, MountsResponse, PrepareSnapshotRequest,
    PrepareSnapshotResponse, RemoveSnapshotRequest, StatSnapshotRequest, StatSnapshotResponse,
    UpdateSnapshotRequest, UpdateSnapshotResponse, UsageRequest, UsageResponse,
    ViewSnapshotRequest, ViewSnapshotResponse,
};
use berth_proto::containerd::types::Mount as ProtoMount;
use berth_registry::{types, Registration};
use berth_snapshotters::{Kind, Mount};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::convert::timestamp;
use crate::grpc::GrpcService;
use crate::status::to_status;
use crate::{blocking, namespace, rpc_span};

/// Infos per List response message, as containerd's.
const LIST_BATCH: usize = 100;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The Snapshots service.
#[derive(Debug, Clone)]
pub struct SnapshotsService {
    snapshots: NamespacedSnapshots,
    events: Arc<Exchange>,
}

fn mounts_to_proto(mounts: Vec<Mount>) -> Vec<ProtoMount> {
    mounts.into_iter().map(ProtoMount::from).collect()
}

fn info_to_proto(r: SnapshotRecord) -> Info {
    let kind = match r.kind {
        Kind::View => ProtoKind::View,
        Kind::Active => ProtoKind::Active,
        Kind::Committed => ProtoKind::Committed,
    };
    Info {
        name: r.key,
        parent: r.parent.unwrap_or_default(),
        kind: kind as i32,
        created_at: timestamp(r.created_at),
        updated_at: timestamp(r.updated_at),
        labels: r.labels.into_iter().collect(),
    }
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl SnapshotsService {
    /// A service over every loaded snapshotter.
    pub fn new(snapshots: NamespacedSnapshots, events: Arc<Exchange>) -> Self {
        SnapshotsService { snapshots, events }
    }

    async fn run<T, F>(&self, f: F) -> Result<T, Status>
    where
        F: FnOnce(&NamespacedSnapshots) -> Result<T, NamespacedSnapshotError> + Send + 'static,
        T: Send + 'static,
    {
        blocking::call(&self.snapshots, move |s| f(s)).await
    }

    fn publish<E: berth_core::events::Event>(&self, ns: &str, event: &E) {
        crate::events::publish_committed(&self.events, ns, event);
    }
}

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    async fn prepare(
        &self,
        req: Request<PrepareSnapshotRequest>,
    ) -> Result<Response<PrepareSnapshotResponse>, Status> {
        rpc_span::record_all(&[
            ("snapshotter", &req.get_ref().snapshotter),
            ("key", &req.get_ref().key),
        ]);
        let ns = namespace::from_request(&req)?;
        let lease = namespace::lease_from_request(&req)?;
        let r = req.into_inner();
        let (n, key, parent) = (ns.clone(), r.key.clone(), r.parent.clone());
        let labels: BTreeMap<_, _> = r.labels.into_iter().collect();
        let mounts = self
            .run(move |s| {
                s.prepare(
                    &n,
                    &r.snapshotter,
                    &key,
                    opt(parent).as_deref(),
                    labels,
                    lease.as_deref(),
                )
            })
            .await?;
        self.publish(
            &ns,
            &SnapshotPrepare {
                key: r.key,
                parent: r.parent,
            },
        );
        Ok(Response::new(PrepareSnapshotResponse {
            mounts: mounts_to_proto(mounts),
        }))
    }

    async fn view(
        &self,
        req: Request<ViewSnapshotRequest>,
    ) -> Result<Response<ViewSnapshotResponse>, Status> {
        rpc_span::record_all(&[
            ("snapshotter", &req.get_ref().snapshotter),
            ("key", &req.get_ref().key),
        ]);
        let ns = namespace::from_request(&req)?;
        let lease = namespace::lease_from_request(&req)?;
        let r = req.into_inner();
        let labels: BTreeMap<_, _> = r.labels.into_iter().collect();
        let mounts = self
            .run(move |s| {
                s.view(
                    &ns,
                    &r.snapshotter,
                    &r.key,
                    opt(r.parent).as_deref(),
                    labels,
                    lease.as_deref(),
                )
            })
            .await?;
        Ok(Response::new(ViewSnapshotResponse {
            mounts: mounts_to_proto(mounts),
        }))
    }

    async fn mounts(
        &self,
        req: Request<MountsRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        rpc_span::record_all(&[
            ("snapshotter", &req.get_ref().snapshotter),
            ("key", &req.get_ref().key),
        ]);
        let ns = namespace::from_request(&req)?;
        let r = req.into_inner();
        let mounts = self
            .run(move |s| s.mounts(&ns, &r.snapshotter, &r.key))
            .await?;
        Ok(Response::new(MountsResponse {
            mounts: mounts_to_proto(mounts),
        }))
    }

    async fn commit(&self, req: Request<CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        rpc_span::record_all(&[
            ("snapshotter", &req.get_ref().snapshotter),
            ("key", &req.get_ref().key),
            ("name", &req.get_ref().name),
        ]);
        let ns = namespace::from_request(&req)?;
        let lease = namespace::lease_from_request(&req)?;
        let r = req.into_inner();
        let (n, name, key) = (ns.clone(), r.name.clone(), r.key.clone());
        let labels: BTreeMap<_, _> = r.labels.into_iter().collect();
        self.run(move |s| s.commit(&n, &r.snapshotter, &name, &key, labels, lease.as_deref()))
            .await?;
        self.publish(
            &ns,
            &SnapshotCommit {
                key: r.key,
                name: r.name,
            },
        );
        Ok(Response::new(()))
    }

    async fn remove(&self, req: Request<RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        rpc_span::record_all(&[
            ("snapshotter", &req.get_ref().snapshotter),
            ("key", &req.get_ref().key),
        ]);
        let ns = namespace::from_request(&req)?;
        let r = req.into_inner();
        let (n, key) = (ns.clone(), r.key.clone());
        self.run(move |s| s.remove(&n, &r.snapshotter, &key))
            .await?;
        self.publish(&ns, &SnapshotRemove { key: r.key });
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<StatSnapshotRequest>,
    ) -> Result<Response<StatSnapshotResponse>, Status> {
        rpc_span::record_all(&[
            ("snapshotter", &req.get_ref().snapshotter),
            ("key", &req.get_ref().key),
        ]);
        let ns = namespace::from_request(&req)?;
        let r = req.into_inner();
        let rec = self
            .run(move |s| s.stat(&ns, &r.snapshotter, &r.key))
            .await?;
        Ok(Response::new(StatSnapshotResponse {
            info: Some(info_to_proto(rec)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateSnapshotRequest>,
    ) -> Result<Response<UpdateSnapshotResponse>, Status> {
        rpc_span::record("snapshotter", &req.get_ref().snapshotter);
        let ns = namespace::from_request(&req)?;
        let r = req.into_inner();
        let info = r.info.unwrap_or_default();
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let labels: BTreeMap<_, _> = info.labels.into_iter().collect();
        let rec = self
            .run(move |s| s.update(&ns, &r.snapshotter, &info.name, labels, &paths))
            .await?;
        Ok(Response::new(UpdateSnapshotResponse {
            info: Some(info_to_proto(rec)),
        }))
    }

    type ListStream = BoxStream<ListSnapshotsResponse>;

    async fn list(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        rpc_span::record("snapshotter", &req.get_ref().snapshotter);
        let ns = namespace::from_request(&req)?;
        let r = req.into_inner();
        let filter = berth_filters::parse_any(&r.filters).map_err(|e| to_status(&e))?;
        let all = self
            .run(move |s| s.list(&ns, &r.snapshotter, &filter))
            .await?;
        let batches: Vec<Result<ListSnapshotsResponse, Status>> = all
            .chunks(LIST_BATCH)
            .map(|c| {
                Ok(ListSnapshotsResponse {
                    info: c.iter().cloned().map(info_to_proto).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(&self, req: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        rpc_span::record_all(&[
            ("snapshotter", &req.get_ref().snapshotter),
            ("key", &req.get_ref().key),
        ]);
        let ns = namespace::from_request(&req)?;
        let r = req.into_inner();
        let u = self
            .run(move |s| s.usage(&ns, &r.snapshotter, &r.key))
            .await?;
        Ok(Response::new(UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    async fn cleanup(&self, req: Request<CleanupRequest>) -> Result<Response<()>, Status> {
        rpc_span::record("snapshotter", &req.get_ref().snapshotter);
        namespace::from_request(&req)?;
        let sn = req.into_inner().snapshotter;
        self.run(move |s| s.cleanup(&sn)).await?;
        Ok(Response::new(()))
    }
}

/// The `io.containerd.grpc.v1.snapshots` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "snapshots")
        .serves(&[SERVICE_NAME])
        .reloadable()
        .requires(&[types::METADATA, types::SNAPSHOTTER, types::EVENT])
        .init(|ctx| {
            let events: Arc<Exchange> = ctx.get_single(types::EVENT)?;
            let snapshots = snapshot_view(ctx)?;
            let svc = SnapshotsService::new(snapshots, events);
            Ok(Arc::new(GrpcService::new(SnapshotsServer::new(svc))))
        })
}
