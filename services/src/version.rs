//! `containerd.services.version.v1.Version`: the daemon's version and revision.

use std::sync::Arc;

use berth_proto::containerd::services::version::v1::version_server::{
    Version, VersionServer, SERVICE_NAME,
};
use berth_proto::containerd::services::version::v1::VersionResponse;
use berth_registry::{types, Registration};
use tonic::{Request, Response, Status};

use crate::grpc::GrpcService;

/// The version string the daemon reports.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "-berth");

/// The source revision, from `BERTH_REVISION` at build time when set.
pub const REVISION: &str = match option_env!("BERTH_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// The Version service.
#[derive(Debug, Default, Clone)]
pub struct VersionService;

#[tonic::async_trait]
impl Version for VersionService {
    async fn version(&self, _req: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: VERSION.to_owned(),
            revision: REVISION.to_owned(),
        }))
    }
}

/// The `io.containerd.grpc.v1.version` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "version")
        .serves(&[SERVICE_NAME])
        .init(|_| {
            Ok(Arc::new(GrpcService::new(VersionServer::new(
                VersionService,
            ))))
        })
}
