//! The gRPC API under load: a compiled load generator (tonic clients over the unix socket, one
//! connection each) calling Version and Containers.List, with the daemon's CPU time per call
//! and the generator's own, to show the client is not the bottleneck.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use berth_proto::containerd::services::containers::v1::container::Runtime;
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_proto::containerd::services::containers::v1::{
    Container, CreateContainerRequest, ListContainersRequest,
};
use berth_proto::containerd::services::version::v1::version_client::VersionClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::{watch, Barrier};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use super::procfs;
use super::report::Report;
use super::servers::Server;
use super::stats::{percentile, Summary};
use crate::grpc::NAMESPACE_HEADER;

/// Concurrent clients, each on its own connection.
pub const CLIENTS: usize = 16;

/// Untimed calls each client makes before the measured window.
const WARMUP_CALLS: usize = 5;

/// The spec type containerd stores for OCI runtime specs.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// Containers.List's answer with each container left encoded (`repeated Container containers = 1`
/// read as `repeated bytes`, the same wire form). The load generator counts the containers
/// without decoding them: decoding 1,000 containers cost it ~400 µs per call against berthd's
/// ~100 µs of serving, so the generator, not the daemon, bounded the requests/s. The warm-up
/// calls decode the whole answer with the generated client.
#[derive(Clone, PartialEq, prost::Message)]
struct ShallowListResponse {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    containers: Vec<bytes::Bytes>,
}

const LIST_PATH: &str = "/containerd.services.containers.v1.Containers/List";

/// Containers.List through [`ShallowListResponse`]; returns how many containers came back.
async fn list_shallow(
    channel: Channel,
    request: Request<ListContainersRequest>,
) -> Result<usize, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<ListContainersRequest, ShallowListResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(LIST_PATH);
    let answer = grpc.unary(request, path, codec).await?;
    Ok(answer.get_ref().containers.len())
}

/// Connects a channel to the unix socket at `path`.
async fn connect(path: PathBuf) -> Result<Channel> {
    let shown = path.display().to_string();
    Endpoint::try_from("http://[::]:50051")
        .context("the placeholder URI is valid")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| format!("connect to {shown}"))
}

/// `message` with the namespace header.
fn namespaced<T>(namespace: &str, message: T) -> Result<Request<T>> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        NAMESPACE_HEADER,
        namespace.parse().context("namespace header value")?,
    );
    Ok(request)
}

/// Whether a call is one of the untimed warm-up calls (which may check more) or a measured one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Warmup,
    Measured,
}

/// What one load run measured.
#[derive(Debug, Clone, Copy)]
struct LoadResult {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    daemon_cpu_us: f64,
    client_cpu_us: f64,
}

/// Runs `call` from [`CLIENTS`] connections for `duration` against the daemon at `address`
/// (process `pid`).
async fn drive<F, Fut>(address: &Path, pid: u32, duration: Duration, call: F) -> Result<LoadResult>
where
    F: Fn(Channel, Phase) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send,
{
    let call = Arc::new(call);
    let ready = Arc::new(Barrier::new(CLIENTS + 1));
    let (go, deadline) = watch::channel(None::<Instant>);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let channel = connect(address.to_owned()).await?;
        let (call, ready, mut deadline) = (call.clone(), ready.clone(), deadline.clone());
        clients.push(tokio::spawn(async move {
            for _ in 0..WARMUP_CALLS {
                call(channel.clone(), Phase::Warmup).await?;
            }
            ready.wait().await;
            let end = loop {
                if let Some(end) = *deadline.borrow_and_update() {
                    break end;
                }
                if deadline.changed().await.is_err() {
                    return Ok(Vec::new());
                }
            };
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                call(channel.clone(), Phase::Measured).await?;
                latencies.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Ok::<_, Status>(latencies)
        }));
    }
    drop(deadline);
    ready.wait().await;
    let daemon_before = procfs::cpu_ticks(pid)?;
    let client_before = procfs::self_cpu_seconds()?;
    let start = Instant::now();
    go.send(Some(start + duration))
        .map_err(|_| anyhow!("every load client has gone"))?;
    let mut latencies = Vec::new();
    for client in clients {
        let lat = client
            .await
            .context("load client task")?
            .map_err(|s| anyhow!("call failed: {s}"))?;
        latencies.extend(lat);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let daemon_secs = (procfs::cpu_ticks(pid)? - daemon_before) as f64 / procfs::ticks_per_second();
    let client_secs = procfs::self_cpu_seconds()? - client_before;
    latencies.sort_by(f64::total_cmp);
    let calls = latencies.len() as f64;
    Ok(LoadResult {
        rps: calls / elapsed,
        p50_us: percentile(&latencies, 50.0).unwrap_or(f64::NAN),
        p99_us: percentile(&latencies, 99.0).unwrap_or(f64::NAN),
        daemon_cpu_us: daemon_secs * 1e6 / calls,
        client_cpu_us: client_secs * 1e6 / calls,
    })
}

