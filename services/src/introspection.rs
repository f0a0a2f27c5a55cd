//! `containerd.services.introspection.v1.Introspection`: what plugins loaded and how, and the
//! server's stable UUID.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use berth_errdefs::grpc;
use berth_filters::Adaptor;
use berth_proto::containerd::services::introspection::v1::introspection_server::{
    Introspection, IntrospectionServer, SERVICE_NAME,
};
use berth_proto::containerd::services::introspection::v1::{
    Plugin, PluginsRequest, PluginsResponse, ServerResponse,
};
use berth_proto::containerd::types::Platform;
use berth_proto::google::rpc::Status as RpcStatus;
use berth_registry::{types, Inventory, PluginError, PluginInfo, PluginStatus, Registration};
use tonic::{Request, Response, Status};

use crate::grpc::GrpcService;
use crate::status::to_status;

/// The Introspection service.
#[derive(Debug, Clone)]
pub struct IntrospectionService {
    inventory: Inventory,
    uuid: String,
}

struct PluginFields<'a>(&'a PluginInfo);

impl Adaptor for PluginFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "type" => Some(self.0.plugin_type.clone()),
            [f] if f == "id" => Some(self.0.id.clone()),
            // Platforms and capabilities never match, as in containerd.
            _ => None,
        }
    }
}

fn to_proto(info: PluginInfo) -> Plugin {
    let init_err = match info.status {
        PluginStatus::Ok => None,
        PluginStatus::Error { kind, message } => Some(RpcStatus {
            code: grpc::to_grpc(kind) as i32,
            message,
            details: Vec::new(),
        }),
    };
    Plugin {
        r#type: info.plugin_type,
        id: info.id,
        requires: info.requires,
        platforms: info
            .platforms
            .into_iter()
            .map(|p| Platform {
                os: p.os,
                architecture: p.architecture,
                variant: p.variant,
            })
            .collect(),
        exports: info.exports.into_iter().collect(),
        capabilities: info.capabilities,
        init_err,
    }
}

#[tonic::async_trait]
impl Introspection for IntrospectionService {
    async fn plugins(
        &self,
        req: Request<PluginsRequest>,
    ) -> Result<Response<PluginsResponse>, Status> {
        let filter = berth_filters::parse_any(&req.get_ref().filters).map_err(|e| to_status(&e))?;
        let plugins = self
            .inventory
            .snapshot()
            .into_iter()
            .filter(|p| filter.matches(&PluginFields(p)))
            .map(to_proto)
            .collect();
        Ok(Response::new(PluginsResponse { plugins }))
    }

    async fn server(&self, _req: Request<()>) -> Result<Response<ServerResponse>, Status> {
        Ok(Response::new(ServerResponse {
            uuid: self.uuid.clone(),
        }))
    }
}

/// Reads the server UUID from `dir/uuid`, creating it (atomically) on first start so that it
/// stays the same across restarts.
pub fn load_or_create_uuid(dir: &Path) -> Result<String, std::io::Error> {
    let path = dir.join("uuid");
    match std::fs::read_to_string(&path) {
        Ok(text) if uuid::Uuid::parse_str(text.trim()).is_ok() => return Ok(text.trim().into()),
        Ok(_) => tracing::warn!(path = %path.display(), "replacing malformed server uuid"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = uuid::Uuid::new_v4().to_string();
    let tmp = dir.join("uuid.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(id.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

/// The `io.containerd.grpc.v1.introspection` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "introspection")
        .serves(&[SERVICE_NAME])
        .init(|ctx| {
            let dir = ctx.create_root()?;
            let uuid = load_or_create_uuid(&dir).map_err(PluginError::init)?;
            let svc = IntrospectionService {
                inventory: ctx.inventory(),
                uuid,
            };
            Ok(Arc::new(GrpcService::new(IntrospectionServer::new(svc))))
        })
}

#[cfg(test)]
mod tests {
    use berth_registry::ErrorKind;

    use super::*;

    fn info(t: &str, id: &str, status: PluginStatus) -> PluginInfo {
        PluginInfo {
            plugin_type: t.into(),
            id: id.into(),
            requires: vec![],
            platforms: vec![],
            exports: Default::default(),
            capabilities: vec![],
            status,
        }
    }

    #[tokio::test]
    async fn filters_by_type_and_id_and_reports_errors() {
        let inventory = Inventory::default();
        inventory.push(info("io.containerd.grpc.v1", "version", PluginStatus::Ok));
        inventory.push(info(
            "io.containerd.snapshotter.v1",
            "btrfs",
            PluginStatus::Error {
                kind: ErrorKind::NotImplemented,
                message: "not on btrfs: skip plugin".into(),
            },
        ));
        let svc = IntrospectionService {
            inventory,
            uuid: "u".into(),
        };
        let all = svc
            .plugins(Request::new(PluginsRequest { filters: vec![] }))
            .await
            .unwrap()
            .into_inner()
            .plugins;
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[1].init_err.as_ref().unwrap().message,
            "not on btrfs: skip plugin"
        );
        let some = svc
            .plugins(Request::new(PluginsRequest {
                filters: vec!["type==io.containerd.snapshotter.v1".into()],
            }))
            .await
            .unwrap()
            .into_inner()
            .plugins;
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].id, "btrfs");
        let err = svc
            .plugins(Request::new(PluginsRequest {
                filters: vec!["id==".into(), "type~=|(".into()],
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn uuid_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_uuid(dir.path()).unwrap();
        let b = load_or_create_uuid(dir.path()).unwrap();
        assert_eq!(a, b);
    }
}
