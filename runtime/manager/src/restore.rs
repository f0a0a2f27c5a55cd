//! Talking to many shims at once: reconnecting to those that survived a daemon restart, and
//! asking every task of a namespace for its state (Tasks.List).
//!
//! containerd 1.6's `loadShims` dials the shims one after the other, and so did the manager:
//! each bundle cost a blocking-pool hop to read its files, a socket connect and a Connect round
//! trip to a shim that first has to be scheduled, all while the daemon does not serve yet (the
//! runtime plugin loads before the sockets are bound). Tasks.List, likewise, asked one shim after
//! the other for its state; with a thousand shims on a loaded host most of each round trip is the
//! wait for the shim process to be scheduled. Those waits do not depend on each other, so the
//! manager now has up to [`PARALLEL_LOADS`] bundles loading, or [`PARALLEL_STATES`] State calls
//! in flight, at once, each as its own task on the runtime. What one bundle's load decides (keep
//! the task, shut an idle shim down, clean up after a dead one) and what a State call answers
//! are unchanged.

use std::future::Future;
use std::sync::Arc;

use berth_proto::containerd::task::v2::StateResponse;
use tokio::task::{JoinError, JoinSet};

use crate::error::RuntimeError;
use crate::manager::TaskManager;
use crate::task::Task;

/// Bundles loaded at once after a restart: enough that the shims' answers overlap, few enough
/// that the blocking pool (one hop per bundle) and the number of half-open connections stay
/// small.
pub(crate) const PARALLEL_LOADS: usize = 64;

/// State calls in flight at once for one Tasks.List.
pub(crate) const PARALLEL_STATES: usize = 128;

/// Runs `f(item)` for every item, at most `limit` at once, each as its own task on the current
/// runtime, and returns the outputs in the order of `items`; `None` for a call that panicked
/// (logged), which stops no other.
pub(crate) async fn map_bounded<T, R, F, Fut>(items: Vec<T>, limit: usize, f: F) -> Vec<Option<R>>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let mut out: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    let mut running = JoinSet::new();
    for (i, item) in items.into_iter().enumerate() {
        while running.len() >= limit.max(1) {
            keep(running.join_next().await, &mut out);
        }
        let call = f(item);
        running.spawn(async move { (i, call.await) });
    }
    while let Some(done) = running.join_next().await {
        keep(Some(done), &mut out);
    }
    out
}

fn keep<R>(done: Option<Result<(usize, R), JoinError>>, out: &mut [Option<R>]) {
    match done {
        Some(Ok((i, r))) => out[i] = Some(r),
        Some(Err(e)) => tracing::error!(error = %e, "a call to a shim panicked"),
        None => {}
    }
}

impl TaskManager {
    /// Every task of namespace `ns` with the state of its init process, by id, the shims asked
    /// [`PARALLEL_STATES`] at once. A task whose State call panicked is left out (logged).
    pub async fn list_states(
        &self,
        ns: &str,
    ) -> Vec<(Arc<Task>, Result<StateResponse, RuntimeError>)> {
        let tasks = self.list(ns);
        let states = map_bounded(tasks.clone(), PARALLEL_STATES, |task| async move {
            task.state("").await
        })
        .await;
        tasks
            .into_iter()
            .zip(states)
            .filter_map(|(task, state)| Some((task, state?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn every_item_runs_in_order_and_no_more_than_the_limit_at_once() {
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let out = map_bounded((0..40).collect(), 8, |i: u64| {
            let (now, peak, done) = (now.clone(), peak.clone(), done.clone());
            async move {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1 + i % 3)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                if i == 5 {
                    panic!("load 5 fails");
                }
                done.fetch_add(1, Ordering::SeqCst);
                i * 2
            }
        })
        .await;
        let expected: Vec<Option<u64>> = (0..40).map(|i| (i != 5).then_some(i * 2)).collect();
        assert_eq!(out, expected, "outputs in input order, none for the panic");
        assert_eq!(
            done.load(Ordering::SeqCst),
            39,
            "a panic stops no other load"
        );
        assert!(peak.load(Ordering::SeqCst) <= 8);
        assert!(
            peak.load(Ordering::SeqCst) > 1,
            "loads overlap: peak {}",
            peak.load(Ordering::SeqCst)
        );
    }
}
