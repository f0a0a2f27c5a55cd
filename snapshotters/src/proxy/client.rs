//! The client half: a snapshotter whose work happens in another process.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use berth_errdefs::grpc;
use berth_filters::Filter;
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::services::snapshots::v1::{
    CleanupRequest, CommitSnapshotRequest, ListSnapshotsRequest, MountsRequest,
    PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest, UpdateSnapshotRequest,
    UsageRequest, ViewSnapshotRequest,
};
use hyper_util::rt::TokioIo;
use tokio::runtime::Handle;
use tonic::transport::{Channel, Endpoint};

use super::convert::{info_from_proto, info_to_proto};
use crate::error::SnapshotError;
use crate::snapshotter::{Info, Mount, Snapshotter, Usage};

/// A snapshotter served by another process (containerd's proxy plugins). The remote is told
/// its own name in every request's `snapshotter` field, as containerd does.
#[derive(Debug, Clone)]
pub struct ProxySnapshotter {
    name: String,
    address: PathBuf,
    client: SnapshotsClient<Channel>,
    runtime: Handle,
}

fn remote(op: &'static str) -> impl FnOnce(tonic::Status) -> SnapshotError {
    move |s| SnapshotError::Remote {
        op,
        kind: grpc::to_native(s.code()),
        message: s.message().to_owned(),
    }
}

impl ProxySnapshotter {
    /// A proxy to the Snapshots API served at `address`; connects lazily, on the first call.
    /// Must be created inside a tokio runtime, whose handle it keeps.
    pub fn new(name: &str, address: &Path) -> Result<ProxySnapshotter, SnapshotError> {
        let runtime = Handle::try_current().map_err(|e| SnapshotError::Unsupported {
            reason: format!("proxy snapshotter {name} needs a tokio runtime: {e}"),
        })?;
        let path = address.to_owned();
        let channel = Endpoint::from_static("http://[::]:50051").connect_with_connector_lazy(
            tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }),
        );
        Ok(ProxySnapshotter {
            name: name.to_owned(),
            address: address.to_owned(),
            client: SnapshotsClient::new(channel),
            runtime,
        })
    }

    /// The socket of the remote.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// Runs a call to completion. The trait is synchronous and its callers sit on the blocking
    /// pool, where blocking on the runtime is allowed.
    fn block<T>(&self, f: impl Future<Output = T>) -> T {
        self.runtime.block_on(f)
    }
}

impl Snapshotter for ProxySnapshotter {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        let mut c = self.client.clone();
        let req = StatSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
        };
        let resp = self.block(c.stat(req)).map_err(remote("stat"))?;
        Ok(info_from_proto(resp.into_inner().info.unwrap_or_default()))
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info, SnapshotError> {
        let mut c = self.client.clone();
        let req = UpdateSnapshotRequest {
            snapshotter: self.name.clone(),
            info: Some(info_to_proto(info)),
            update_mask: Some(prost_types::FieldMask {
                paths: fieldpaths.to_vec(),
            }),
        };
        let resp = self.block(c.update(req)).map_err(remote("update"))?;
        Ok(info_from_proto(resp.into_inner().info.unwrap_or_default()))
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let mut c = self.client.clone();
        let req = UsageRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
        };
        let u = self
            .block(c.usage(req))
            .map_err(remote("usage"))?
            .into_inner();
        Ok(Usage {
            size: u.size,
            inodes: u.inodes,
        })
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let mut c = self.client.clone();
        let req = MountsRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
        };
        let resp = self.block(c.mounts(req)).map_err(remote("mounts"))?;
        Ok(resp
            .into_inner()
            .mounts
            .into_iter()
            .map(Mount::from)
            .collect())
    }

    fn prepare(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        let mut c = self.client.clone();
        let req = PrepareSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
            parent: parent.unwrap_or_default().to_owned(),
            labels: labels.into_iter().collect(),
        };
        let resp = self.block(c.prepare(req)).map_err(remote("prepare"))?;
        Ok(resp
            .into_inner()
            .mounts
            .into_iter()
            .map(Mount::from)
            .collect())
    }

    fn view(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        let mut c = self.client.clone();
        let req = ViewSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
            parent: parent.unwrap_or_default().to_owned(),
            labels: labels.into_iter().collect(),
        };
        let resp = self.block(c.view(req)).map_err(remote("view"))?;
        Ok(resp
            .into_inner()
            .mounts
            .into_iter()
            .map(Mount::from)
            .collect())
    }

    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError> {
        let mut c = self.client.clone();
        let req = CommitSnapshotRequest {
            snapshotter: self.name.clone(),
            name: name.to_owned(),
            key: key.to_owned(),
            labels: labels.into_iter().collect(),
        };
        self.block(c.commit(req)).map_err(remote("commit"))?;
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        let mut c = self.client.clone();
        let req = RemoveSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
        };
        self.block(c.remove(req)).map_err(remote("remove"))?;
        Ok(())
    }

    fn walk(&self, filter: &Filter) -> Result<Vec<Info>, SnapshotError> {
        let mut c = self.client.clone();
        let req = ListSnapshotsRequest {
            snapshotter: self.name.clone(),
            filters: Vec::new(),
        };
        self.block(async move {
            let mut stream = c.list(req).await.map_err(remote("list"))?.into_inner();
            let mut out = Vec::new();
            while let Some(msg) = stream.message().await.map_err(remote("list"))? {
                out.extend(
                    msg.info
                        .into_iter()
                        .map(info_from_proto)
                        .filter(|i| filter.matches(i)),
                );
            }
            Ok(out)
        })
    }

    fn cleanup(&self) -> Result<(), SnapshotError> {
        let mut c = self.client.clone();
        let req = CleanupRequest {
            snapshotter: self.name.clone(),
        };
        match self.block(c.cleanup(req)) {
            Ok(_) => Ok(()),
            // Optional for remotes, as in containerd.
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(()),
            Err(s) => Err(remote("cleanup")(s)),
        }
    }
}
