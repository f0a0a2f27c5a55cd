//! `containerd.services.images.v1.Images`: named pointers to image content, per namespace.

use std::sync::Arc;
use std::time::SystemTime;

use berth_core::events::Exchange;
use berth_core::gc::GcScheduler;
use berth_core::{Image as StoredImage, MetadataStore};
use berth_proto::containerd::services::images::v1::images_server::{
    Images, ImagesServer, SERVICE_NAME,
};
use berth_proto::containerd::services::images::v1::{
    CreateImageRequest, CreateImageResponse, DeleteImageRequest, GetImageRequest, GetImageResponse,
    Image, ImageCreate, ImageDelete, ImageUpdate, ListImagesRequest, ListImagesResponse,
    UpdateImageRequest, UpdateImageResponse,
};
use berth_registry::{types, Registration};
use tonic::{Request, Response, Status};

use crate::convert::{descriptor_from_proto, descriptor_to_proto, timestamp};
use crate::grpc::GrpcService;
use crate::status::to_status;
use crate::{blocking, namespace, rpc_span};

/// The Images service over the metadata store.
#[derive(Debug, Clone)]
pub struct ImagesService {
    store: Arc<MetadataStore>,
    events: Arc<Exchange>,
    gc: Option<Arc<GcScheduler>>,
}

fn to_proto(i: StoredImage) -> Image {
    Image {
        name: i.name,
        labels: i.labels.into_iter().collect(),
        target: Some(descriptor_to_proto(i.target)),
        created_at: timestamp(i.created_at),
        updated_at: timestamp(i.updated_at),
    }
}

fn from_proto(i: Option<Image>) -> StoredImage {
    let i = i.unwrap_or_default();
    StoredImage {
        name: i.name,
        labels: i.labels.into_iter().collect(),
        target: descriptor_from_proto(i.target),
        created_at: SystemTime::UNIX_EPOCH,
        updated_at: SystemTime::UNIX_EPOCH,
    }
}

impl ImagesService {
    /// A service over `store`, publishing to `events`, collecting garbage through `gc`.
    pub fn new(
        store: Arc<MetadataStore>,
        events: Arc<Exchange>,
        gc: Option<Arc<GcScheduler>>,
    ) -> Self {
        ImagesService { store, events, gc }
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
}

#[tonic::async_trait]
impl Images for ImagesService {
    async fn get(
        &self,
        req: Request<GetImageRequest>,
    ) -> Result<Response<GetImageResponse>, Status> {
        rpc_span::record("name", &req.get_ref().name);
        let ns = namespace::from_request(&req)?;
        let name = req.into_inner().name;
        let image = self.with_store(move |s| s.get_image(&ns, &name)).await?;
        Ok(Response::new(GetImageResponse {
            image: Some(to_proto(image)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let ns = namespace::from_request(&req)?;
        let filter = berth_filters::parse_any(&req.get_ref().filters).map_err(|e| to_status(&e))?;
        let images = self
            .with_store(move |s| s.list_images(&ns, &filter))
            .await?;
        Ok(Response::new(ListImagesResponse {
            images: images.into_iter().map(to_proto).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<CreateImageRequest>,
    ) -> Result<Response<CreateImageResponse>, Status> {
        let ns = namespace::from_request(&req)?;
        let image = from_proto(req.into_inner().image);
        let span = tracing::Span::current();
        span.record("name", image.name.as_str());
        let ns2 = ns.clone();
        let created = self
            .with_store(move |s| s.create_image(&ns2, image))
            .await?;
        self.publish(
            &ns,
            &ImageCreate {
                name: created.name.clone(),
                labels: created.labels.clone().into_iter().collect(),
            },
        );
        Ok(Response::new(CreateImageResponse {
            image: Some(to_proto(created)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateImageRequest>,
    ) -> Result<Response<UpdateImageResponse>, Status> {
        let ns = namespace::from_request(&req)?;
        let req = req.into_inner();
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let image = from_proto(req.image);
        let span = tracing::Span::current();
        span.record("name", image.name.as_str());
        let ns2 = ns.clone();
        let updated = self
            .with_store(move |s| s.update_image(&ns2, image, &paths))
            .await?;
        self.publish(
            &ns,
            &ImageUpdate {
                name: updated.name.clone(),
                labels: updated.labels.clone().into_iter().collect(),
            },
        );
        Ok(Response::new(UpdateImageResponse {
            image: Some(to_proto(updated)),
        }))
    }

    async fn delete(&self, req: Request<DeleteImageRequest>) -> Result<Response<()>, Status> {
        rpc_span::record("name", &req.get_ref().name);
        let ns = namespace::from_request(&req)?;
        let DeleteImageRequest { name, sync } = req.into_inner();
        let (ns2, name2) = (ns.clone(), name.clone());
        self.with_store(move |s| s.delete_image(&ns2, &name2))
            .await?;
        self.publish(&ns, &ImageDelete { name });
        if let Some(gc) = &self.gc {
            if sync {
                gc.collect_now().await.map_err(|e| to_status(&e))?;
            } else {
                gc.trigger();
            }
        }
        Ok(Response::new(()))
    }
}

/// The `io.containerd.grpc.v1.images` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "images")
        .serves(&[SERVICE_NAME])
        .reloadable()
        .requires(&[types::METADATA, types::EVENT, types::GC])
        .init(|ctx| {
            let store: Arc<MetadataStore> = ctx.get_single(types::METADATA)?;
            let events: Arc<Exchange> = ctx.get_single(types::EVENT)?;
            let gc: Option<Arc<GcScheduler>> = ctx.get_single(types::GC).ok();
            let svc = ImagesService::new(store, events, gc);
            Ok(Arc::new(GrpcService::new(ImagesServer::new(svc))))
        })
}
