//! What `event.<field>` selectors read of a payload; the supported fields are listed on
//! [`super::EnvelopeFields`].

use std::collections::HashMap;

use berth_proto::containerd::events::{
    ContainerCreate, ContainerDelete, ContainerUpdate, ContentDelete, NamespaceCreate,
    NamespaceDelete, NamespaceUpdate, SnapshotCommit, SnapshotPrepare, SnapshotRemove,
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOom,
    TaskPaused, TaskResumed, TaskStart,
};
use berth_proto::containerd::services::images::v1::{ImageCreate, ImageDelete, ImageUpdate};
use prost::Message;

use super::payload;

/// The readable fields of one decoded payload.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PayloadFields {
    /// Present scalar fields by proto name.
    scalars: Vec<(&'static str, String)>,
    /// The `labels` map, for payloads that have one.
    labels: Option<HashMap<String, String>>,
    /// Nested messages that are set, by proto name.
    nested: Vec<(&'static str, PayloadFields)>,
}

impl PayloadFields {
    /// Adds a string field; empty strings are absent, as in containerd.
    fn text(mut self, name: &'static str, value: String) -> Self {
        if !value.is_empty() {
            self.scalars.push((name, value));
        }
        self
    }

    /// Adds a bool field, always present (Go's `fmt.Sprint(bool)`).
    fn flag(mut self, name: &'static str, value: bool) -> Self {
        self.scalars.push((name, value.to_string()));
        self
    }

    fn labels(mut self, labels: HashMap<String, String>) -> Self {
        self.labels = Some(labels);
        self
    }

    fn nested(mut self, name: &'static str, fields: Option<PayloadFields>) -> Self {
        if let Some(fields) = fields {
            self.nested.push((name, fields));
        }
        self
    }

    /// The value at `path` (the part after `event.`).
    pub(crate) fn get(&self, path: &[String]) -> Option<String> {
        let (head, rest) = path.split_first()?;
        if head == "labels" {
            // containerd: no labels at all reads as absent, else the key is the rest re-joined.
            let labels = self.labels.as_ref().filter(|l| !l.is_empty())?;
            return labels.get(&rest.join(".")).cloned();
        }
        if let Some((_, inner)) = self.nested.iter().find(|(name, _)| name == head) {
            return inner.get(rest);
        }
        self.scalars
            .iter()
            .find(|(name, _)| name == head)
            .map(|(_, value)| value.clone())
    }
}

fn decoded<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    M::decode(bytes).ok()
}

/// Decodes a payload Berth knows into its fields; `None` for anything else.
pub(crate) fn decode(event: &prost_types::Any) -> Option<PayloadFields> {
    let bytes = event.value.as_slice();
    let f = PayloadFields::default();
    let fields = match event.type_url.as_str() {
        payload::CONTAINER_CREATE => {
            let m: ContainerCreate = decoded(bytes)?;
            let runtime = m
                .runtime
                .map(|r| PayloadFields::default().text("name", r.name));
            f.text("id", m.id)
                .text("image", m.image)
                .nested("runtime", runtime)
        }
        payload::CONTAINER_UPDATE => {
            let m: ContainerUpdate = decoded(bytes)?;
            f.text("id", m.id)
                .text("image", m.image)
                .labels(m.labels)
                .text("snapshot_key", m.snapshot_key)
        }
        payload::CONTAINER_DELETE => f.text("id", decoded::<ContainerDelete>(bytes)?.id),
        payload::CONTENT_DELETE => f.text("digest", decoded::<ContentDelete>(bytes)?.digest),
        payload::IMAGE_CREATE => {
            let m: ImageCreate = decoded(bytes)?;
            f.text("name", m.name).labels(m.labels)
        }
        payload::IMAGE_UPDATE => {
            let m: ImageUpdate = decoded(bytes)?;
            f.text("name", m.name).labels(m.labels)
        }
        payload::IMAGE_DELETE => f.text("name", decoded::<ImageDelete>(bytes)?.name),
        payload::NAMESPACE_CREATE => {
            let m: NamespaceCreate = decoded(bytes)?;
            f.text("name", m.name).labels(m.labels)
        }
        payload::NAMESPACE_UPDATE => {
            let m: NamespaceUpdate = decoded(bytes)?;
            f.text("name", m.name).labels(m.labels)
        }
        payload::NAMESPACE_DELETE => f.text("name", decoded::<NamespaceDelete>(bytes)?.name),
        payload::SNAPSHOT_PREPARE => {
            let m: SnapshotPrepare = decoded(bytes)?;
            f.text("key", m.key).text("parent", m.parent)
        }
        payload::SNAPSHOT_COMMIT => {
            let m: SnapshotCommit = decoded(bytes)?;
            f.text("key", m.key).text("name", m.name)
        }
        payload::SNAPSHOT_REMOVE => f.text("key", decoded::<SnapshotRemove>(bytes)?.key),
        payload::TASK_CREATE => {
            let m: TaskCreate = decoded(bytes)?;
            let io = m.io.map(|io| {
                PayloadFields::default()
                    .text("stdin", io.stdin)
                    .text("stdout", io.stdout)
                    .text("stderr", io.stderr)
                    .flag("terminal", io.terminal)
            });
            f.text("container_id", m.container_id)
                .text("bundle", m.bundle)
                .nested("io", io)
                .text("checkpoint", m.checkpoint)
        }
        payload::TASK_START => f.text("container_id", decoded::<TaskStart>(bytes)?.container_id),
        payload::TASK_DELETE => {
            let m: TaskDelete = decoded(bytes)?;
            f.text("container_id", m.container_id).text("id", m.id)
        }
        payload::TASK_EXIT => {
            let m: TaskExit = decoded(bytes)?;
            f.text("container_id", m.container_id).text("id", m.id)
        }
        payload::TASK_OOM => f.text("container_id", decoded::<TaskOom>(bytes)?.container_id),
        payload::TASK_EXEC_ADDED => {
            let m: TaskExecAdded = decoded(bytes)?;
            f.text("container_id", m.container_id)
                .text("exec_id", m.exec_id)
        }
        payload::TASK_EXEC_STARTED => {
            let m: TaskExecStarted = decoded(bytes)?;
            f.text("container_id", m.container_id)
                .text("exec_id", m.exec_id)
        }
        payload::TASK_PAUSED => f.text("container_id", decoded::<TaskPaused>(bytes)?.container_id),
        payload::TASK_RESUMED => {
            f.text("container_id", decoded::<TaskResumed>(bytes)?.container_id)
        }
        payload::TASK_CHECKPOINTED => {
            let m: TaskCheckpointed = decoded(bytes)?;
            f.text("container_id", m.container_id)
                .text("checkpoint", m.checkpoint)
        }
        _ => return None,
    };
    Some(fields)
}

