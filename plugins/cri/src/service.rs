//! What every CRI call works with: the daemon's stores and runtime, the CRI config, and the
//! CRI's own sandbox and container records.

use std::path::PathBuf;
use std::sync::Arc;

use berth_core::events::Exchange;
use berth_core::gc::GcScheduler;
use berth_core::namespaced_content::NamespacedContent;
use berth_core::namespaced_snapshots::NamespacedSnapshots;
use berth_core::transfer_local::LocalStores;
use berth_core::MetadataStore;
use berth_runtime::TaskManager;

use crate::config::CriConfig;
use crate::store::Stores;

/// The namespace every CRI object lives in, as containerd's CRI plugin.
pub const K8S_NAMESPACE: &str = "k8s.io";

/// The CRI plugin's shared state; cheap to clone.
#[derive(Clone, Debug)]
pub struct Cri(pub Arc<CriInner>);

impl std::ops::Deref for Cri {
    type Target = CriInner;

    fn deref(&self) -> &CriInner {
        &self.0
    }
}

/// See [`Cri`].
#[derive(Debug)]
pub struct CriInner {
    /// The `[plugins."io.containerd.grpc.v1.cri"]` section.
    pub config: CriConfig,
    /// `<root>/io.containerd.grpc.v1.cri`: container status files, sandbox files.
    pub root: PathBuf,
    /// `<state>/io.containerd.grpc.v1.cri`: pinned network namespaces, log fifos.
    pub state: PathBuf,
    /// The daemon's metadata store (containers, images, leases).
    pub meta: Arc<MetadataStore>,
    /// Snapshots through the metadata store.
    pub snapshots: NamespacedSnapshots,
    /// Content through the metadata store.
    pub content: NamespacedContent,
    /// The pull stores, unpacking into the configured snapshotter.
    pub transfer: LocalStores,
    /// Live tasks (runtime v2 manager).
    pub tasks: Arc<TaskManager>,
    /// The daemon's event exchange (task exits).
    pub events: Arc<Exchange>,
    /// The garbage collector (RemoveImage collects right away, as containerd's CRI does);
    /// `None` when the gc plugin is not loaded.
    pub gc: Option<Arc<GcScheduler>>,
    /// The CRI's own sandbox and container records.
    pub store: Stores,
    /// The streaming server (Exec, Attach and PortForward URLs).
    pub stream: crate::streaming::server::StreamServer,
    /// What image record targets resolve to, read once per digest.
    pub described: crate::image::lookup::DescribedTargets,
}
