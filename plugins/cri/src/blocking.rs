//! The CRI's one way to run blocking work (files, fsync, metadata transactions, cgroup reads)
//! on tokio's blocking pool: berthd serves every RPC from one async thread, which such work
//! must never stall. (`berth_services::blocking` is the same for the gRPC services, in
//! `Status`; this one keeps the work's `CriError`.)

use crate::error::{CriError, Result};

/// Runs `f` on the blocking pool and returns its result; a panic inside becomes Internal.
pub async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(CriError::Internal(format!("blocking task failed: {e}"))))
}