#[cfg(test)]
mod tests {
    use berth_proto::containerd::events::TaskIo;

    use super::*;
    use crate::events::payload::Event;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn task_exit_fields() {
        let fields = decode(
            &TaskExit {
                container_id: "c1".into(),
                id: "e1".into(),
                pid: 42,
                ..Default::default()
            }
            .to_any(),
        )
        .unwrap();
        assert_eq!(fields.get(&path("container_id")).as_deref(), Some("c1"));
        assert_eq!(fields.get(&path("id")).as_deref(), Some("e1"));
        // Numbers are not fields, as in containerd.
        assert_eq!(fields.get(&path("pid")), None);
        // Scalars ignore trailing segments, as the generated Go code does.
        assert_eq!(fields.get(&path("id.x")).as_deref(), Some("e1"));
        assert_eq!(fields.get(&[]), None);
    }

    #[test]
    fn empty_strings_are_absent_and_bools_present() {
        let fields = decode(
            &TaskCreate {
                container_id: "c1".into(),
                io: Some(TaskIo {
                    stdout: "/fifo".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .to_any(),
        )
        .unwrap();
        assert_eq!(fields.get(&path("bundle")), None);
        assert_eq!(fields.get(&path("io.stdout")).as_deref(), Some("/fifo"));
        assert_eq!(fields.get(&path("io.stdin")), None);
        assert_eq!(fields.get(&path("io.terminal")).as_deref(), Some("false"));
        assert_eq!(fields.get(&path("io")), None);
    }

    #[test]
    fn labels_are_rejoined() {
        let fields = decode(
            &ImageCreate {
                name: "docker.io/library/busybox:latest".into(),
                labels: [("a.b".to_owned(), "c".to_owned())].into_iter().collect(),
            }
            .to_any(),
        )
        .unwrap();
        assert_eq!(
            fields.get(&path("name")).as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        assert_eq!(fields.get(&path("labels.a.b")).as_deref(), Some("c"));
        assert_eq!(fields.get(&path("labels.a")), None);

        let bare = decode(&NamespaceDelete { name: "n".into() }.to_any()).unwrap();
        assert_eq!(bare.get(&path("labels.a")), None);
    }

    #[test]
    fn unknown_or_garbled_payloads_have_no_fields() {
        let unknown = prost_types::Any {
            type_url: "example.Unknown".into(),
            value: Vec::new(),
        };
        assert_eq!(decode(&unknown), None);
        let prefixed = prost_types::Any {
            type_url: format!("type.googleapis.com/{}", TaskExit::TYPE_URL),
            value: Vec::new(),
        };
        assert_eq!(decode(&prefixed), None);
        let garbled = prost_types::Any {
            type_url: TaskExit::TYPE_URL.into(),
            value: vec![0xff, 0xff, 0xff],
        };
        assert_eq!(decode(&garbled), None);
    }
}
