//! The daemon's gRPC routing table: every call is routed by its service name (the
//! `package.Service` of `/package.Service/Method`) to the service that plugin serves, looked up
//! at call time, so that a plugin that loads late (a retry after its error went away) is served
//! from then on without a restart.
//!
//! A service whose plugin did not load is known by the name its registration declared
//! ([`berth_registry::Registration::serves`]); a call to it is answered from the plugin's
//! current record: Unavailable with the plugin's own error while it failed (it is retried),
//! Unimplemented with the reason when it was skipped (it cannot run on this host). A service no
//! registration declared is Unimplemented, as tonic's router answers it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use berth_errdefs::{Classify, ErrorKind};
use berth_registry::{Inventory, PluginStatus};
use bytes::Bytes;
use tonic::body::Body;
use tonic::service::Routes;
use tonic::Status;
use tower::ServiceExt;

use crate::grpc::{BoxedService, GrpcService};
use crate::status::to_status;

/// Why a declared service cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Its plugin failed to load; the daemon retries it.
    #[error("plugin {plugin} is not loaded: {reason}")]
    NotLoaded {
        /// The plugin URI.
        plugin: String,
        /// The plugin's init error, as introspection lists it.
        reason: String,
    },
    /// Its plugin cannot run on this host.
    #[error("plugin {plugin} is not loaded: {reason}")]
    Skipped {
        /// The plugin URI.
        plugin: String,
        /// The skip's reason.
        reason: String,
    },
    /// Its plugin has just loaded and the service is being put in place.
    #[error("plugin {plugin} is starting")]
    Starting {
        /// The plugin URI.
        plugin: String,
    },
}

impl Classify for RouteError {
    fn kind(&self) -> ErrorKind {
        match self {
            RouteError::NotLoaded { .. } | RouteError::Starting { .. } => ErrorKind::Unavailable,
            RouteError::Skipped { .. } => ErrorKind::NotImplemented,
        }
    }
}

/// Where a service name leads.
#[derive(Debug, Clone)]
enum Slot {
    /// The plugin loaded: its service.
    Serving(BoxedService),
    /// The plugin (by URI) declared the service but is not loaded.
    Declared(String),
}

/// The shared table of services; clones share it.
#[derive(Debug, Clone)]
pub struct ServiceTable {
    slots: Arc<RwLock<HashMap<String, Slot>>>,
    inventory: Inventory,
    activity: Arc<Activity>,
}

/// Counts the calls routed, and wakes whoever waits for the daemon to get busy again.
#[derive(Debug, Default)]
struct Activity {
    calls: AtomicU64,
    /// Set by [`ServiceTable::went_idle`] while it waits for a call.
    parked: AtomicBool,
    resumed: tokio::sync::Notify,
}

impl Activity {
    fn called(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        // One load per call; the swap and the wake-up only on the first call after a wait.
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::AcqRel) {
            self.resumed.notify_one();
        }
    }
}

impl ServiceTable {
    /// An empty table whose not-loaded answers come from `inventory`.
    pub fn new(inventory: Inventory) -> ServiceTable {
        ServiceTable {
            slots: Arc::default(),
            inventory,
            activity: Arc::default(),
        }
    }

    /// Resolves once calls were routed and then none for `quiet`: the daemon has gone idle
    /// after some work. It waits for a call first, without waking up while nothing comes.
    pub async fn went_idle(&self, quiet: Duration) {
        let activity = &self.activity;
        activity.parked.store(true, Ordering::Release);
        // A call between the store and here left a permit: `notified` resolves at once.
        activity.resumed.notified().await;
        loop {
            let before = activity.calls.load(Ordering::Relaxed);
            tokio::time::sleep(quiet).await;
            if activity.calls.load(Ordering::Relaxed) == before {
                return;
            }
        }
    }

    /// The tower service routing every call through this table, for a server of its own.
    pub fn service(&self) -> Dispatch {
        Dispatch(self.clone())
    }

    /// Declares that `plugin` serves `service` once loaded; a service already served stays.
    pub fn declare(&self, service: &str, plugin: &str) {
        self.write()
            .entry(service.to_owned())
            .or_insert_with(|| Slot::Declared(plugin.to_owned()));
    }

    /// Serves every service of `svc` from now on.
    pub fn install(&self, svc: &GrpcService) {
        let mut slots = self.write();
        for (name, service) in svc.services() {
            tracing::debug!(service = name, "serving");
            slots.insert(name.to_owned(), Slot::Serving(service));
        }
    }

    /// tonic routes that send every call through this table.
    pub fn routes(&self) -> Routes {
        Routes::from(
            Routes::default()
                .into_axum_router()
                .fallback_service(Dispatch(self.clone())),
        )
    }

    /// Where a call to `service` goes: its service, or the status to answer.
    fn route(&self, service: &str) -> Result<BoxedService, Status> {
        let slot = self
            .slots
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(service)
            .cloned();
        match slot {
            Some(Slot::Serving(svc)) => Ok(svc),
            Some(Slot::Declared(plugin)) => Err(to_status(&self.not_loaded(plugin))),
            // What tonic's router answers for a service it does not know.
            None => Err(Status::unimplemented("")),
        }
    }

