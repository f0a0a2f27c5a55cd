//! Single-use tokens for the streaming URLs: Exec, Attach and PortForward store their request
//! under a fresh random token; the first connection to its URL takes it out. A token lives a
//! minute, as the kubelet's request cache.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use berth_proto::runtime::v1::{AttachRequest, ExecRequest, PortForwardRequest};

/// How long a token is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// The most requests waiting for their connection.
pub const MAX_IN_FLIGHT: usize = 1000;

/// A request waiting for its connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// `/exec/<token>`.
    Exec(ExecRequest),
    /// `/attach/<token>`.
    Attach(AttachRequest),
    /// `/portforward/<token>`.
    PortForward(PortForwardRequest),
}

impl Pending {
    /// The URL path segment of the request kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

/// Too many requests are waiting.
#[derive(Debug, thiserror::Error)]
#[error("maximum number of in-flight requests exceeded")]
pub struct TooManyRequests;

/// The token cache.
#[derive(Debug)]
pub struct Tokens {
    ttl: Duration,
    pending: Mutex<HashMap<String, (Instant, Pending)>>,
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens::new(TOKEN_TTL)
    }
}

impl Tokens {
    /// A cache whose tokens live `ttl`.
    pub fn new(ttl: Duration) -> Tokens {
        Tokens {
            ttl,
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Pending)>> {
        // A panic while holding the lock leaves a plain map.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `request`; its token (URL-safe base64 of 128 random bits).
    pub fn insert(&self, request: Pending) -> Result<String, TooManyRequests> {
        let now = Instant::now();
        let mut pending = self.lock();
        pending.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        if pending.len() >= MAX_IN_FLIGHT {
            return Err(TooManyRequests);
        }
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(uuid::Uuid::new_v4().as_bytes());
        pending.insert(token.clone(), (now, request));
        Ok(token)
    }

    /// Takes the request of `token` out: `None` when unknown, already taken or expired.
    pub fn consume(&self, token: &str) -> Option<Pending> {
        let (at, request) = self.lock().remove(token)?;
        (at.elapsed() < self.ttl).then_some(request)
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> Pending {
        Pending::Exec(ExecRequest {
            container_id: "c".into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
    }

    #[test]
    fn a_token_is_used_once() {
        let t = Tokens::default();
        let token = t.insert(exec()).unwrap();
        assert_eq!(t.consume(&token), Some(exec()));
        assert_eq!(t.consume(&token), None);
        assert_eq!(t.consume("nope"), None);
    }

    #[test]
    fn a_token_expires() {
        let t = Tokens::new(Duration::from_millis(50));
        let token = t.insert(exec()).unwrap();
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(t.consume(&token), None);
        let _ = t.insert(exec()).unwrap();
        std::thread::sleep(Duration::from_millis(80));
        let _ = t.insert(exec()).unwrap();
        assert_eq!(t.len(), 1, "expired tokens are purged");
    }

    #[test]
    fn tokens_differ_and_are_url_safe() {
        let t = Tokens::default();
        let a = t.insert(exec()).unwrap();
        let b = t.insert(exec()).unwrap();
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn in_flight_requests_are_bounded() {
        let t = Tokens::default();
        for _ in 0..MAX_IN_FLIGHT {
            t.insert(exec()).unwrap();
        }
        assert!(t.insert(exec()).is_err());
    }
}
