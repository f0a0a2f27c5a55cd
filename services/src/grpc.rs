//! The instance every `io.containerd.grpc.v1` plugin returns: a way to add its tonic service to
//! the daemon's router, so the daemon serves whatever loaded without knowing the types.
//!
//! Every service goes on the router with containerd's message limits and behind the
//! [`Edge`](crate::edge::Edge), so that what the transport refuses reads the same for all.

use std::convert::Infallible;
use std::fmt;
use std::sync::Mutex;

use berth_proto::containerd::services::containers::v1::containers_server::ContainersServer;
use berth_proto::containerd::services::content::v1::content_server::ContentServer;
use berth_proto::containerd::services::diff::v1::diff_server::DiffServer;
use berth_proto::containerd::services::events::v1::events_server::EventsServer;
use berth_proto::containerd::services::images::v1::images_server::ImagesServer;
use berth_proto::containerd::services::introspection::v1::introspection_server::IntrospectionServer;
use berth_proto::containerd::services::leases::v1::leases_server::LeasesServer;
use berth_proto::containerd::services::namespaces::v1::namespaces_server::NamespacesServer;
use berth_proto::containerd::services::snapshots::v1::snapshots_server::SnapshotsServer;
use berth_proto::containerd::services::tasks::v1::tasks_server::TasksServer;
use berth_proto::containerd::services::version::v1::version_server::VersionServer;
use berth_proto::runtime::v1::image_service_server::ImageServiceServer;
use berth_proto::runtime::v1::runtime_service_server::RuntimeServiceServer;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::pb::health_server::HealthServer;

use crate::edge::Edge;

/// The largest message taken or sent, either way: containerd sets its gRPC server's receive and
/// send limits to 16 MiB (`defaults.DefaultMaxRecvMsgSize`, `DefaultMaxSendMsgSize`), where
/// tonic's default would take 4 MiB.
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// A tonic server whose message size limits can be set: every generated server, and the
/// routes that wrap one.
pub trait MessageLimits {
    /// The server taking and sending messages of at most `max` bytes.
    fn with_message_limits(self, max: usize) -> Self;
}

/// The generated servers: their limit setters are inherent methods, so each is listed here.
macro_rules! generated_message_limits {
    ($($server:ident),* $(,)?) => {$(
        impl<T> MessageLimits for $server<T> {
            fn with_message_limits(self, max: usize) -> Self {
                self.max_decoding_message_size(max)
                    .max_encoding_message_size(max)
            }
        }
    )*};
}

generated_message_limits!(
    ContainersServer,
    ContentServer,
    DiffServer,
    EventsServer,
    HealthServer,
    ImageServiceServer,
    ImagesServer,
    IntrospectionServer,
    LeasesServer,
    NamespacesServer,
    RuntimeServiceServer,
    SnapshotsServer,
    TasksServer,
    VersionServer,
);

type AddFn = Box<dyn FnOnce(Routes) -> Routes + Send>;

/// A generated tonic server that can go on the daemon's router.
pub trait Servable:
    MessageLimits
    + tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
    + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Servable for S where
    S: MessageLimits
        + tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// A gRPC service ready to be served.
pub struct GrpcService {
    name: &'static str,
    add: Mutex<Option<AddFn>>,
}

impl fmt::Debug for GrpcService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcService")
            .field("name", &self.name)
            .finish()
    }
}

impl GrpcService {
    /// The tonic server `server` (e.g. `NamespacesServer::new(svc)`), to be served with
    /// [`MAX_MESSAGE_SIZE`] limits behind the [`Edge`].
    pub fn new<S>(server: S) -> Self
    where
        S: Servable,
        S::Future: Send + 'static,
    {
        GrpcService {
            name: S::NAME,
            add: Mutex::new(Some(Self::adder(server))),
        }
    }

    /// This service and `server` besides, for a plugin that serves two (the CRI's runtime and
    /// image services).
    pub fn and<S>(self, server: S) -> Self
    where
        S: Servable,
        S::Future: Send + 'static,
    {
        let first = self
            .add
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let second = Self::adder(server);
        let both: AddFn = Box::new(move |routes: Routes| {
            let routes = match first {
                Some(first) => first(routes),
                None => routes,
            };
            second(routes)
        });
        GrpcService {
            name: self.name,
            add: Mutex::new(Some(both)),
        }
    }

    fn adder<S>(server: S) -> AddFn
    where
        S: Servable,
        S::Future: Send + 'static,
    {
        let server = Edge::new(server.with_message_limits(MAX_MESSAGE_SIZE));
        Box::new(move |routes: Routes| routes.add_service(server))
    }

    /// The fully qualified gRPC service name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Adds the service to `routes`; a second call adds nothing.
    pub fn add_to(&self, routes: Routes) -> Routes {
        let add = self
            .add
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match add {
            Some(add) => add(routes),
            None => routes,
        }
    }
}