    /// Why `plugin` is not serving, from its current record.
    fn not_loaded(&self, plugin: String) -> RouteError {
        let record = self
            .inventory
            .snapshot()
            .into_iter()
            .find(|p| format!("{}.{}", p.plugin_type, p.id) == plugin);
        let Some(status) = record.map(|p| p.status) else {
            // Not tried yet: the record comes with the plugin's first init.
            return RouteError::Starting { plugin };
        };
        let skipped = status.is_skip();
        match status {
            // Loaded a moment ago, and its service not in place yet.
            PluginStatus::Ok => RouteError::Starting { plugin },
            PluginStatus::Error { message, .. } if skipped => RouteError::Skipped {
                plugin,
                reason: message,
            },
            PluginStatus::Error { message, .. } => RouteError::NotLoaded {
                plugin,
                reason: message,
            },
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Slot>> {
        self.slots
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `package.Service` of a gRPC path `/package.Service/Method`.
fn service_name(path: &str) -> &str {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').map_or(path, |(service, _)| service)
}

/// The tower service routing each call through a [`ServiceTable`].
#[derive(Debug, Clone)]
pub struct Dispatch(ServiceTable);

type DispatchFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<B> tower::Service<http::Request<B>> for Dispatch
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = DispatchFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is the routed service's, checked per call by `oneshot`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.0.activity.called();
        match self.0.route(service_name(req.uri().path())) {
            Ok(svc) => Box::pin(svc.oneshot(req.map(Body::new))),
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_proto::containerd::services::version::v1::version_client::VersionClient;
    use berth_proto::containerd::services::version::v1::version_server::VersionServer;
    use berth_registry::PluginInfo;
    use tonic::Code;

    use super::*;

    fn record(id: &str, status: PluginStatus) -> PluginInfo {
        PluginInfo {
            plugin_type: "io.containerd.grpc.v1".into(),
            id: id.into(),
            requires: vec![],
            platforms: vec![],
            exports: Default::default(),
            capabilities: vec![],
            status,
        }
    }

    /// A client of `table`'s routes over a unix socket in `dir`.
    async fn client(
        table: &ServiceTable,
        dir: &tempfile::TempDir,
    ) -> VersionClient<tonic::transport::Channel> {
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let service = table.service();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .serve_with_incoming(
                    service,
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                )
                .await
        });
        VersionClient::new(berth_integration::channel_at(&path).await)
    }

    #[tokio::test]
    async fn calls_follow_the_plugin_record_until_the_service_is_installed() {
        let inventory = Inventory::default();
        let table = ServiceTable::new(inventory.clone());
        let name = berth_proto::containerd::services::version::v1::version_server::SERVICE_NAME;
        table.declare(name, "io.containerd.grpc.v1.version");
        let dir = tempfile::tempdir().unwrap();
        let mut client = client(&table, &dir).await;

        inventory.push(record(
            "version",
            PluginStatus::Error {
                kind: ErrorKind::Unavailable,
                message: "metadata database: no space left on device".into(),
            },
        ));
        let err = client.version(()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(
            err.message(),
            "plugin io.containerd.grpc.v1.version is not loaded: metadata database: no space \
             left on device: unavailable"
        );

        inventory.set(record(
            "version",
            PluginStatus::Error {
                kind: ErrorKind::NotImplemented,
                message: "not on this kernel: skip plugin".into(),
            },
        ));
        let err = client.version(()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        assert!(err.message().contains("not on this kernel"), "{err}");

        inventory.set(record("version", PluginStatus::Ok));
        let err = client.version(()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("is starting"), "{err}");

        table.install(&GrpcService::new(VersionServer::new(
            crate::version::VersionService,
        )));
        let version = client.version(()).await.unwrap().into_inner();
        assert!(!version.version.is_empty());
        // Declaring again does not hide the installed service.
        table.declare(name, "io.containerd.grpc.v1.version");
        client.version(()).await.unwrap();
    }

    #[tokio::test]
    async fn undeclared_services_are_unimplemented() {
        let table = ServiceTable::new(Inventory::default());
        let dir = tempfile::tempdir().unwrap();
        let err = client(&table, &dir).await.version(()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
    }

    #[tokio::test]
    async fn went_idle_waits_for_calls_and_then_for_quiet() {
        let table = ServiceTable::new(Inventory::default());
        let dir = tempfile::tempdir().unwrap();
        let mut client = client(&table, &dir).await;
        let quiet = Duration::from_millis(50);
        let idle = tokio::spawn({
            let table = table.clone();
            async move { table.went_idle(quiet).await }
        });
        // No call yet: several quiet periods pass without it resolving.
        tokio::time::sleep(quiet * 4).await;
        assert!(!idle.is_finished());
        // Calls (answered Unimplemented here) are activity; quiet after them ends the wait.
        client.version(()).await.unwrap_err();
        client.version(()).await.unwrap_err();
        idle.await.unwrap();
        // The next wait needs a call of its own.
        let again = tokio::spawn({
            let table = table.clone();
            async move { table.went_idle(quiet).await }
        });
        tokio::time::sleep(quiet * 4).await;
        assert!(!again.is_finished());
        client.version(()).await.unwrap_err();
        again.await.unwrap();
    }

    #[test]
    fn service_names_come_from_the_path() {
        assert_eq!(service_name("/a.b.C/Method"), "a.b.C");
        assert_eq!(service_name("/a.b.C"), "a.b.C");
        assert_eq!(service_name("nope"), "nope");
    }
}
