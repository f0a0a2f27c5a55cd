//! The one way services run blocking work (sled flushes, filesystem calls): on tokio's blocking
//! pool, so that handlers never stall the async runtime.

use tonic::Status;

/// Runs `f` on the blocking pool and returns its result; a panic inside becomes Internal.
pub async fn run<T, F>(f: F) -> Result<T, Status>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("blocking task failed: {e}")))
}
