//! The `io.containerd.grpc.v1.cri` plugin: loads after the metadata store, the snapshotters,
//! the event exchange and the runtime v2 manager, and serves both CRI services.

use std::sync::Arc;

use berth_core::events::Exchange;
use berth_core::gc::GcScheduler;
use berth_core::layer_content::layer_differ;
use berth_core::metadata::plugin::{content_view, snapshot_view};
use berth_core::transfer_local::LocalStores;
use berth_core::MetadataStore;
use berth_proto::runtime::v1::image_service_server::ImageServiceServer;
use berth_proto::runtime::v1::runtime_service_server::RuntimeServiceServer;
use berth_registry::{types, PluginError, Registration};
use berth_runtime::TaskManager;
use berth_services::GrpcService;

use crate::config::CriConfig;
use crate::service::{Cri, CriInner};
use crate::store::Stores;

/// The plugin id (`io.containerd.grpc.v1.cri`).
pub const PLUGIN_ID: &str = "cri";

/// The CRI plugin's registration.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, PLUGIN_ID)
        .serves(&[
            berth_proto::runtime::v1::runtime_service_server::SERVICE_NAME,
            berth_proto::runtime::v1::image_service_server::SERVICE_NAME,
        ])
        .requires(&[
            types::METADATA,
            types::SNAPSHOTTER,
            types::EVENT,
            types::RUNTIME_V2,
            types::GC,
        ])
        .config::<CriConfig>()
        .init(|ctx| {
            let config: CriConfig = ctx.config()?;
            let root = ctx.create_root()?;
            let state = ctx.create_state()?;
            let meta: Arc<MetadataStore> = ctx.get_single(types::METADATA)?;
            let events: Arc<Exchange> = ctx.get_single(types::EVENT)?;
            let gc: Option<Arc<GcScheduler>> = ctx.get_single(types::GC).ok();
            let tasks: Arc<TaskManager> =
                ctx.get_by_id(types::RUNTIME_V2, berth_runtime::PLUGIN_ID)?;
            let snapshots = snapshot_view(ctx)?;
            if snapshots
                .names()
                .all(|name| name != config.containerd.snapshotter)
            {
                return Err(PluginError::init(std::io::Error::other(format!(
                    "snapshotter {:?} (containerd.snapshotter) is not loaded",
                    config.containerd.snapshotter
                ))));
            }
            let content = content_view(ctx)?;
            let tmp = root.join("tmp");
            std::fs::create_dir_all(&tmp).map_err(PluginError::init)?;
            let differ = layer_differ(content.clone(), tmp);
            let transfer = LocalStores::new(
                meta.clone(),
                content.clone(),
                snapshots.clone(),
                &config.containerd.snapshotter,
                differ,
            );
            let stream =
                crate::streaming::server::StreamServer::bind(&config).map_err(PluginError::init)?;
            let cri = Cri(Arc::new(CriInner {
                config,
                root,
                state,
                meta,
                snapshots,
                content,
                transfer,
                tasks,
                events,
                gc,
                store: Stores::default(),
                stream,
                described: Default::default(),
            }));
            crate::sandbox::recover::recover_at_start(&cri).map_err(PluginError::init)?;
            crate::container::recover::recover_at_start(&cri).map_err(PluginError::init)?;
            cri.stream
                .serve(Arc::new(cri.clone()))
                .map_err(PluginError::init)?;
            let service = GrpcService::new(RuntimeServiceServer::new(cri.clone()))
                .and(ImageServiceServer::new(cri));
            Ok(Arc::new(service))
        })
}
