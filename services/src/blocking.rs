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

/// Runs `f` over a clone of `target` on the blocking pool and maps its error to a status in
/// the one place that does so ([`crate::status::to_status`]). Every service's store calls go
/// through here.
pub async fn call<S, T, E, F>(target: &S, f: F) -> Result<T, Status>
where
    S: Clone + Send + 'static,
    F: FnOnce(&S) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: berth_registry::Classify + Send + 'static,
{
    let target = target.clone();
    run(move || f(&target))
        .await?
        .map_err(|e| crate::status::to_status(&e))
}