/// Creates `count` containers in `namespace` with Containers.Create: a minimal spec, no
/// snapshot, no task.
async fn create_containers(address: &Path, namespace: &str, count: usize) -> Result<()> {
    let mut lanes = Vec::new();
    for lane in 0..CLIENTS {
        let mut client = ContainersClient::new(connect(address.to_owned()).await?);
        let namespace = namespace.to_owned();
        lanes.push(tokio::spawn(async move {
            for i in (lane..count).step_by(CLIENTS) {
                let container = Container {
                    id: format!("api-{i:05}"),
                    runtime: Some(Runtime {
                        name: "io.containerd.runc.v2".to_owned(),
                        options: None,
                    }),
                    spec: Some(prost_types::Any {
                        type_url: SPEC_TYPE_URL.to_owned(),
                        value: br#"{"ociVersion":"1.0.2-dev"}"#.to_vec(),
                    }),
                    ..Container::default()
                };
                let request = namespaced(
                    &namespace,
                    CreateContainerRequest {
                        container: Some(container),
                    },
                )?;
                client
                    .create(request)
                    .await
                    .map_err(|s| anyhow!("Containers.Create api-{i:05}: {s}"))?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for lane in lanes {
        lane.await.context("create task")??;
    }
    Ok(())
}

/// A metric id suffix and the figure of a load run it reports.
type LoadField = (&'static str, fn(&LoadResult) -> f64);

/// Records a per-daemon series of load results under `prefix`.
fn record(report: &mut Report, prefix: &str, runs: &[Vec<LoadResult>; 2]) {
    let series = |k: usize, f: fn(&LoadResult) -> f64| -> Option<Summary> {
        Summary::of(&runs[k].iter().map(f).collect::<Vec<_>>())
    };
    let fields: [LoadField; 5] = [
        ("rps", |r| r.rps),
        ("p50_us", |r| r.p50_us),
        ("p99_us", |r| r.p99_us),
        ("daemon_cpu_us", |r| r.daemon_cpu_us),
        ("client_cpu_us", |r| r.client_cpu_us),
    ];
    for (suffix, f) in fields {
        let id = super::report::METRICS
            .iter()
            .map(|m| m.id)
            .find(|id| *id == format!("{prefix}_{suffix}"))
            .expect("every API metric is in the catalogue");
        report.set(id, series(0, f), series(1, f));
    }
}

/// Version and Containers.List (over `containers` containers) under load, the daemons alternating
/// `runs` times, each run lasting `duration`.
pub fn measure(
    report: &mut Report,
    servers: &[Server; 2],
    namespace: &str,
    containers: usize,
    duration: Duration,
    runs: usize,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the load generator runtime")?;
    rt.block_on(async {
        let mut version = [Vec::new(), Vec::new()];
        for _ in 0..runs {
            for (server, out) in servers.iter().zip(version.iter_mut()) {
                let result = drive(
                    server.address(),
                    server.pid()?,
                    duration,
                    |ch, _| async move { VersionClient::new(ch).version(()).await.map(drop) },
                )
                .await
                .with_context(|| format!("Version load on {}", server.kind()))?;
                out.push(result);
            }
        }
        record(report, "version", &version);

        for server in servers {
            create_containers(server.address(), namespace, containers)
                .await
                .with_context(|| format!("create {containers} containers on {}", server.kind()))?;
        }
        let mut list = [Vec::new(), Vec::new()];
        for _ in 0..runs {
            for (server, out) in servers.iter().zip(list.iter_mut()) {
                let ns: Arc<str> = Arc::from(namespace);
                let result = drive(
                    server.address(),
                    server.pid()?,
                    duration,
                    move |ch, phase| {
                        let ns = ns.clone();
                        async move {
                            let request = namespaced(&ns, ListContainersRequest::default())
                                .map_err(|e| Status::internal(e.to_string()))?;
                            let listed = match phase {
                                Phase::Warmup => ContainersClient::new(ch)
                                    .list(request)
                                    .await?
                                    .into_inner()
                                    .containers
                                    .len(),
                                Phase::Measured => list_shallow(ch, request).await?,
                            };
                            if listed != containers {
                                return Err(Status::internal(format!(
                                    "listed {listed} containers, expected {containers}"
                                )));
                            }
                            Ok(())
                        }
                    },
                )
                .await
                .with_context(|| format!("Containers.List load on {}", server.kind()))?;
                out.push(result);
            }
        }
        record(report, "list", &list);
        Ok(())
    })
}
