//! The daemonised shim: subreaper, exit monitor, event forwarder, and the ttrpc Task service
//! on the listener inherited as fd 3 (containerd `runtime/v2/shim/shim.go` `run`/`serve`).

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_ttrpc::Server;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::stat::Mode;

use crate::args::Args;
use crate::constants::{bundle, TTRPC_ADDRESS_ENV};
use crate::events::{Publisher, Sink};
use crate::reaper::{set_subreaper, Reaper};
use crate::service::{Shim, TaskService};

/// The listener's descriptor, as containerd's runc shim passes it.
const LISTENER_FD: i32 = 3;
/// How long an idle blocking-pool thread (mounts, file writes) stays for the next job.
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_millis(500);

/// Points stderr at the bundle's `log` FIFO, which the daemon reads; left alone if nobody
/// reads it (the open would block, so it is tried non-blocking).
fn redirect_stderr_to_log(dir: &Path) {
    let path = dir.join(bundle::LOG_FIFO);
    let Ok(fd) = open(
        &path,
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let _ = fcntl(&fd, FcntlArg::F_SETFL(OFlag::empty()));
    let mut stderr = std::io::stderr();
    // SAFETY: fd 2 is open (at least /dev/null) for the whole life of the process; dup2
    // replaces it atomically and the OwnedFd is not dropped here.
    let mut target = unsafe { OwnedFd::from_raw_fd(2) };
    let _ = nix::unistd::dup2(&fd, &mut target);
    std::mem::forget(target);
    let _ = std::io::Write::flush(&mut stderr);
}

/// Logs to stderr, that is the `log` FIFO. The daemon stops reading it when it deletes the
/// bundle, while this shim may still serve (a pod's other containers) and logs at least its exit:
/// such writes fail with EPIPE and are dropped, as containerd's shim drops them (it ignores
/// SIGPIPE). tracing-subscriber would otherwise report each failed write with `eprintln!`, which
/// panics on the same broken stderr: the request's task died unanswered and the shim exited 101.
fn init_logging(debug: bool) {
    let level = if debug { "debug" } else { "info" };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .log_internal_errors(false)
        .try_init();
}

/// Runs the shim server until Shutdown; returns only on setup failure.
pub fn run(args: &Args) -> std::io::Result<()> {
    let cwd = std::env::current_dir()?;
    redirect_stderr_to_log(&cwd);
    init_logging(args.debug);
    set_subreaper().map_err(std::io::Error::from)?;
    // One arena: the shim's threads take turns more than they compete, and each arena would
    // keep pages of its own resident for the container's whole life.
    berth_resident::limit_arenas(1);

    // One thread for the RPCs, the exit monitor and the I/O copies: the shim mostly waits, and
    // every blocking step (mounts, file writes) goes to the blocking pool, whose threads do not
    // linger. Each thread kept costs resident stack and allocator pages in every shim.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()?;
    runtime.block_on(async {
        let reaper = Reaper::new();
        reaper.run()?;
        let sink = Sink::choose(
            std::env::var(TTRPC_ADDRESS_ENV).ok(),
            &args.publish_binary,
            &args.address,
        );
        let publisher = Publisher::start(args.namespace.clone(), sink, reaper.clone());
        let shim = Shim::new(args.namespace.clone(), reaper, publisher.clone());
        shim.spawn_exit_loop();

        // SAFETY: `start` put the listening socket on fd 3 for us and nothing else owns it.
        let std_listener = unsafe { StdUnixListener::from_raw_fd(LISTENER_FD) };
        std_listener.set_nonblocking(true)?;
        // Taken now: the daemon removes the bundle (and its `address` file) right after Shutdown.
        let socket_path = std_listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf));
        let listener = tokio::net::UnixListener::from_std(std_listener)?;

        let mut server = Server::new();
        server.add_service(Arc::new(TaskService::new(shim.clone())));
        let mut shutdown = shim.shutdown_requested();
        tracing::info!(namespace = %args.namespace, id = %args.id, "shim serving");
        server
            .serve(listener, async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            })
            .await?;
        // Remove our socket so a later `start` does not find a dead one.
        if let Some(path) = socket_path {
            let _ = std::fs::remove_file(path);
        }
        publisher.flush(Duration::from_secs(3)).await;
        Ok::<_, std::io::Error>(())
    })?;
    tracing::info!("shim exiting");
    std::process::exit(0);
}
