//! One published event as subscribers see it (containerd `events.Envelope`) and how filters
//! read it.

use std::cell::OnceCell;
use std::time::SystemTime;

use berth_filters::Adaptor;

use super::error::EventError;
use super::fields::{self, PayloadFields};

/// Seconds of Go's zero `time.Time` since the Unix epoch. Go peers send gogo non-nullable
/// timestamps, so an unset timestamp arrives as this value rather than as an absent field.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// An event with its routing data.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// When the event was published (or the forwarder's time, for forwarded events).
    pub timestamp: SystemTime,
    /// The namespace the event belongs to.
    pub namespace: String,
    /// The topic, e.g. `/tasks/exit`.
    pub topic: String,
    /// The payload, with a bare type URL such as `containerd.events.TaskExit`.
    pub event: prost_types::Any,
}

impl Envelope {
    /// A filter adaptor over this envelope.
    pub fn fields(&self) -> EnvelopeFields<'_> {
        EnvelopeFields::new(self)
    }
}

/// The timestamp of a forwarded envelope: containerd refuses an unset one (`IsZero`), and Go's
/// zero time counts as unset as much as an absent field does.
pub fn forwarded_timestamp(ts: Option<prost_types::Timestamp>) -> Result<SystemTime, EventError> {
    let ts = ts.ok_or(EventError::TimestampUnset)?;
    if ts.seconds == GO_ZERO_TIME_SECONDS && ts.nanos == 0 {
        return Err(EventError::TimestampUnset);
    }
    SystemTime::try_from(ts).map_err(|_| EventError::TimestampOutOfRange {
        seconds: ts.seconds,
        nanos: ts.nanos,
    })
}

/// What a subscription filter reads of an envelope (containerd `Envelope.Field`):
/// `namespace`, `topic` and `event.<field>`. The payload is decoded at most once, and only if a
/// selector asks for an `event.*` field, so one adaptor serves every subscriber's filter.
///
/// # `event.<field>`
///
/// containerd decodes the `Any` through its type registry and asks the message's generated
/// `Field` method (`protobuf/plugin/fieldpath`), which answers string fields (present when
/// non-empty), bool fields (always present, `true`/`false`), `labels.<key>` maps and nested
/// messages, and never numbers, timestamps or repeated fields. Berth decodes the payloads it
/// knows, every type in [`super::payload`], into the same small set of fields:
///
/// | Payload | Fields |
/// |---|---|
/// | ContainerCreate | `id`, `image`, `runtime.name` |
/// | ContainerUpdate | `id`, `image`, `labels.*`, `snapshot_key` |
/// | ContainerDelete | `id` |
/// | ContentDelete | `digest` |
/// | Image{Create,Update} / Namespace{Create,Update} | `name`, `labels.*` |
/// | ImageDelete / NamespaceDelete | `name` |
/// | SnapshotPrepare | `key`, `parent` |
/// | SnapshotCommit | `key`, `name` |
/// | SnapshotRemove | `key` |
/// | TaskCreate | `container_id`, `bundle`, `checkpoint`, `io.{stdin,stdout,stderr,terminal}` |
/// | TaskDelete, TaskExit | `container_id`, `id` |
/// | TaskExecAdded, TaskExecStarted | `container_id`, `exec_id` |
/// | TaskCheckpointed | `container_id`, `checkpoint` |
/// | TaskStart, TaskOOM, TaskPaused, TaskResumed | `container_id` |
///
/// Any other type URL, or a payload that does not decode, has no `event.*` fields. Like the
/// generated Go code, a scalar field ignores any further path segments
/// (`event.container_id.x` reads `container_id`). `ContainerCreate.runtime.options` is an `Any`
/// that containerd would decode again; runtime options have no fields there either, so Berth
/// does not try.
#[derive(Debug)]
pub struct EnvelopeFields<'a> {
    envelope: &'a Envelope,
    payload: OnceCell<Option<PayloadFields>>,
}

impl<'a> EnvelopeFields<'a> {
    /// An adaptor over `envelope`.
    pub fn new(envelope: &'a Envelope) -> Self {
        EnvelopeFields {
            envelope,
            payload: OnceCell::new(),
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl Adaptor for EnvelopeFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        let (head, rest) = path.split_first()?;
        match head.as_str() {
            "namespace" => non_empty(&self.envelope.namespace),
            "topic" => non_empty(&self.envelope.topic),
            "event" => self
                .payload
                .get_or_init(|| fields::decode(&self.envelope.event))
                .as_ref()?
                .get(rest),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use berth_proto::containerd::events::TaskExit;

    use super::*;
    use crate::events::payload::Event;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn reads_namespace_topic_and_event_fields() {
        let env = Envelope {
            timestamp: SystemTime::now(),
            namespace: "default".into(),
            topic: "/tasks/exit".into(),
            event: TaskExit {
                container_id: "c1".into(),
                ..Default::default()
            }
            .to_any(),
        };
        let fields = env.fields();
        assert_eq!(fields.field(&path("namespace")).as_deref(), Some("default"));
        assert_eq!(fields.field(&path("topic")).as_deref(), Some("/tasks/exit"));
        assert_eq!(
            fields.field(&path("event.container_id")).as_deref(),
            Some("c1")
        );
        assert_eq!(fields.field(&path("event")), None);
        assert_eq!(fields.field(&path("event.id")), None);
        assert_eq!(fields.field(&path("timestamp")), None);
    }

    #[test]
    fn forwarded_timestamps() {
        assert_eq!(forwarded_timestamp(None), Err(EventError::TimestampUnset));
        let go_zero = prost_types::Timestamp {
            seconds: GO_ZERO_TIME_SECONDS,
            nanos: 0,
        };
        assert_eq!(
            forwarded_timestamp(Some(go_zero)),
            Err(EventError::TimestampUnset)
        );
        let ts = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        };
        assert_eq!(
            forwarded_timestamp(Some(ts)),
            Ok(UNIX_EPOCH + Duration::new(1_700_000_000, 5))
        );
    }
}
