//! `berth-native-snapshotter`: the native snapshotter served over containerd's Snapshots gRPC
//! API on a unix socket, for use as an external (proxy) snapshotter:
//! `[proxy_plugins.NAME] type = "snapshot" address = "<socket>"`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use berth_proto::containerd::services::snapshots::v1::snapshots_server::SnapshotsServer;
use berth_snapshotters::native::NativeSnapshotter;
use berth_snapshotters::proxy::SnapshotterService;
use berth_snapshotters::Snapshotter;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

fn usage() -> ExitCode {
    eprintln!("usage: berth-native-snapshotter --root DIR --address SOCKET");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let mut root = None;
    let mut address = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => root = args.next().map(PathBuf::from),
            "--address" => address = args.next().map(PathBuf::from),
            _ => return usage(),
        }
    }
    let (Some(root), Some(address)) = (root, address) else {
        return usage();
    };
    match run(root, address) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-native-snapshotter: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(root: PathBuf, address: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let snapshotter: Arc<dyn Snapshotter> = Arc::new(NativeSnapshotter::new(&root)?);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        if address.exists() {
            std::fs::remove_file(&address)?;
        }
        let listener = UnixListener::bind(&address)?;
        let service = SnapshotsServer::new(SnapshotterService::new(snapshotter));
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    })
}
