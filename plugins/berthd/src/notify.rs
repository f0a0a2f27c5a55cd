//! The systemd readiness protocol (`sd_notify(3)`): when systemd starts berthd with
//! `Type=notify` it sets `NOTIFY_SOCKET` to a unix datagram socket, and berthd sends `READY=1`
//! there once its socket listens and `STOPPING=1` when it begins to shut down. Without the
//! variable nothing is sent.
//!
//! A few lines over std rather than a crate: one non-blocking datagram per state, so the
//! current-thread runtime is never held up by a slow or absent receiver, and abstract socket
//! names (`@...`) are handled as systemd gives them.

use std::ffi::OsString;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;

/// Environment variable naming the notification socket.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The socket taken from the environment by [`init`].
static SOCKET: OnceLock<Option<OsString>> = OnceLock::new();

/// Takes `NOTIFY_SOCKET` out of the environment, keeping it for [`ready`] and [`stopping`]. The
/// shims and runc inherit berthd's environment, and runc given a `NOTIFY_SOCKET` proxies it into
/// the container and makes `runc start` wait for the container's own READY=1 (go-runc drops the
/// variable for containerd the same way). Call first thing in `main`, while only one thread
/// runs.
pub fn init() {
    let socket = std::env::var_os(NOTIFY_SOCKET);
    if socket.is_some() {
        std::env::remove_var(NOTIFY_SOCKET);
    }
    let _ = SOCKET.set(socket);
}

/// Tells systemd the daemon is ready to serve.
pub fn ready() {
    send("READY=1\n");
}

/// Tells systemd the daemon is shutting down.
pub fn stopping() {
    send("STOPPING=1\n");
}

/// Sends `state` when `NOTIFY_SOCKET` is set; a failure is logged, never fatal (the daemon
/// serves the same either way).
fn send(state: &str) {
    let Some(Some(target)) = SOCKET.get() else {
        return;
    };
    let target = target.to_string_lossy().into_owned();
    match send_to(&target, state) {
        Ok(()) => tracing::debug!(socket = %target, state = state.trim_end(), "sd_notify"),
        Err(e) => {
            tracing::warn!(socket = %target, state = state.trim_end(), error = %e, "sd_notify")
        }
    }
}

fn send_to(target: &str, state: &str) -> io::Result<()> {
    let addr = match target.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None if target.starts_with('/') => SocketAddr::from_pathname(target)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an absolute path or an abstract name (@...)",
            ))
        }
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    let sent = socket.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::other(format!(
            "sent {sent} of {} bytes",
            state.len()
        )));
    }
    Ok(())
}
