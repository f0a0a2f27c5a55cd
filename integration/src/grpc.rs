//! gRPC connections to a [`Daemon`] over its unix socket.

use std::path::{Path, PathBuf};

use berth_proto::containerd::services::containers::v1::{
    container, Container, CreateContainerRequest,
};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

use crate::daemon::Daemon;

/// The gRPC metadata key carrying the namespace (containerd `pkg/namespaces/grpc.go`).
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// Connects a tonic channel to the daemon's unix socket; panics if the connection fails.
///
/// The URI is a placeholder required by tonic: the connector ignores it and dials the socket.
pub async fn channel(daemon: &Daemon) -> Channel {
    channel_at(daemon.address()).await
}

/// Like [`channel`] for any daemon's socket (a real containerd too).
pub async fn channel_at(address: &Path) -> Channel {
    let path: PathBuf = address.to_owned();
    let shown = path.display().to_string();
    Endpoint::try_from("http://[::]:50051")
        .expect("the placeholder URI is valid")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {shown}: {e}"))
}

/// `CreateContainerRequest` of a container record `id` with runc v2 as its runtime and an empty
/// spec: enough for the Containers service, which neither reads the spec nor starts anything.
pub fn minimal_container(id: &str) -> CreateContainerRequest {
    CreateContainerRequest {
        container: Some(Container {
            id: id.into(),
            runtime: Some(container::Runtime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                value: b"{}".to_vec(),
            }),
            ..Default::default()
        }),
    }
}

/// Wraps `message` in a request carrying the `containerd-namespace` header, as every namespaced
/// call from `ctr` does. Panics if `namespace` is not a valid header value.
pub fn namespaced<T>(namespace: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = namespace
        .parse()
        .unwrap_or_else(|e| panic!("namespace {namespace:?} is not a header value: {e}"));
    request.metadata_mut().insert(NAMESPACE_HEADER, value);
    request
}
