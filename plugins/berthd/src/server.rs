//! The daemon's life: take the root lock, load the plugins, bind the socket, serve every gRPC
//! plugin until SIGTERM or SIGINT (retrying those that failed to load), then shut down cleanly.

use std::fs::{DirBuilder, File, OpenOptions};
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use anyhow::{bail, Context};
use berth_core::events::Exchange;
use berth_core::metadata::MetadataStore;
use berth_registry::{types, Backoff, Config, Instance, Plugins, Registry};
use berth_services::router::ServiceTable;
use berth_services::ttrpc_events::serve_ttrpc_events;
use berth_services::GrpcService;
use nix::fcntl::{Flock, FlockArg};
use tokio::net::UnixListener;
use tokio_stream::StreamExt;

use crate::authority::AuthorityFix;

/// The wait before the first retry of the plugins that failed to load; it doubles after each
/// failed retry, up to [`RETRY_LONGEST_WAIT`].
const RETRY_FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait between two retries of the plugins that failed to load.
const RETRY_LONGEST_WAIT: Duration = Duration::from_secs(30);
/// Name of the lock file under the root.
const LOCK_FILE: &str = "berthd.lock";
/// How long calls already answering may take to finish once a termination signal came, before
/// they are cut.
const CALL_GRACE: Duration = Duration::from_millis(100);
/// How long blocking jobs (a file write, a database flush) may take to finish their step at
/// exit.
const BLOCKING_GRACE: Duration = Duration::from_millis(500);
/// How long the daemon goes without calls before it gives back the pages the last calls made
/// resident (see [`trim_when_idle`]).
const IDLE_AFTER: Duration = Duration::from_millis(500);
/// Allocator arenas: the RPCs run on one thread, the blocking pool's jobs are short.
const MALLOC_ARENAS: u16 = 2;

/// Runs the daemon until a termination signal.
pub fn run(config: Config, registry: Registry) -> anyhow::Result<()> {
    create_dir(&config.root)?;
    create_dir(&config.state)?;
    let _lock = lock_root(&config.root)?;
    berth_resident::limit_arenas(MALLOC_ARENAS);
    // One thread for the RPCs: every filesystem, database and decompression job already runs on
    // the blocking pool, so the async side only moves protobufs. Measured against the
    // multi-threaded scheduler: ~15 % less CPU per Version call and half the p99 latency,
    // with lifecycle and unpack figures unchanged (docs/PERFORMANCE.md).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("berthd")
        .build()
        .context("start the async runtime")?;
    let (result, plugins) = runtime.block_on(serve(config, registry))?;
    // Dropping the runtime ends every connection and call still open, as grpc-go's Server.Stop
    // does: clients see the transport close. Blocking jobs get a moment to finish their step.
    runtime.shutdown_timeout(BLOCKING_GRACE);
    flush_metadata(&plugins);
    // Plugins (databases, shim connections) close after the servers and their calls are gone.
    // Shims are not stopped: containers keep running and the next berthd reconnects to them.
    drop(plugins);
    tracing::info!("berthd stopped");
    result
}

fn create_dir(path: &Path) -> anyhow::Result<()> {
    // 0711: others may traverse to what a container's user must reach, but not list.
    DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(path)
        .with_context(|| format!("create {}", path.display()))
}

/// Holds an exclusive flock on `<root>/berthd.lock` for the daemon's life, so that two daemons
/// never share one root.
fn lock_root(root: &Path) -> anyhow::Result<Flock<File>> {
    let path = root.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open lock file {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
            "root {} is in use by another berthd (lock {} is held)",
            root.display(),
            path.display()
        ),
        Err((_, e)) => Err(e).with_context(|| format!("lock {}", path.display())),
    }
}

