//! `containerd.services.leases.v1.Leases`: per-namespace holds that keep content, ingests and
//! snapshots from the garbage collector while a client works (containerd
//! `services/leases/service.go`, `local.go`).

use std::sync::Arc;

use berth_core::gc::GcScheduler;
use berth_core::metadata::{Lease as StoredLease, LeaseResource};
use berth_core::{MetadataError, MetadataStore};
use berth_proto::containerd::services::leases::v1::leases_server::{
    Leases, LeasesServer, SERVICE_NAME,
};
use berth_proto::containerd::services::leases::v1::{
    AddResourceRequest, CreateRequest, CreateResponse, DeleteRequest, DeleteResourceRequest, Lease,
    ListRequest, ListResourcesRequest, ListResourcesResponse, ListResponse, Resource,
};
use berth_registry::{types, Registration};
use tonic::{Request, Response, Status};

use crate::convert::timestamp;
use crate::grpc::GrpcService;
use crate::status::to_status;
use crate::{blocking, namespace, rpc_span};

/// The Leases service over the metadata store; `sync` deletes wait for the collector.
#[derive(Debug, Clone)]
pub struct LeasesService {
    store: Arc<MetadataStore>,
    gc: Option<Arc<GcScheduler>>,
}

fn to_proto(l: StoredLease) -> Lease {
    Lease {
        id: l.id,
        created_at: timestamp(l.created_at),
        labels: l.labels.into_iter().collect(),
    }
}

fn resource_from_proto(r: Option<Resource>) -> LeaseResource {
    // Go clients always send the resource (gogo non-nullable); an absent one reads as empty
    // and is refused as an unsupported type.
    let r = r.unwrap_or_default();
    LeaseResource {
        kind: r.r#type,
        id: r.id,
    }
}

fn resource_to_proto(r: LeaseResource) -> Resource {
    Resource {
        id: r.id,
        r#type: r.kind,
    }
}

impl LeasesService {
    /// A service over `store`; without `gc`, `sync` deletes return without collecting.
    pub fn new(store: Arc<MetadataStore>, gc: Option<Arc<GcScheduler>>) -> Self {
        LeasesService { store, gc }
    }

    async fn with_store<T, F>(&self, f: F) -> Result<T, Status>
    where
        F: FnOnce(&MetadataStore) -> Result<T, MetadataError> + Send + 'static,
        T: Send + 'static,
    {
        blocking::call(&self.store, move |s| f(s)).await
    }
}

/// The request's namespace, recorded on the handler's span with the lease id.
fn scope<T>(req: &Request<T>, id: &str) -> Result<String, Status> {
    let ns = namespace::from_request(req)?;
    rpc_span::record("id", id);
    Ok(ns)
}

