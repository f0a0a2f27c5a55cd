//! `containerd.services.containers.v1.Containers`: container records per namespace.

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use berth_core::events::Exchange;
use berth_core::metadata::{AnyValue, RuntimeRecord};
use berth_core::{Container as StoredContainer, MetadataStore};
use berth_proto::containerd::events::{
    container_create, ContainerCreate, ContainerDelete, ContainerUpdate,
};
use berth_proto::containerd::services::containers::v1::containers_server::{
    Containers, SERVICE_NAME,
};
use berth_proto::containerd::services::containers::v1::{
    container, Container, CreateContainerRequest, CreateContainerResponse, DeleteContainerRequest,
    GetContainerRequest, GetContainerResponse, ListContainerMessage, ListContainersRequest,
    ListContainersResponse, UpdateContainerRequest, UpdateContainerResponse,
};
use berth_registry::{types, Classify, ErrorKind, Registration};
use berth_runtime::TaskManager;
use prost_types::Any;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::container_listing::ContainerListings;
use crate::containers_list_route::{ContainersRoutes, EncodedList};
use crate::convert::timestamp;
use crate::grpc::GrpcService;
use crate::status::to_status;
use crate::{blocking, namespace, rpc_span};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Why the Containers service refused a call by itself (the store's refusals are its own).
#[derive(Debug, thiserror::Error)]
pub enum ContainersError {
    /// The container still has a task. containerd's client words it so before it asks (its
    /// service would delete the record and leave the task running without a container).
    #[error("cannot delete running task {0}")]
    TaskExists(String),
}

impl Classify for ContainersError {
    fn kind(&self) -> ErrorKind {
        match self {
            ContainersError::TaskExists(_) => ErrorKind::FailedPrecondition,
        }
    }
}

/// The Containers service.
#[derive(Debug, Clone)]
pub struct ContainersService {
    store: Arc<MetadataStore>,
    events: Arc<Exchange>,
    listings: Arc<ContainerListings>,
    /// The task manager, when the runtime plugin loaded: a container with a task is not
    /// deleted.
    tasks: Option<Arc<TaskManager>>,
}

fn any_from(a: Option<Any>) -> Option<AnyValue> {
    a.map(|a| AnyValue {
        type_url: a.type_url,
        value: a.value,
    })
}

fn any_to(a: Option<AnyValue>) -> Option<Any> {
    a.map(|a| Any {
        type_url: a.type_url,
        value: a.value,
    })
}

/// A container record for the wire.
pub fn to_proto(c: StoredContainer) -> Container {
    Container {
        id: c.id,
        labels: c.labels.into_iter().collect(),
        image: c.image,
        runtime: Some(container::Runtime {
            name: c.runtime.name,
            options: any_to(c.runtime.options),
        }),
        spec: any_to(c.spec),
        snapshotter: c.snapshotter,
        snapshot_key: c.snapshot_key,
        created_at: timestamp(c.created_at),
        updated_at: timestamp(c.updated_at),
        extensions: c
            .extensions
            .into_iter()
            .filter_map(|(k, v)| any_to(Some(v)).map(|v| (k, v)))
            .collect(),
    }
}

fn from_proto(c: Option<Container>) -> StoredContainer {
    let c = c.unwrap_or_default();
    let runtime = c.runtime.unwrap_or_default();
    StoredContainer {
        id: c.id,
        labels: c.labels.into_iter().collect(),
        image: c.image,
        runtime: RuntimeRecord {
            name: runtime.name,
            options: any_from(runtime.options),
        },
        spec: any_from(c.spec),
        snapshotter: c.snapshotter,
        snapshot_key: c.snapshot_key,
        created_at: SystemTime::UNIX_EPOCH,
        updated_at: SystemTime::UNIX_EPOCH,
        extensions: c
            .extensions
            .into_iter()
            .filter_map(|(k, v)| any_from(Some(v)).map(|v| (k, v)))
            .collect(),
    }
}

impl ContainersService {
    /// A service over `store`, publishing to `events`, refusing to delete a container that
    /// has a task in `tasks`.
    pub fn new(
        store: Arc<MetadataStore>,
        events: Arc<Exchange>,
        tasks: Option<Arc<TaskManager>>,
    ) -> Self {
        ContainersService {
            store,
            events,
            listings: Arc::default(),
            tasks,
        }
    }

    async fn with_store<T, F>(&self, f: F) -> Result<T, Status>
    where
        F: FnOnce(&MetadataStore) -> Result<T, berth_core::MetadataError> + Send + 'static,
        T: Send + 'static,
    {
        blocking::call(&self.store, move |s| f(s)).await
    }

    fn publish<E: berth_core::events::Event>(&self, ns: &str, event: &E) {
        crate::events::publish_committed(&self.events, ns, event);
    }

    /// The encoded answer of `List` (see `containers_list_route`).
    pub(crate) async fn list_encoded(
        &self,
        req: &Request<ListContainersRequest>,
    ) -> Result<EncodedList, Status> {
        let (ns, filter) = list_scope(req)?;
        if filter.is_always() {
            // Unchanged since the last listing: no need to go to the blocking pool.
            if let Some(all) = self.listings.cached_all(&self.store, &ns) {
                return Ok(EncodedList(all));
            }
        }
        let listings = self.listings.clone();
        self.with_store(move |s| listings.list_encoded(s, &ns, &filter, to_proto))
            .await
            .map(EncodedList)
    }

    async fn list_all(
        &self,
        req: &Request<ListContainersRequest>,
    ) -> Result<Vec<Container>, Status> {
        let (ns, filter) = list_scope(req)?;
        let listings = self.listings.clone();
        self.with_store(move |s| listings.list(s, &ns, &filter, to_proto))
            .await
    }
}

/// The namespace and the parsed filters of a listing.
fn list_scope(
    req: &Request<ListContainersRequest>,
) -> Result<(String, berth_filters::Filter), Status> {
    let ns = namespace::from_request(req)?;
    let filter = berth_filters::parse_any(&req.get_ref().filters).map_err(|e| to_status(&e))?;
    Ok((ns, filter))
}

#[tonic::async_trait]
impl Containers for ContainersService {
    async fn get(
        &self,
        req: Request<GetContainerRequest>,
    ) -> Result<Response<GetContainerResponse>, Status> {
        rpc_span::record("id", &req.get_ref().id);
        let ns = namespace::from_request(&req)?;
        let id = req.into_inner().id;
        let c = self.with_store(move |s| s.get_container(&ns, &id)).await?;
        Ok(Response::new(GetContainerResponse {
            container: Some(to_proto(c)),
        }))
    }

    /// Not reached when served: [`ContainersRoutes`] sends every `Containers/List` call to
    /// `ContainersService::list_encoded`, which answers with the listings' bytes encoded once
    /// per change (`containers_list_route`). The generated trait requires this method; it
    /// gives the same answer, decoded, to a caller holding the service directly.
    async fn list(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let containers = self.list_all(&req).await?;
        Ok(Response::new(ListContainersResponse { containers }))
    }

    type ListStreamStream = BoxStream<ListContainerMessage>;

    async fn list_stream(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<Self::ListStreamStream>, Status> {
        let containers = self.list_all(&req).await?;
        let msgs: Vec<Result<ListContainerMessage, Status>> = containers
            .into_iter()
            .map(|c| Ok(ListContainerMessage { container: Some(c) }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(msgs))))
    }

    async fn create(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let ns = namespace::from_request(&req)?;
        let c = from_proto(req.into_inner().container);
        let span = tracing::Span::current();
        span.record("id", c.id.as_str());
        let n = ns.clone();
        let created = self.with_store(move |s| s.create_container(&n, c)).await?;
        self.publish(
            &ns,
            &ContainerCreate {
                id: created.id.clone(),
                image: created.image.clone(),
                runtime: Some(container_create::Runtime {
                    name: created.runtime.name.clone(),
                    options: any_to(created.runtime.options.clone()),
                }),
            },
        );
        Ok(Response::new(CreateContainerResponse {
            container: Some(to_proto(created)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateContainerRequest>,
    ) -> Result<Response<UpdateContainerResponse>, Status> {
        let ns = namespace::from_request(&req)?;
        let r = req.into_inner();
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let c = from_proto(r.container);
        let span = tracing::Span::current();
        span.record("id", c.id.as_str());
        let n = ns.clone();
        let updated = self
            .with_store(move |s| s.update_container(&n, c, &paths))
            .await?;
        self.publish(
            &ns,
            &ContainerUpdate {
                id: updated.id.clone(),
                image: updated.image.clone(),
                labels: updated.labels.clone().into_iter().collect(),
                snapshot_key: updated.snapshot_key.clone(),
            },
        );
        Ok(Response::new(UpdateContainerResponse {
            container: Some(to_proto(updated)),
        }))
    }

    async fn delete(&self, req: Request<DeleteContainerRequest>) -> Result<Response<()>, Status> {
        rpc_span::record("id", &req.get_ref().id);
        let ns = namespace::from_request(&req)?;
        let id = req.into_inner().id;
        if self.tasks.as_ref().is_some_and(|t| t.get(&ns, &id).is_ok()) {
            return Err(to_status(&ContainersError::TaskExists(id)));
        }
        let (n, i) = (ns.clone(), id.clone());
        self.with_store(move |s| s.delete_container(&n, &i)).await?;
        self.publish(&ns, &ContainerDelete { id });
        Ok(Response::new(()))
    }
}

/// The `io.containerd.grpc.v1.containers` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "containers")
        .serves(&[SERVICE_NAME])
        .reloadable()
        .requires(&[types::METADATA, types::EVENT, types::RUNTIME_V2])
        .init(|ctx| {
            let store: Arc<MetadataStore> = ctx.get_single(types::METADATA)?;
            let events: Arc<Exchange> = ctx.get_single(types::EVENT)?;
            // Without a runtime (disabled, or failed to load) there are no tasks to protect.
            let tasks = ctx
                .get_by_id::<TaskManager>(types::RUNTIME_V2, berth_runtime::PLUGIN_ID)
                .ok();
            let svc = ContainersService::new(store, events, tasks);
            Ok(Arc::new(GrpcService::new(ContainersRoutes::new(svc))))
        })
}
