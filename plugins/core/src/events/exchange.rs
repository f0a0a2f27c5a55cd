//! The exchange: one fan-out point for every event of the daemon (containerd
//! `events/exchange/exchange.go`).
//!
//! containerd queues each subscriber's events in an unbounded in-memory queue, so a subscriber
//! that stops reading grows the daemon without limit. Berth gives each subscriber a bounded
//! queue instead: publishing never waits, and an event that does not fit is dropped for that
//! subscriber alone, counted, and logged once per burst.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use berth_filters::Filter;
use berth_registry::identifiers;
use berth_registry::IdentifierError;
use tokio::sync::mpsc;

use super::envelope::{Envelope, EnvelopeFields};
use super::error::EventError;
use super::payload::Event;
use super::topic;

/// Events a subscriber may have waiting before further ones are dropped for it.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// Shortest time between two "missed events" reports of one subscriber.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// The event exchange. Shared as `Arc<Exchange>`; every method takes `&self` and none blocks,
/// so it may be called from async code and from blocking sections alike.
pub struct Exchange {
    subscribers: Arc<Mutex<Subscribers>>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Subscribers {
    next_id: u64,
    slots: Vec<Slot>,
}

/// The exchange's end of one subscription.
#[derive(Debug)]
struct Slot {
    id: u64,
    filter: Filter,
    queue: mpsc::Sender<Arc<Envelope>>,
    drops: Arc<Drops>,
}

/// Events dropped for one subscriber because its queue was full.
#[derive(Debug, Default)]
struct Drops {
    /// Since the subscription began.
    total: AtomicU64,
    /// Since the subscriber was last told in the log.
    unreported: AtomicU64,
}

fn lock(subscribers: &Mutex<Subscribers>) -> MutexGuard<'_, Subscribers> {
    // The lists stay consistent even if a holder panicked: every update is a single push,
    // retain or remove.
    subscribers.lock().unwrap_or_else(PoisonError::into_inner)
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("capacity", &self.capacity)
            .field("subscribers", &self.subscriber_count())
            .finish()
    }
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange::new()
    }
}

impl Exchange {
    /// An exchange whose subscribers each queue up to [`DEFAULT_QUEUE_CAPACITY`] events.
    pub fn new() -> Exchange {
        Exchange::with_capacity(DEFAULT_QUEUE_CAPACITY)
    }