#[tonic::async_trait]
impl Leases for LeasesService {
    async fn create(
        &self,
        req: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let ns = scope(&req, &req.get_ref().id)?;
        let CreateRequest { id, labels } = req.into_inner();
        let labels = labels.into_iter().collect();
        let lease = self
            .with_store(move |s| s.create_lease(&ns, &id, labels))
            .await?;
        // A generated id is only known now.
        rpc_span::record("id", &lease.id);
        Ok(Response::new(CreateResponse {
            lease: Some(to_proto(lease)),
        }))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<()>, Status> {
        let ns = scope(&req, &req.get_ref().id)?;
        let DeleteRequest { id, sync } = req.into_inner();
        self.with_store(move |s| s.delete_lease(&ns, &id)).await?;
        if let Some(gc) = &self.gc {
            if sync {
                gc.collect_now().await.map_err(|e| to_status(&e))?;
            } else {
                gc.trigger();
            }
        }
        Ok(Response::new(()))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let ns = scope(&req, "")?;
        let filter = berth_filters::parse_any(&req.get_ref().filters).map_err(|e| to_status(&e))?;
        let leases = self
            .with_store(move |s| s.list_leases(&ns, &filter))
            .await?;
        Ok(Response::new(ListResponse {
            leases: leases.into_iter().map(to_proto).collect(),
        }))
    }

    async fn add_resource(&self, req: Request<AddResourceRequest>) -> Result<Response<()>, Status> {
        let ns = scope(&req, &req.get_ref().id)?;
        let AddResourceRequest { id, resource } = req.into_inner();
        let resource = resource_from_proto(resource);
        self.with_store(move |s| s.add_lease_resource(&ns, &id, &resource))
            .await?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        req: Request<DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = scope(&req, &req.get_ref().id)?;
        let DeleteResourceRequest { id, resource } = req.into_inner();
        let resource = resource_from_proto(resource);
        self.with_store(move |s| s.delete_lease_resource(&ns, &id, &resource))
            .await?;
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        req: Request<ListResourcesRequest>,
    ) -> Result<Response<ListResourcesResponse>, Status> {
        let ns = scope(&req, &req.get_ref().id)?;
        let id = req.into_inner().id;
        let resources = self
            .with_store(move |s| s.list_lease_resources(&ns, &id))
            .await?;
        Ok(Response::new(ListResourcesResponse {
            resources: resources.into_iter().map(resource_to_proto).collect(),
        }))
    }
}

/// The `io.containerd.grpc.v1.leases` plugin. The collector is optional: with the gc plugin
/// disabled, `sync` deletes just skip the collection.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "leases")
        .serves(&[SERVICE_NAME])
        .reloadable()
        .requires(&[types::METADATA, types::GC])
        .init(|ctx| {
            let store: Arc<MetadataStore> = ctx.get_single(types::METADATA)?;
            let gc: Option<Arc<GcScheduler>> = ctx.get_single(types::GC).ok();
            let svc = LeasesService::new(store, gc);
            Ok(Arc::new(GrpcService::new(LeasesServer::new(svc))))
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use berth_core::content::ContentStore;
    use berth_core::gc::{GcOptions, Settings};
    use tonic::Code;

    use super::*;
    use crate::namespace::NAMESPACE_HEADER;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<MetadataStore>,
        svc: LeasesService,
    }

    /// A service with a collector that only runs when asked.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MetadataStore::open(&dir.path().join("meta")).unwrap());
        let content = Arc::new(ContentStore::open(&dir.path().join("content")).unwrap());
        let settings = Settings {
            pause_threshold: 0.0,
            deletion_threshold: 0,
            mutation_threshold: 0,
            schedule_delay: Duration::ZERO,
            startup_delay: Duration::ZERO,
        };
        let gc = GcScheduler::start(
            store.clone(),
            content,
            settings,
            GcOptions::default(),
            &tokio::runtime::Handle::current(),
        );
        let svc = LeasesService::new(store.clone(), Some(Arc::new(gc)));
        Fixture {
            _dir: dir,
            store,
            svc,
        }
    }

    fn req<T>(ns: &str, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert(NAMESPACE_HEADER, ns.parse().unwrap());
        r
    }

    fn create(id: &str, labels: &[(&str, &str)]) -> CreateRequest {
        CreateRequest {
            id: id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        }
    }

    async fn list_ids(svc: &LeasesService, ns: &str, filters: &[&str]) -> Vec<String> {
        let list = ListRequest {
            filters: filters.iter().map(|f| (*f).to_owned()).collect(),
        };
        svc.list(req(ns, list))
            .await
            .unwrap()
            .into_inner()
            .leases
            .into_iter()
            .map(|l| l.id)
            .collect()
    }

    #[tokio::test]
    async fn create_list_delete() {
        let f = fixture();
        let created = f
            .svc
            .create(req(
                "default",
                create("l1", &[("containerd.io/gc.expire", "2999-01-01T00:00:00Z")]),
            ))
            .await
            .unwrap()
            .into_inner()
            .lease
            .unwrap();
        assert_eq!(created.id, "l1");
        assert!(created.created_at.unwrap().seconds > 0);
        assert_eq!(created.labels.len(), 1);

        let generated = f
            .svc
            .create(req("default", create("", &[])))
            .await
            .unwrap()
            .into_inner()
            .lease
            .unwrap();
        assert!(generated.id.contains('-'), "{}", generated.id);

        let err = f
            .svc
            .create(req("default", create("l1", &[])))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists);
        assert_eq!(err.message(), "lease \"l1\": already exists");

