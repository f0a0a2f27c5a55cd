//! The events the manager itself publishes — only `/tasks/exit` and `/tasks/delete` when it
//! cleans up after a dead shim; live shims publish the rest through the daemon's ttrpc events
//! service. The manager publishes through [`EventSink`], which the runtime plugin
//! ([`crate::plugin::ExchangeSink`]) implements over the daemon's exchange.

use std::time::SystemTime;

use berth_proto::containerd::events::{TaskDelete, TaskExit};
use prost::Message;

use crate::shim::Exit;

/// Topic of [`TaskExit`].
pub const TASK_EXIT_TOPIC: &str = "/tasks/exit";
/// Topic of [`TaskDelete`].
pub const TASK_DELETE_TOPIC: &str = "/tasks/delete";
/// Bare type URL of [`TaskExit`].
pub const TASK_EXIT_TYPE: &str = "containerd.events.TaskExit";
/// Bare type URL of [`TaskDelete`].
pub const TASK_DELETE_TYPE: &str = "containerd.events.TaskDelete";

/// Where the manager's events go.
pub trait EventSink: Send + Sync {
    /// Publishes `event` on `topic` in namespace `ns`; failures are the sink's to log.
    fn publish(&self, ns: &str, topic: &str, event: prost_types::Any);
}

/// A sink that drops everything (tests, tools).
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardEvents;

impl EventSink for DiscardEvents {
    fn publish(&self, _ns: &str, _topic: &str, _event: prost_types::Any) {}
}

fn any(type_url: &str, msg: &impl Message) -> prost_types::Any {
    prost_types::Any {
        type_url: type_url.to_owned(),
        value: msg.encode_to_vec(),
    }
}

/// Publishes TaskExit then TaskDelete for a task whose shim died (containerd
/// `cleanupAfterDeadShim`): the delete action's answer, or 255 and now when it failed.
pub fn publish_dead_shim(sink: &dyn EventSink, ns: &str, id: &str, exit: Option<&Exit>) {
    let (pid, status, exited_at) = match exit {
        Some(e) => (
            e.pid,
            e.status,
            e.exited_at
                .unwrap_or_else(|| prost_types::Timestamp::from(SystemTime::now())),
        ),
        None => (0, 255, prost_types::Timestamp::from(SystemTime::now())),
    };
    let exit = TaskExit {
        container_id: id.to_owned(),
        id: id.to_owned(),
        pid,
        exit_status: status,
        exited_at: Some(exited_at),
    };
    sink.publish(ns, TASK_EXIT_TOPIC, any(TASK_EXIT_TYPE, &exit));
    let delete = TaskDelete {
        container_id: id.to_owned(),
        pid,
        exit_status: status,
        exited_at: Some(exited_at),
        id: String::new(),
    };
    sink.publish(ns, TASK_DELETE_TOPIC, any(TASK_DELETE_TYPE, &delete));
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String, prost_types::Any)>>);

    impl EventSink for Recorder {
        fn publish(&self, ns: &str, topic: &str, event: prost_types::Any) {
            self.0
                .lock()
                .unwrap()
                .push((ns.to_owned(), topic.to_owned(), event));
        }
    }

    #[test]
    fn dead_shim_events_default_to_255() {
        let r = Recorder::default();
        publish_dead_shim(&r, "ns1", "c1", None);
        let got = r.0.lock().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, TASK_EXIT_TOPIC);
        assert_eq!(got[0].2.type_url, TASK_EXIT_TYPE);
        let exit = TaskExit::decode(got[0].2.value.as_slice()).unwrap();
        assert_eq!((exit.container_id.as_str(), exit.exit_status), ("c1", 255));
        assert_eq!(got[1].1, TASK_DELETE_TOPIC);
        let del = TaskDelete::decode(got[1].2.value.as_slice()).unwrap();
        assert_eq!(del.exit_status, 255);
    }
}