    /// An exchange whose subscribers each queue up to `capacity` events (at least one).
    pub fn with_capacity(capacity: usize) -> Exchange {
        Exchange {
            subscribers: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// The per-subscriber queue capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many subscriptions are open.
    pub fn subscriber_count(&self) -> usize {
        lock(&self.subscribers).slots.len()
    }

    /// Publishes `event` on `topic` in `namespace`, stamped with the current time (containerd
    /// `Exchange.Publish`). An empty namespace is FailedPrecondition, a malformed namespace or
    /// topic InvalidArgument.
    pub fn publish(
        &self,
        namespace: &str,
        topic: &str,
        event: prost_types::Any,
    ) -> Result<(), EventError> {
        if namespace.is_empty() {
            return Err(EventError::Namespace(IdentifierError::NamespaceRequired));
        }
        identifiers::validate_namespace(namespace).map_err(EventError::Namespace)?;
        validate_topic(topic)?;
        let envelope = Envelope {
            timestamp: SystemTime::now(),
            namespace: namespace.to_owned(),
            topic: topic.to_owned(),
            event,
        };
        tracing::debug!(
            namespace,
            topic,
            r#type = %envelope.event.type_url,
            "event published"
        );
        self.broadcast(envelope);
        Ok(())
    }

    /// Encodes `msg` as an `Any` with `type_url` (a bare proto name such as
    /// `containerd.events.TaskExit`) and publishes it.
    pub fn publish_message<M: prost::Message>(
        &self,
        namespace: &str,
        topic: &str,
        type_url: &str,
        msg: &M,
    ) -> Result<(), EventError> {
        let event = prost_types::Any {
            type_url: type_url.to_owned(),
            value: msg.encode_to_vec(),
        };
        self.publish(namespace, topic, event)
    }

    /// Publishes one of containerd's event payloads on its usual topic with its type URL, e.g.
    /// `exchange.publish_event("default", &TaskExit { .. })` goes out on `/tasks/exit`.
    pub fn publish_event<E: Event>(&self, namespace: &str, event: &E) -> Result<(), EventError> {
        self.publish(namespace, E::TOPIC, event.to_any())
    }

    /// Re-emits a complete envelope, keeping its namespace and timestamp (containerd
    /// `Exchange.Forward`): how shims' events reach subscribers.
    pub fn forward(&self, envelope: Envelope) -> Result<(), EventError> {
        identifiers::validate(&envelope.namespace).map_err(EventError::EnvelopeNamespace)?;
        validate_topic(&envelope.topic)?;
        tracing::debug!(
            namespace = %envelope.namespace,
            topic = %envelope.topic,
            r#type = %envelope.event.type_url,
            "event forwarded"
        );
        self.broadcast(envelope);
        Ok(())
    }

    /// Subscribes to every event, of every namespace, that `filter` matches (see the
    /// `EnvelopeFields` adaptor for the fields). Dropping the subscription unsubscribes.
    pub fn subscribe(&self, filter: Filter) -> Subscription {
        let (tx, rx) = mpsc::channel(self.capacity);
        let drops = Arc::new(Drops::default());
        let mut subscribers = lock(&self.subscribers);
        let id = subscribers.next_id;
        subscribers.next_id += 1;
        subscribers.slots.push(Slot {
            id,
            filter,
            queue: tx,
            drops: drops.clone(),
        });
        drop(subscribers);
        tracing::debug!(subscriber = id, "events subscription opened");
        Subscription {
            id,
            queue: rx,
            drops,
            subscribers: Arc::downgrade(&self.subscribers),
            last_report: None,
        }
    }

    /// Offers the envelope to every matching subscriber without waiting. Holding the lock
    /// while offering gives every subscriber the same order of events.
    fn broadcast(&self, envelope: Envelope) {
        let envelope = Arc::new(envelope);
        let fields = EnvelopeFields::new(&envelope);
        let mut subscribers = lock(&self.subscribers);
        subscribers.slots.retain(|slot| {
            if !slot.filter.is_always() && !slot.filter.matches(&fields) {
                return true;
            }
            match slot.queue.try_send(envelope.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    slot.drops.total.fetch_add(1, Ordering::Relaxed);
                    if slot.drops.unreported.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(
                            subscriber = slot.id,
                            capacity = self.capacity,
                            topic = %envelope.topic,
                            "events subscriber is not keeping up, dropping events for it"
                        );
                    }
                    true
                }
                // The subscription was dropped between its last receive and its unsubscribe.
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

fn validate_topic(t: &str) -> Result<(), EventError> {
    topic::validate(t).map_err(|source| EventError::Topic {
        topic: t.to_owned(),
        source,
    })
}

/// One subscriber's stream of envelopes, in publish order. Ends (`None`) only when the exchange
/// is gone. Dropping it unsubscribes.
pub struct Subscription {
    id: u64,
    queue: mpsc::Receiver<Arc<Envelope>>,
    drops: Arc<Drops>,
    subscribers: Weak<Mutex<Subscribers>>,
    last_report: Option<Instant>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("queued", &self.queue.len())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Subscription {
    /// The next envelope, waiting for one; `None` once the exchange is gone.
    pub async fn recv(&mut self) -> Option<Envelope> {
        let envelope = self.queue.recv().await?;
        Some(self.delivered(envelope))
    }

    /// The next envelope if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Envelope> {
        let envelope = self.queue.try_recv().ok()?;
        Some(self.delivered(envelope))
    }

    /// Polls for the next envelope, for adapting a subscription into a `Stream`.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Envelope>> {
        self.queue
            .poll_recv(cx)
            .map(|next| next.map(|envelope| self.delivered(envelope)))
    }

    /// Events dropped for this subscriber so far because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.drops.total.load(Ordering::Relaxed)
    }

    fn delivered(&mut self, envelope: Arc<Envelope>) -> Envelope {
        let due = self
            .last_report
            .is_none_or(|at| at.elapsed() >= REPORT_INTERVAL);
        if due && self.report_drops() {
            self.last_report = Some(Instant::now());
        }
        Arc::unwrap_or_clone(envelope)
    }

    /// Logs the drops since the last report; true if there were any.
    fn report_drops(&self) -> bool {
        let missed = self.drops.unreported.swap(0, Ordering::Relaxed);
        if missed > 0 {
            tracing::warn!(
                subscriber = self.id,
                missed,
                total = self.dropped(),
                "events subscriber missed events: its queue was full"
            );
        }
        missed > 0
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(subscribers) = self.subscribers.upgrade() {
            lock(&subscribers).slots.retain(|slot| slot.id != self.id);
        }
        self.report_drops();
        tracing::debug!(subscriber = self.id, "events subscription closed");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use berth_filters::parse_any;
    use berth_proto::containerd::events::{NamespaceCreate, TaskExit, TaskStart};

    use super::*;
    use crate::events::payload::{self, Event};
    use crate::events::topic as topics;

    fn filter(filters: &[&str]) -> Filter {
        parse_any(filters).expect("test filters parse")
    }

    fn any(type_url: &str) -> prost_types::Any {
        prost_types::Any {
            type_url: type_url.into(),
            value: Vec::new(),
        }
    }

    fn publish_ns_create(x: &Exchange, ns: &str) {
        x.publish_event(
            ns,
            &NamespaceCreate {
                name: ns.into(),
                ..Default::default()
            },
        )
        .unwrap();
    }

    #[tokio::test]
    async fn publish_stamps_and_delivers() {
        let x = Exchange::new();
        let mut sub = x.subscribe(Filter::always());
        let before = SystemTime::now();
        publish_ns_create(&x, "a");
        let env = sub.recv().await.unwrap();
        assert!(env.timestamp >= before);
        assert_eq!(env.namespace, "a");
        assert_eq!(env.topic, "/namespaces/create");
        assert_eq!(env.event.type_url, "containerd.events.NamespaceCreate");
    }

    #[test]
    fn publish_validates_namespace_and_topic() {
        let x = Exchange::new();
        let err = x.publish("", "/a", any("x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed publishing event: namespace is required"
        );
        assert_eq!(
            berth_registry::Classify::kind(&err),
            berth_registry::ErrorKind::FailedPrecondition
        );
        let err = x.publish("a/b", "/a", any("x")).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("failed publishing event: namespace validation: identifier \"a/b\""));
        let err = x.publish("a", "tasks", any("x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "envelope topic \"tasks\": must start with '/'"
        );
        assert_eq!(
            berth_registry::Classify::kind(&err),
            berth_registry::ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn forward_validates_the_envelope() {
        let x = Exchange::new();
        let mut sub = x.subscribe(Filter::always());
        let env = Envelope {
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(7),
            namespace: "n1".into(),
            topic: "/tasks/exit".into(),
            event: any(payload::TASK_EXIT),
        };
        x.forward(env.clone()).unwrap();
        assert_eq!(sub.try_recv(), Some(env.clone()));

        let bad_ns = Envelope {
            namespace: "..".into(),
            ..env.clone()
        };
        let err = x.forward(bad_ns).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("event envelope has invalid namespace: identifier \"..\""));
        let bad_topic = Envelope {
            topic: "/".into(),
            ..env
        };
        assert!(matches!(
            x.forward(bad_topic),
            Err(EventError::Topic { .. })
        ));
        assert_eq!(sub.try_recv(), None);
    }

    #[test]
    fn filters_select_events() {
        let x = Exchange::new();
        let mut by_topic = x.subscribe(filter(&[r#"topic=="/namespaces/create""#]));
        let mut by_ns = x.subscribe(filter(&["namespace==a"]));
        let mut by_re = x.subscribe(filter(&["topic~=/tasks/"]));
        let mut by_field = x.subscribe(filter(&["event.container_id==c2"]));
        let mut either = x.subscribe(filter(&["namespace==b", "topic~=/tasks/"]));

        publish_ns_create(&x, "a");
        publish_ns_create(&x, "b");
        x.publish_event(
            "a",
            &TaskStart {
                container_id: "c1".into(),
                pid: 1,
            },
        )
        .unwrap();
        x.publish_event(
            "b",
            &TaskExit {
                container_id: "c2".into(),
                ..Default::default()
            },
        )
        .unwrap();

        let drain = |sub: &mut Subscription| -> Vec<(String, String)> {
            std::iter::from_fn(|| sub.try_recv())
                .map(|e| (e.namespace, e.topic))
                .collect()
        };
        let pair = |ns: &str, t: &str| (ns.to_owned(), t.to_owned());
        assert_eq!(
            drain(&mut by_topic),
            [
                pair("a", topics::NAMESPACE_CREATE),
                pair("b", topics::NAMESPACE_CREATE)
            ]
        );
        assert_eq!(
            drain(&mut by_ns),
            [
                pair("a", topics::NAMESPACE_CREATE),
                pair("a", topics::TASK_START)
            ]
        );
        assert_eq!(
            drain(&mut by_re),
            [pair("a", topics::TASK_START), pair("b", topics::TASK_EXIT)]
        );
        assert_eq!(drain(&mut by_field), [pair("b", topics::TASK_EXIT)]);
        assert_eq!(
            drain(&mut either),
            [
                pair("b", topics::NAMESPACE_CREATE),
                pair("a", topics::TASK_START),
                pair("b", topics::TASK_EXIT)
            ]
        );
    }

    #[tokio::test]
    async fn fans_out_to_every_subscriber() {
        let x = Arc::new(Exchange::new());
        let mut one = x.subscribe(Filter::always());
        let mut two = x.subscribe(Filter::always());
        let publisher = {
            let x = x.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    x.publish_message(
                        "default",
                        "/test/seq",
                        "example.Seq",
                        &NamespaceCreate {
                            name: i.to_string(),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                }
            })
        };
        for sub in [&mut one, &mut two] {
            for i in 0..100 {
                let env = sub.recv().await.unwrap();
                let msg = <NamespaceCreate as prost::Message>::decode(env.event.value.as_slice())
                    .unwrap();
                assert_eq!(msg.name, i.to_string());
                assert_eq!(env.event.type_url, "example.Seq");
            }
        }
        publisher.await.unwrap();
        assert_eq!(one.dropped() + two.dropped(), 0);
    }

    #[tokio::test]
    async fn slow_subscriber_never_blocks_publishers() {
        let x = Exchange::new();
        let mut slow = x.subscribe(Filter::always());
        let mut other = x.subscribe(filter(&[r#"topic=="/other""#]));
        let publishing = tokio::task::spawn_blocking(move || {
            for _ in 0..10_000 {
                x.publish("default", "/flood", any("example.Flood"))
                    .unwrap();
            }
            x.publish("default", "/other", any("example.Other"))
                .unwrap();
            x
        });
        let x = tokio::time::timeout(Duration::from_secs(10), publishing)
            .await
            .expect("publishing 10000 events must not block on a subscriber that never reads")
            .unwrap();
        // 10_000 floods and the `/other` event, of which the first `capacity` fitted.
        let expected_drops = 10_001 - DEFAULT_QUEUE_CAPACITY as u64;
        assert_eq!(slow.dropped(), expected_drops);
        // A subscriber that keeps up is not affected by the slow one.
        assert_eq!(other.try_recv().map(|e| e.topic).as_deref(), Some("/other"));
        assert_eq!(other.dropped(), 0);

        // The slow subscriber gets what fitted, oldest first, then the queue is empty; the
        // drop count is reported on its next receive and stays available.
        let mut received = 0;
        while let Some(env) = slow.try_recv() {
            assert_eq!(env.topic, "/flood");
            received += 1;
        }
        assert_eq!(received, DEFAULT_QUEUE_CAPACITY);
        assert_eq!(slow.drops.unreported.load(Ordering::Relaxed), 0);
        assert_eq!(slow.dropped(), expected_drops);

        // With room again, new events arrive.
        x.publish("default", "/after", any("example.After"))
            .unwrap();
        assert_eq!(slow.try_recv().map(|e| e.topic).as_deref(), Some("/after"));
    }

    #[test]
    fn dropping_a_subscription_unsubscribes() {
        let x = Exchange::new();
        let one = x.subscribe(Filter::always());
        let mut two = x.subscribe(Filter::always());
        assert_eq!(x.subscriber_count(), 2);
        drop(one);
        assert_eq!(x.subscriber_count(), 1);
        publish_ns_create(&x, "a");
        assert!(two.try_recv().is_some());
        drop(two);
        assert_eq!(x.subscriber_count(), 0);
        publish_ns_create(&x, "a");
    }

    #[tokio::test]
    async fn subscription_ends_with_the_exchange() {
        let x = Exchange::new();
        let mut sub = x.subscribe(Filter::always());
        publish_ns_create(&x, "a");
        drop(x);
        assert!(sub.recv().await.is_some());
        assert!(sub.recv().await.is_none());
    }

    #[test]
    fn debug_is_a_summary() {
        let x = Exchange::with_capacity(0);
        let _sub = x.subscribe(Filter::always());
        assert_eq!(x.capacity(), 1);
        assert_eq!(format!("{x:?}"), "Exchange { capacity: 1, subscribers: 1 }");
        assert_eq!(TaskExit::TOPIC, topics::TASK_EXIT);
    }
}