        let mut all = list_ids(&f.svc, "default", &[]).await;
        all.sort();
        let mut want = vec!["l1".to_owned(), generated.id.clone()];
        want.sort();
        assert_eq!(all, want);
        assert_eq!(list_ids(&f.svc, "default", &["id==l1"]).await, ["l1"]);
        assert_eq!(
            list_ids(&f.svc, "default", &["labels.\"containerd.io/gc.expire\""]).await,
            ["l1"]
        );
        assert!(list_ids(&f.svc, "other", &[]).await.is_empty());
        let err = f
            .svc
            .list(req(
                "default",
                ListRequest {
                    filters: vec!["id==".into(), "=".into()],
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);

        f.svc
            .delete(req(
                "default",
                DeleteRequest {
                    id: "l1".into(),
                    sync: true,
                },
            ))
            .await
            .unwrap();
        let err = f
            .svc
            .delete(req(
                "default",
                DeleteRequest {
                    id: "l1".into(),
                    sync: false,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(list_ids(&f.svc, "default", &[]).await, [generated.id]);
    }

    #[tokio::test]
    async fn namespace_is_required() {
        let f = fixture();
        let err = f
            .svc
            .create(Request::new(create("l", &[])))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn resources_and_sync_delete_collect() {
        let f = fixture();
        f.svc
            .create(req("default", create("pull", &[])))
            .await
            .unwrap();
        // A record only this lease protects.
        f.store
            .add_blob("default", D1, 1, Default::default())
            .unwrap();
        let content = Resource {
            id: D1.into(),
            r#type: "content".into(),
        };
        for r in [
            content.clone(),
            Resource {
                id: "tar-x".into(),
                r#type: "ingests".into(),
            },
        ] {
            f.svc
                .add_resource(req(
                    "default",
                    AddResourceRequest {
                        id: "pull".into(),
                        resource: Some(r),
                    },
                ))
                .await
                .unwrap();
        }
        let err = f
            .svc
            .add_resource(req(
                "default",
                AddResourceRequest {
                    id: "pull".into(),
                    resource: Some(Resource {
                        id: "c1".into(),
                        r#type: "containers".into(),
                    }),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        let err = f
            .svc
            .add_resource(req(
                "default",
                AddResourceRequest {
                    id: "nope".into(),
                    resource: Some(content.clone()),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);

        let listed = f
            .svc
            .list_resources(req("default", ListResourcesRequest { id: "pull".into() }))
            .await
            .unwrap()
            .into_inner()
            .resources;
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0], content);

        // The lease holds the record through a collection ...
        f.svc
            .delete_resource(req(
                "default",
                DeleteResourceRequest {
                    id: "pull".into(),
                    resource: Some(Resource {
                        id: "tar-x".into(),
                        r#type: "ingests".into(),
                    }),
                },
            ))
            .await
            .unwrap();
        assert!(f.store.get_blob("default", D1).is_ok());
        // ... and a sync delete of the lease collects it before answering.
        f.svc
            .delete(req(
                "default",
                DeleteRequest {
                    id: "pull".into(),
                    sync: true,
                },
            ))
            .await
            .unwrap();
        assert!(f.store.get_blob("default", D1).is_err());
        let err = f
            .svc
            .list_resources(req("default", ListResourcesRequest { id: "pull".into() }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }

    #[test]
    fn registers_as_containerds_leases_service() {
        let r = registration();
        assert_eq!(r.uri(), "io.containerd.grpc.v1.leases");
        assert!(r.requires.contains(&types::GC));
    }
}
