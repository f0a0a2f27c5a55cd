//! The proxy passes the conformance suite: a native snapshotter served by the proxy's server
//! half on a temporary socket, driven through the client half, as a daemon drives an external
//! snapshotter.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use berth_filters::Filter;
use berth_proto::containerd::services::snapshots::v1::snapshots_server::SnapshotsServer;
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::UnixListenerStream;

use super::{ProxySnapshotter, SnapshotterService};
use crate::error::SnapshotError;
use crate::native::NativeSnapshotter;
use crate::snapshotter::{Info, Mount, Snapshotter, Usage};

/// A native snapshotter on `root` served on a socket of its own, and the proxy client to it.
/// Dropping it stops the server and closes the native snapshotter, so that the suite's
/// `reopen` serves the same root afresh, as after a restart of the external process.
#[derive(Debug)]
struct Served {
    proxy: ProxySnapshotter,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    _socket_dir: tempfile::TempDir,
}

impl Served {
    fn start(root: &Path) -> Served {
        let native: Arc<dyn Snapshotter> =
            Arc::new(NativeSnapshotter::new(root).expect("open native"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build a runtime for the server");
        // A short path of its own: unix socket paths are limited to 108 bytes.
        let socket_dir = tempfile::Builder::new()
            .prefix("proxy-")
            .tempdir()
            .expect("create the socket dir");
        let socket = socket_dir.path().join("snapshotter.sock");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = {
            let _entered = runtime.enter();
            let listener = UnixListener::bind(&socket).expect("bind the snapshotter socket");
            tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(SnapshotsServer::new(SnapshotterService::new(native)))
                    .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("serve the snapshotter");
            })
        };
        let proxy = {
            let _entered = runtime.enter();
            ProxySnapshotter::new("native-proxy", &socket).expect("create the proxy")
        };
        Served {
            proxy,
            stop: Some(stop),
            server: Some(server),
            runtime: Some(runtime),
            _socket_dir: socket_dir,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let (Some(runtime), Some(server)) = (self.runtime.take(), self.server.take()) {
            // The server drops the native snapshotter once it has stopped.
            let _ = runtime.block_on(server);
            runtime.shutdown_background();
        }
    }
}

impl Snapshotter for Served {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        self.proxy.stat(key)
    }

    fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info, SnapshotError> {
        self.proxy.update(info, fieldpaths)
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        self.proxy.usage(key)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        self.proxy.mounts(key)
    }

    fn prepare(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.proxy.prepare(key, parent, labels)
    }

    fn view(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.proxy.view(key, parent, labels)
    }

    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError> {
        self.proxy.commit(name, key, labels)
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        self.proxy.remove(key)
    }

    fn walk(&self, filter: &Filter) -> Result<Vec<Info>, SnapshotError> {
        self.proxy.walk(filter)
    }

    fn cleanup(&self) -> Result<(), SnapshotError> {
        self.proxy.cleanup()
    }
}

fn make(root: &Path) -> Arc<dyn Snapshotter> {
    Arc::new(Served::start(root))
}

crate::snapshotter_suite!(make);
