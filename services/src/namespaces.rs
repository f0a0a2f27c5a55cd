//! `containerd.services.namespaces.v1.Namespaces`. Not itself namespaced: the namespace is the
//! object.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_core::events::Exchange;
use berth_core::{MetadataStore, Namespace as StoredNamespace};
use berth_proto::containerd::events::{NamespaceCreate, NamespaceDelete, NamespaceUpdate};
use berth_proto::containerd::services::namespaces::v1::namespaces_server::{
    Namespaces, NamespacesServer, SERVICE_NAME,
};
use berth_proto::containerd::services::namespaces::v1::{
    CreateNamespaceRequest, CreateNamespaceResponse, DeleteNamespaceRequest, GetNamespaceRequest,
    GetNamespaceResponse, ListNamespacesRequest, ListNamespacesResponse, Namespace,
    UpdateNamespaceRequest, UpdateNamespaceResponse,
};
use berth_registry::{types, Registration};
use tonic::{Request, Response, Status};

use crate::grpc::GrpcService;
use crate::{blocking, rpc_span};

/// The Namespaces service over the metadata store.
#[derive(Debug, Clone)]
pub struct NamespacesService {
    store: Arc<MetadataStore>,
    events: Option<Arc<Exchange>>,
}

impl NamespacesService {
    /// A service over `store`, publishing namespace events to `events` when given.
    pub fn new(store: Arc<MetadataStore>, events: Option<Arc<Exchange>>) -> Self {
        NamespacesService { store, events }
    }

    /// Publishes under the namespace the event is about, as containerd does.
    fn publish<E: berth_core::events::Event>(&self, ns: &str, event: &E) {
        if let Some(events) = &self.events {
            crate::events::publish_committed(events, ns, event);
        }
    }

    async fn with_store<T, F>(&self, f: F) -> Result<T, Status>
    where
        F: FnOnce(&MetadataStore) -> Result<T, berth_core::MetadataError> + Send + 'static,
        T: Send + 'static,
    {
        blocking::call(&self.store, move |s| f(s)).await
    }
}

fn to_proto(ns: StoredNamespace) -> Namespace {
    Namespace {
        name: ns.name,
        labels: ns.labels.into_iter().collect(),
    }
}

fn labels_of(ns: Option<Namespace>) -> (String, BTreeMap<String, String>) {
    let ns = ns.unwrap_or_default();
    (ns.name, ns.labels.into_iter().collect())
}

#[tonic::async_trait]
impl Namespaces for NamespacesService {
    async fn get(
        &self,
        req: Request<GetNamespaceRequest>,
    ) -> Result<Response<GetNamespaceResponse>, Status> {
        rpc_span::record("name", &req.get_ref().name);
        let name = req.into_inner().name;
        let ns = self.with_store(move |s| s.get_namespace(&name)).await?;
        Ok(Response::new(GetNamespaceResponse {
            namespace: Some(to_proto(ns)),
        }))
    }

    async fn list(
        &self,
        _req: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        // containerd 1.6 ignores the filter field; so do we.
        let all = self.with_store(|s| s.list_namespaces()).await?;
        Ok(Response::new(ListNamespacesResponse {
            namespaces: all.into_iter().map(to_proto).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<CreateNamespaceRequest>,
    ) -> Result<Response<CreateNamespaceResponse>, Status> {
        let caller = event_namespace(&req);
        let (name, labels) = labels_of(req.into_inner().namespace);
        rpc_span::record("name", &name);
        let ns = self
            .with_store(move |s| s.create_namespace(&name, labels))
            .await?;
        self.publish(
            caller.as_deref().unwrap_or(&ns.name),
            &NamespaceCreate {
                name: ns.name.clone(),
                labels: ns.labels.clone().into_iter().collect(),
            },
        );
        Ok(Response::new(CreateNamespaceResponse {
            namespace: Some(to_proto(ns)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateNamespaceRequest>,
    ) -> Result<Response<UpdateNamespaceResponse>, Status> {
        let caller = event_namespace(&req);
        let req = req.into_inner();
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let (name, labels) = labels_of(req.namespace);
        rpc_span::record("name", &name);
        let ns = self
            .with_store(move |s| s.update_namespace(&name, labels, &paths))
            .await?;
        self.publish(
            caller.as_deref().unwrap_or(&ns.name),
            &NamespaceUpdate {
                name: ns.name.clone(),
                labels: ns.labels.clone().into_iter().collect(),
            },
        );
        Ok(Response::new(UpdateNamespaceResponse {
            namespace: Some(to_proto(ns)),
        }))
    }

    async fn delete(&self, req: Request<DeleteNamespaceRequest>) -> Result<Response<()>, Status> {
        rpc_span::record("name", &req.get_ref().name);
        let caller = event_namespace(&req);
        let name = req.into_inner().name;
        let n = name.clone();
        self.with_store(move |s| s.delete_namespace(&n)).await?;
        self.publish(
            caller.as_deref().unwrap_or(&name),
            &NamespaceDelete { name: name.clone() },
        );
        Ok(Response::new(()))
    }
}

/// The namespace a namespace event is published in: the caller's, as containerd publishes it
/// with the request's context (`ctr namespaces create x` shows up in `default`). A caller without
/// a namespace header gets the event in the namespace it changed, where containerd would fail
/// the call after the change was made.
fn event_namespace<T>(req: &Request<T>) -> Option<String> {
    crate::namespace::from_request(req).ok()
}

/// The `io.containerd.grpc.v1.namespaces` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "namespaces")
        .serves(&[SERVICE_NAME])
        .reloadable()
        .requires(&[types::METADATA, types::EVENT])
        .init(|ctx| {
            let store: Arc<MetadataStore> = ctx.get_single(types::METADATA)?;
            let events: Option<Arc<Exchange>> = ctx.get_single(types::EVENT).ok();
            let svc = NamespacesService::new(store, events);
            Ok(Arc::new(GrpcService::new(NamespacesServer::new(svc))))
        })
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn service() -> (tempfile::TempDir, NamespacesService) {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(dir.path()).unwrap();
        (dir, NamespacesService::new(Arc::new(store), None))
    }

    fn create_req(name: &str, labels: &[(&str, &str)]) -> Request<CreateNamespaceRequest> {
        Request::new(CreateNamespaceRequest {
            namespace: Some(Namespace {
                name: name.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            }),
        })
    }

    #[tokio::test]
    async fn codes_match_containerd() {
        let (_d, svc) = service();
        svc.create(create_req("a", &[("k", "v")])).await.unwrap();
        let err = svc.create(create_req("a", &[])).await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists);
        assert_eq!(err.message(), "namespace \"a\": already exists");
        let err = svc.create(create_req("../x", &[])).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = svc
            .delete(Request::new(DeleteNamespaceRequest {
                name: "nope".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err = svc
            .update(Request::new(UpdateNamespaceRequest {
                namespace: Some(Namespace {
                    name: "a".into(),
                    labels: Default::default(),
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["name".into()],
                }),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
}
