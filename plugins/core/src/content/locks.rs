//! In-process ref locks: one live writer per ref (containerd `content/local/locks.go`).
//!
//! The map belongs to one [`ContentStore`](super::ContentStore), so one store must be opened
//! per root per process (the daemon opens it once, in the plugin).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::error::ContentError;

/// The refs held by live writers, with the time each was taken.
#[derive(Debug, Default)]
pub(crate) struct RefLocks {
    held: Mutex<HashMap<String, SystemTime>>,
}

impl RefLocks {
    fn held(&self) -> MutexGuard<'_, HashMap<String, SystemTime>> {
        // The map is only ever changed by single inserts and removes, so a panic elsewhere
        // while the mutex was held cannot have left it half-updated.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes `reference` or says who holds it.
    pub(crate) fn try_lock(self: &Arc<Self>, reference: &str) -> Result<RefLock, ContentError> {
        let mut held = self.held();
        if let Some(since) = held.get(reference) {
            return Err(ContentError::Locked {
                reference: reference.to_owned(),
                held_for: since.elapsed().unwrap_or(Duration::ZERO),
            });
        }
        held.insert(reference.to_owned(), SystemTime::now());
        Ok(RefLock {
            locks: Arc::clone(self),
            reference: reference.to_owned(),
        })
    }

    /// Takes `reference`, retrying briefly as containerd's `Writer` does: a client that
    /// reconnects right after a session ended may race the old session's release.
    pub(crate) fn lock_with_retry(
        self: &Arc<Self>,
        reference: &str,
    ) -> Result<RefLock, ContentError> {
        for delay_ms in RETRY_DELAYS_MS {
            if let Ok(lock) = self.try_lock(reference) {
                return Ok(lock);
            }
            std::thread::sleep(Duration::from_millis(delay_ms));
        }
        self.try_lock(reference)
    }

    /// Whether a live writer holds `reference`.
    #[cfg(test)]
    pub(crate) fn is_locked(&self, reference: &str) -> bool {
        self.held().contains_key(reference)
    }

    fn unlock(&self, reference: &str) {
        self.held().remove(reference);
    }
}

/// Sleeps between lock attempts: about a quarter second in all before giving up with
/// `Unavailable`, which clients retry themselves.
const RETRY_DELAYS_MS: [u64; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// A held ref; dropping it releases the ref.
pub(crate) struct RefLock {
    locks: Arc<RefLocks>,
    reference: String,
}

impl std::fmt::Debug for RefLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RefLock").field(&self.reference).finish()
    }
}

impl Drop for RefLock {
    fn drop(&mut self) {
        self.locks.unlock(&self.reference);
    }
}

#[cfg(test)]
mod tests {
    use berth_registry::{Classify, ErrorKind};

    use super::*;

    #[test]
    fn one_holder_per_ref_until_dropped() {
        let locks = Arc::new(RefLocks::default());
        let a = locks.try_lock("a").unwrap();
        assert!(locks.is_locked("a"));
        let err = locks.try_lock("a").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.to_string().starts_with("ref a locked for "), "{err}");
        let _b = locks.try_lock("b").unwrap();
        drop(a);
        assert!(!locks.is_locked("a"));
        let _a = locks.try_lock("a").unwrap();
    }

    #[test]
    fn retry_waits_for_a_release() {
        let locks = Arc::new(RefLocks::default());
        let held = locks.try_lock("r").unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(held);
        });
        let _got = locks.lock_with_retry("r").unwrap();
        releaser.join().unwrap();
    }

    #[test]
    fn retry_gives_up_with_unavailable() {
        let locks = Arc::new(RefLocks::default());
        let _held = locks.try_lock("r").unwrap();
        let err = locks.lock_with_retry("r").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }
}
