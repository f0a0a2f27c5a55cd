//! The events exchange, `io.containerd.event.v1.exchange` (containerd `events/` and
//! `events/exchange/`): every event of the daemon, published locally or forwarded by a shim,
//! fans out from here to the subscribers whose filters match.
//!
//! - Publishing validates the namespace and the topic (`/` then one or more identifiers), stamps
//!   the time and never waits: each subscriber has a bounded queue, and an event that does not
//!   fit is dropped for that subscriber only, counted and logged.
//! - Subscriptions see every namespace; filters use containerd's syntax over `namespace`,
//!   `topic` and `event.<field>` ([`EnvelopeFields`]).
//! - Payloads are `Any`s with bare type URLs; [`payload`] names them and [`topic`] the topics
//!   the daemon publishes on.

mod envelope;
mod error;
mod exchange;
mod fields;
pub mod payload;
pub mod plugin;
pub mod topic;

pub use envelope::{forwarded_timestamp, Envelope, EnvelopeFields};
pub use error::{EventError, TopicError};
pub use exchange::{Exchange, Subscription, DEFAULT_QUEUE_CAPACITY};
pub use payload::Event;
