//! The event payloads the daemon publishes: their bare `Any` type URLs (containerd's typeurl
//! spells proto names without the `type.googleapis.com/` prefix, and ctr decodes no other
//! spelling) and the topic each is published on.

use berth_proto::containerd::events::{
    ContainerCreate, ContainerDelete, ContainerUpdate, ContentDelete, NamespaceCreate,
    NamespaceDelete, NamespaceUpdate, SnapshotCommit, SnapshotPrepare, SnapshotRemove,
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOom,
    TaskPaused, TaskResumed, TaskStart,
};
use berth_proto::containerd::services::images::v1::{ImageCreate, ImageDelete, ImageUpdate};

use super::topic;

/// `containerd.events.ContainerCreate`.
pub const CONTAINER_CREATE: &str = "containerd.events.ContainerCreate";
/// `containerd.events.ContainerUpdate`.
pub const CONTAINER_UPDATE: &str = "containerd.events.ContainerUpdate";
/// `containerd.events.ContainerDelete`.
pub const CONTAINER_DELETE: &str = "containerd.events.ContainerDelete";
/// `containerd.events.ContentDelete`.
pub const CONTENT_DELETE: &str = "containerd.events.ContentDelete";
/// `containerd.services.images.v1.ImageCreate`: image events live in the images package.
pub const IMAGE_CREATE: &str = "containerd.services.images.v1.ImageCreate";
/// `containerd.services.images.v1.ImageUpdate`.
pub const IMAGE_UPDATE: &str = "containerd.services.images.v1.ImageUpdate";
/// `containerd.services.images.v1.ImageDelete`.
pub const IMAGE_DELETE: &str = "containerd.services.images.v1.ImageDelete";
/// `containerd.events.NamespaceCreate`.
pub const NAMESPACE_CREATE: &str = "containerd.events.NamespaceCreate";
/// `containerd.events.NamespaceUpdate`.
pub const NAMESPACE_UPDATE: &str = "containerd.events.NamespaceUpdate";
/// `containerd.events.NamespaceDelete`.
pub const NAMESPACE_DELETE: &str = "containerd.events.NamespaceDelete";
/// `containerd.events.SnapshotPrepare`.
pub const SNAPSHOT_PREPARE: &str = "containerd.events.SnapshotPrepare";
/// `containerd.events.SnapshotCommit`.
pub const SNAPSHOT_COMMIT: &str = "containerd.events.SnapshotCommit";
/// `containerd.events.SnapshotRemove`.
pub const SNAPSHOT_REMOVE: &str = "containerd.events.SnapshotRemove";
/// `containerd.events.TaskCreate`.
pub const TASK_CREATE: &str = "containerd.events.TaskCreate";
/// `containerd.events.TaskStart`.
pub const TASK_START: &str = "containerd.events.TaskStart";
/// `containerd.events.TaskDelete`.
pub const TASK_DELETE: &str = "containerd.events.TaskDelete";
/// `containerd.events.TaskExit`.
pub const TASK_EXIT: &str = "containerd.events.TaskExit";
/// `containerd.events.TaskOOM` (the proto name keeps the capitals).
pub const TASK_OOM: &str = "containerd.events.TaskOOM";
/// `containerd.events.TaskExecAdded`.
pub const TASK_EXEC_ADDED: &str = "containerd.events.TaskExecAdded";
/// `containerd.events.TaskExecStarted`.
pub const TASK_EXEC_STARTED: &str = "containerd.events.TaskExecStarted";
/// `containerd.events.TaskPaused`.
pub const TASK_PAUSED: &str = "containerd.events.TaskPaused";
/// `containerd.events.TaskResumed`.
pub const TASK_RESUMED: &str = "containerd.events.TaskResumed";
/// `containerd.events.TaskCheckpointed`.
pub const TASK_CHECKPOINTED: &str = "containerd.events.TaskCheckpointed";

/// An event payload with its wire type URL and the topic containerd publishes it on, so that
/// publishers write `exchange.publish_event(ns, &TaskExit { .. })`.
pub trait Event: prost::Message + Sized {
    /// The bare proto name used as the `Any` type URL.
    const TYPE_URL: &'static str;
    /// The topic the daemon publishes this event on.
    const TOPIC: &'static str;

    /// The event packed as an `Any` with its bare type URL.
    fn to_any(&self) -> prost_types::Any {
        prost_types::Any {
            type_url: Self::TYPE_URL.to_owned(),
            value: self.encode_to_vec(),
        }
    }
}

macro_rules! events {
    ($($ty:ty => $url:ident, $topic:ident;)*) => {
        $(
            impl Event for $ty {
                const TYPE_URL: &'static str = $url;
                const TOPIC: &'static str = topic::$topic;
            }
        )*
    };
}

events! {
    ContainerCreate => CONTAINER_CREATE, CONTAINER_CREATE;
    ContainerUpdate => CONTAINER_UPDATE, CONTAINER_UPDATE;
    ContainerDelete => CONTAINER_DELETE, CONTAINER_DELETE;
    ContentDelete => CONTENT_DELETE, CONTENT_DELETE;
    ImageCreate => IMAGE_CREATE, IMAGE_CREATE;
    ImageUpdate => IMAGE_UPDATE, IMAGE_UPDATE;
    ImageDelete => IMAGE_DELETE, IMAGE_DELETE;
    NamespaceCreate => NAMESPACE_CREATE, NAMESPACE_CREATE;
    NamespaceUpdate => NAMESPACE_UPDATE, NAMESPACE_UPDATE;
    NamespaceDelete => NAMESPACE_DELETE, NAMESPACE_DELETE;
    SnapshotPrepare => SNAPSHOT_PREPARE, SNAPSHOT_PREPARE;
    SnapshotCommit => SNAPSHOT_COMMIT, SNAPSHOT_COMMIT;
    SnapshotRemove => SNAPSHOT_REMOVE, SNAPSHOT_REMOVE;
    TaskCreate => TASK_CREATE, TASK_CREATE;
    TaskStart => TASK_START, TASK_START;
    TaskDelete => TASK_DELETE, TASK_DELETE;
    TaskExit => TASK_EXIT, TASK_EXIT;
    TaskOom => TASK_OOM, TASK_OOM;
    TaskExecAdded => TASK_EXEC_ADDED, TASK_EXEC_ADDED;
    TaskExecStarted => TASK_EXEC_STARTED, TASK_EXEC_STARTED;
    TaskPaused => TASK_PAUSED, TASK_PAUSED;
    TaskResumed => TASK_RESUMED, TASK_RESUMED;
    TaskCheckpointed => TASK_CHECKPOINTED, TASK_CHECKPOINTED;
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn type_urls_are_bare_proto_names() {
        let any = TaskExit {
            container_id: "c1".into(),
            ..Default::default()
        }
        .to_any();
        assert_eq!(any.type_url, "containerd.events.TaskExit");
        let back = TaskExit::decode(any.value.as_slice()).unwrap();
        assert_eq!(back.container_id, "c1");
        assert_eq!(TaskOom::TYPE_URL, "containerd.events.TaskOOM");
        assert_eq!(
            ImageCreate::TYPE_URL,
            "containerd.services.images.v1.ImageCreate"
        );
        assert_eq!(SnapshotPrepare::TOPIC, "/snapshot/prepare");
        assert_eq!(TaskExecAdded::TOPIC, "/tasks/exec-added");
    }
}