/// Binds a unix socket for a server: a live socket is an error, a stale one is replaced.
fn bind(address: &Path, uid: u32, gid: u32) -> anyhow::Result<UnixListener> {
    if let Some(parent) = address.parent() {
        create_dir(parent)?;
    }
    if address.symlink_metadata().is_ok() {
        if std::os::unix::net::UnixStream::connect(address).is_ok() {
            bail!(
                "address {} is already in use by a running server",
                address.display()
            );
        }
        tracing::info!(address = %address.display(), "removing stale socket");
        std::fs::remove_file(address)
            .with_context(|| format!("remove stale socket {}", address.display()))?;
    }
    let listener =
        UnixListener::bind(address).with_context(|| format!("listen on {}", address.display()))?;
    std::fs::set_permissions(address, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", address.display()))?;
    nix::unistd::chown(
        address,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .with_context(|| format!("chown {}", address.display()))?;
    Ok(listener)
}

/// The gRPC server's future, with or without the metrics layer.
type Serving = Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>>>>;

/// Serves until a termination signal; returns how serving ended and the loaded plugins, which
/// the caller closes once the runtime is gone.
async fn serve(
    config: Config,
    registry: Registry,
) -> anyhow::Result<(anyhow::Result<()>, Plugins)> {
    let shutdown = shutdown_signal();
    // Bound before anything starts, so that an address in use stops start-up.
    let metrics_listener = if config.metrics.address.is_empty() {
        None
    } else {
        Some(berth_metrics::Listener::bind(&config.metrics.address)?)
    };
    let plugins = {
        let config = config.clone();
        // Plugin init does blocking I/O (opening databases, scanning directories).
        tokio::task::spawn_blocking(move || registry.load(&config))
            .await
            .context("plugin loading panicked")??
    };
    // Every call is routed at call time, so that services whose plugin loads on a retry are
    // served from then on, and those whose plugin failed say why.
    let table = ServiceTable::new(plugins.inventory().clone());
    for (service, plugin) in plugins.services() {
        table.declare(service, plugin);
    }
    for (id, instance) in plugins.get_all(types::GRPC) {
        install(&table, &id, instance);
    }
    let address: PathBuf = config.grpc.address.clone();
    let remote = crate::remote::Remote::listen(&config.grpc).await?;
    let listener = bind(&address, config.grpc.uid, config.grpc.gid)?;
    // Shims forward their events to the ttrpc socket.
    let ttrpc_address = config.ttrpc_address();
    let ttrpc_listener = bind(&ttrpc_address, config.grpc.uid, config.grpc.gid)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let exporter = metrics_listener
        .as_ref()
        .map(|_| berth_metrics::Exporter::new(&config.metrics, plugins.clone()));
    let metrics_server = match (metrics_listener, &exporter) {
        (Some(listener), Some(exporter)) => {
            let mut stop = stop_rx.clone();
            Some(tokio::spawn(berth_metrics::serve(
                listener,
                exporter.clone(),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )))
        }
        _ => None,
    };
    let retry = (plugins.failed() > 0)
        .then(|| tokio::spawn(retry_failed_plugins(plugins.clone(), table.clone())));
    let ttrpc = match plugins
        .get_all(types::EVENT)
        .into_iter()
        .find_map(|(_, i)| i.downcast::<Exchange>().ok())
    {
        Some(exchange) => {
            let mut stop = stop_rx.clone();
            Some(tokio::spawn(serve_ttrpc_events(
                ttrpc_listener,
                exchange,
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )))
        }
        None => {
            tracing::warn!("no event exchange loaded; shim events are not received");
            None
        }
    };
    tracing::info!(address = %address.display(), ttrpc = %ttrpc_address.display(), "serving");
    // Plugin start-up code will not run again; see berth_resident for why this pays.
    tokio::task::spawn_blocking(|| {
        let kib = berth_resident::release_idle_pages();
        tracing::debug!(kib, "released start-up pages");
    });
    let trimmer = tokio::spawn(trim_when_idle(table.clone()));
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    // Every connection goes through the authority fix (see `authority`).
    let incoming =
        crate::remote::incoming(listener, remote).map(|conn| conn.map(AuthorityFix::new));
    let builder = tonic::transport::Server::builder()
        // Every call in its own span, with its service, method, namespace, ids and status.
        .layer(berth_services::rpc_span::RpcSpanLayer);
    let signalled = async move {
        let _ = signalled_rx.await;
    };
    // Without a metrics address the calls go through nothing more than before.
    let server: Serving = match &exporter {
        Some(exporter) => Box::pin(
            builder
                .layer(exporter.rpc_layer())
                .serve_with_incoming_shutdown(table.service(), incoming, signalled),
        ),
        None => {
            Box::pin(builder.serve_with_incoming_shutdown(table.service(), incoming, signalled))
        }
    };
    tokio::pin!(server);
    // Both sockets listen (connections queue until the server is first polled, just below).
    crate::notify::ready();
    // tonic's shutdown is graceful: it stops accepting and waits for every open call, which an
    // Events.Subscribe or a Tasks.Wait of a container that never exits would make forever. So
    // the signal stops accepting, and after a short grace the calls still open are cut.
    let result = tokio::select! {
        result = &mut server => result,
        () = shutdown => {
            crate::notify::stopping();
            let _ = signalled_tx.send(());
            let _ = stop_tx.send(true);
            match tokio::time::timeout(CALL_GRACE, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::info!("ending the calls still open");
                    Ok(())
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    trimmer.abort();
    if let Some(metrics_server) = metrics_server {
        match tokio::time::timeout(CALL_GRACE, metrics_server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "metrics server"),
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics server task"),
            Ok(Ok(Ok(()))) | Err(_) => {}
        }
    }
    if let Some(retry) = retry {
        // A pass already on the blocking pool finishes there; its result is not served.
        retry.abort();
    }
    if let Some(ttrpc) = ttrpc {
        match tokio::time::timeout(CALL_GRACE, ttrpc).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "ttrpc server"),
            Ok(Err(e)) => tracing::warn!(error = %e, "ttrpc server task"),
            Ok(Ok(Ok(()))) | Err(_) => {}
        }
    }
    for socket in [&address, &ttrpc_address] {
        if let Err(e) = std::fs::remove_file(socket) {
            tracing::warn!(address = %socket.display(), error = %e, "remove socket");
        }
    }
    Ok((result.context("serve gRPC"), plugins))
}

/// Serves the services of a gRPC plugin that loaded.
fn install(table: &ServiceTable, id: &str, instance: Instance) {
    match instance.downcast::<GrpcService>() {
        Ok(svc) => table.install(&svc),
        Err(_) => tracing::warn!(id = %id, "grpc plugin did not return a service"),
    }
}

/// After every burst of calls followed by [`IDLE_AFTER`] without one, gives back what the calls
/// made resident: code and data pages of the binary (they fault back in from the page cache
/// when the next calls run) and the allocator's free memory. An idle daemon then holds about
/// what it held right after start-up, and is not woken up while no call comes.
async fn trim_when_idle(table: ServiceTable) {
    loop {
        table.went_idle(IDLE_AFTER).await;
        match tokio::task::spawn_blocking(berth_resident::release_idle_pages).await {
            Ok(kib) => tracing::trace!(kib, "released pages after calls"),
            Err(e) => tracing::debug!(error = %e, "releasing pages failed"),
        }
    }
}

/// Initialises the plugins that failed to load again, with back-off, until all have loaded, and
/// serves the gRPC services of those that come up: freeing the disk space whose lack failed the
/// metadata store is enough for the daemon to recover. Each pass runs on the blocking pool
/// (plugin init does blocking I/O).
async fn retry_failed_plugins(plugins: Plugins, table: ServiceTable) {
    let mut backoff = Backoff::new(RETRY_FIRST_WAIT, RETRY_LONGEST_WAIT);
    let mut waiting = plugins.failed();
    while waiting > 0 {
        let wait = backoff.next_delay();
        tracing::debug!(plugins = waiting, wait = ?wait, "retrying failed plugins after a wait");
        tokio::time::sleep(wait).await;
        let pass = plugins.clone();
        let started = match tokio::task::spawn_blocking(move || pass.retry_failed()).await {
            Ok(started) => started,
            Err(e) => {
                tracing::error!(error = %e, "retrying failed plugins panicked; no more retries");
                return;
            }
        };
        if !started.is_empty() {
            backoff.reset();
        }
        let snapshotter_came_up = started.iter().any(|p| p.plugin_type == types::SNAPSHOTTER);
        for plugin in started {
            if plugin.plugin_type == types::GRPC {
                install(&table, &plugin.id, plugin.instance);
            }
        }
        if snapshotter_came_up {
            // The collector keeps the snapshotters it started with; it must sweep this one too.
            berth_core::gc::plugin::use_loaded_snapshotters(&plugins);
        }
        waiting = plugins.failed();
    }
    tracing::info!("every failed plugin has loaded");
}

/// Makes the metadata durable before exit. Every mutating call already flushed before it
/// answered; this covers what background work (GC, lease expiry) changed since.
fn flush_metadata(plugins: &Plugins) {
    for (id, instance) in plugins.get_all(types::METADATA) {
        if let Ok(store) = instance.downcast::<MetadataStore>() {
            if let Err(e) = store.flush() {
                tracing::warn!(id = %id, error = %e, "flush metadata");
            }
        }
    }
}

/// Resolves at the first SIGTERM or SIGINT. The handlers are installed when this is called, not
/// when the future is first polled, so a signal that arrives while plugins load or the sockets
/// are bound is not lost to the default action (being killed).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}
