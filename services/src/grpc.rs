//! The instance every `io.containerd.grpc.v1` plugin returns: its tonic services, boxed and
//! named, for the daemon's routing table ([`crate::router`]), so the daemon serves whatever
//! loaded without knowing the types.
//!
//! Every service goes on the router with containerd's message limits and behind the
//! [`Edge`](crate::edge::Edge), so that what the transport refuses reads the same for all.

use std::convert::Infallible;
use std::fmt;

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
use tonic_health::pb::health_server::HealthServer;
use tower::util::BoxCloneSyncService;

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

/// One gRPC service behind the [`Edge`], boxed so that the daemon's routing table holds any.
pub type BoxedService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

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

/// The gRPC services one plugin serves, ready to go in the daemon's routing table.
pub struct GrpcService {
    services: Vec<(&'static str, BoxedService)>,
}

impl fmt::Debug for GrpcService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcService")
            .field("names", &self.names().collect::<Vec<_>>())
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
            services: vec![Self::boxed(server)],
        }
    }

    /// This service and `server` besides, for a plugin that serves two (the CRI's runtime and
    /// image services).
    pub fn and<S>(mut self, server: S) -> Self
    where
        S: Servable,
        S::Future: Send + 'static,
    {
        self.services.push(Self::boxed(server));
        self
    }

    fn boxed<S>(server: S) -> (&'static str, BoxedService)
    where
        S: Servable,
        S::Future: Send + 'static,
    {
        let server = Edge::new(server.with_message_limits(MAX_MESSAGE_SIZE));
        (S::NAME, BoxCloneSyncService::new(server))
    }

    /// The fully qualified name of the first service.
    pub fn name(&self) -> &'static str {
        self.services.first().map_or("", |(name, _)| name)
    }

    /// The fully qualified names of every service, in the order they were given.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.services.iter().map(|(name, _)| *name)
    }

    /// Every service with its fully qualified name, to be routed to.
    pub fn services(&self) -> impl Iterator<Item = (&'static str, BoxedService)> + '_ {
        self.services.iter().map(|(name, svc)| (*name, svc.clone()))
    }
}
