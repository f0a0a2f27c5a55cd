//! The connection to the daemon: a tonic channel over the unix socket, namespace and lease
//! metadata on every request, and the client-side operations several commands share (content
//! streams, leases, image walking, unpack, local mounts).

pub mod content;
pub mod images;
pub mod io;
pub mod jsonfile;
pub mod leases;
pub mod logdriver;
pub mod mount;
mod remote;
pub mod restart;
pub mod spec;
pub mod tasks;
pub mod transfer;
pub mod unpack;
pub mod volumes;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use berth_proto::containerd::services::{
    containers::v1::containers_client::ContainersClient,
    content::v1::content_client::ContentClient, diff::v1::diff_client::DiffClient,
    events::v1::events_client::EventsClient, images::v1::images_client::ImagesClient,
    introspection::v1::introspection_client::IntrospectionClient,
    leases::v1::leases_client::LeasesClient, namespaces::v1::namespaces_client::NamespacesClient,
    snapshots::v1::snapshots_client::SnapshotsClient, tasks::v1::tasks_client::TasksClient,
    version::v1::version_client::VersionClient,
};
use berth_wellknown::label;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::cli::GlobalOpts;
use crate::error::CtrError;

/// gRPC metadata key carrying the namespace (containerd `pkg/namespaces/grpc.go`).
pub const NAMESPACE_HEADER: &str = "containerd-namespace";
/// gRPC metadata key carrying the lease id (containerd `leases/grpc.go`).
pub const LEASE_HEADER: &str = "containerd-lease";
/// ctr's maximum gRPC message size (16 MiB).
const MAX_MESSAGE: usize = 16 << 20;
/// Snapshotter used when neither the flag nor the namespace label names one.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

/// A connection being made.
type Connecting<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Channel, tonic::transport::Error>> + Send + 'a>,
>;

/// A connected client: channel plus the namespace (and optional lease) every request carries.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    /// The namespace sent in `containerd-namespace`.
    pub namespace: String,
    lease: Option<String>,
}

macro_rules! service {
    ($name:ident, $ty:ident) => {
        /// A client of the service, on the shared channel.
        pub fn $name(&self) -> $ty<Channel> {
            $ty::new(self.channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE)
        }
    };
}

impl Client {
    /// Connects to the daemon at `opts.address()`: a unix socket (a `unix://` prefix is
    /// accepted) or `tcp://host:port`, over TLS when `--tlscacert` (and for client
    /// authentication `--tlscert` and `--tlskey`) are given.
    pub async fn connect(opts: &GlobalOpts) -> Result<Self> {
        let address = opts.address();
        let endpoint = Endpoint::try_from("http://[::]:50051")?
            .connect_timeout(opts.connect_timeout)
            .tcp_nodelay(true);
        let connecting = match address.strip_prefix("tcp://") {
            Some(host_port) => {
                let tls = remote::tls_connector(opts)?;
                let host_port = host_port.to_owned();
                Box::pin(endpoint.connect_with_connector(tower::service_fn(move |_| {
                    remote::connect(host_port.clone(), tls.clone())
                }))) as Connecting<'_>
            }
            None => {
                if opts.tlscacert.is_some() || opts.tlscert.is_some() || opts.tlskey.is_some() {
                    anyhow::bail!("--tlscacert, --tlscert and --tlskey need a tcp:// --address");
                }
                let path = PathBuf::from(address.strip_prefix("unix://").unwrap_or(&address));
                Box::pin(endpoint.connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                })))
            }
        };
        let limit = opts.connect_timeout.max(Duration::from_millis(100));
        let channel = match tokio::time::timeout(limit, connecting).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(err)) => {
                let cause = std::error::Error::source(&err)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| err.to_string());
                return Err(CtrError::Connect { address, cause }.into());
            }
            Err(_) => {
                return Err(CtrError::Connect {
                    address,
                    cause: format!("timed out after {limit:?}"),
                }
                .into())
            }
        };
        Ok(Self {
            channel,
            namespace: opts.namespace.clone(),
            lease: None,
        })
    }

    /// The same connection with every request also carrying `containerd-lease: <id>`.
    pub fn with_lease(&self, lease: &str) -> Self {
        Self {
            lease: Some(lease.to_owned()),
            ..self.clone()
        }
    }

    /// The channel to the daemon (for clients built elsewhere, like the transfer proxies).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Wraps `msg` in a request with the namespace (and lease) metadata.
    pub fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Ok(ns) = MetadataValue::try_from(self.namespace.as_str()) {
            req.metadata_mut().insert(NAMESPACE_HEADER, ns);
        }
        if let Some(lease) = &self.lease {
            if let Ok(value) = MetadataValue::try_from(lease.as_str()) {
                req.metadata_mut().insert(LEASE_HEADER, value);
            }
        }
        req
    }

    service!(containers, ContainersClient);
    service!(content, ContentClient);
    service!(diff, DiffClient);
    service!(events, EventsClient);
    service!(images, ImagesClient);
    service!(introspection, IntrospectionClient);
    service!(leases, LeasesClient);
    service!(namespaces, NamespacesClient);
    service!(snapshots, SnapshotsClient);
    service!(tasks, TasksClient);
    service!(version, VersionClient);

    /// The snapshotter to use: `flag` when set, else the namespace's
    /// `containerd.io/defaults/snapshotter` label, else `overlayfs` (ctr's rule).
    pub async fn snapshotter(&self, flag: Option<&str>) -> Result<String> {
        if let Some(name) = flag.filter(|s| !s.is_empty()) {
            return Ok(name.to_owned());
        }
        use berth_proto::containerd::services::namespaces::v1::GetNamespaceRequest;
        let resp = self
            .namespaces()
            .get(self.req(GetNamespaceRequest {
                name: self.namespace.clone(),
            }))
            .await;
        if let Ok(resp) = resp {
            if let Some(name) = resp
                .into_inner()
                .namespace
                .and_then(|ns| ns.labels.get(label::DEFAULT_SNAPSHOTTER).cloned())
                .filter(|s| !s.is_empty())
            {
                return Ok(name);
            }
        }
        Ok(DEFAULT_SNAPSHOTTER.to_owned())
    }
}
