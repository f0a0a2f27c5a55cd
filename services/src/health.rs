//! `grpc.health.v1.Health`, through the tonic-health crate: the server answers SERVING for the
//! empty service name while it runs.

use std::sync::Arc;

use berth_registry::{types, Registration};
use serde::{Deserialize, Serialize};

use crate::grpc::GrpcService;

/// The health plugin's config (none yet; the section exists so unknown keys are refused).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {}

/// The `io.containerd.grpc.v1.healthcheck` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "healthcheck")
        .serves(&[tonic_health::pb::health_server::SERVICE_NAME])
        .config::<Config>()
        .init(|ctx| {
            let _config: Config = ctx.config()?;
            // The reporter starts with "" SERVING; keeping it alive is not needed for that
            // status to stay.
            let (_reporter, service) = tonic_health::server::health_reporter();
            Ok(Arc::new(GrpcService::new(service)))
        })
}
