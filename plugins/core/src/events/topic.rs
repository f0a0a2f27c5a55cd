//! Topic validation (containerd `validateTopic` in `events/exchange/exchange.go`) and the topics
//! the daemon itself publishes on (containerd `runtime/events.go` and the `services/*/local.go`
//! publishers). Note the singular `/snapshot/...`, as containerd spells it.

use berth_registry::identifiers;

use super::error::TopicError;

/// `ContainerCreate`.
pub const CONTAINER_CREATE: &str = "/containers/create";
/// `ContainerUpdate`.
pub const CONTAINER_UPDATE: &str = "/containers/update";
/// `ContainerDelete`.
pub const CONTAINER_DELETE: &str = "/containers/delete";
/// `ContentDelete`.
pub const CONTENT_DELETE: &str = "/content/delete";
/// `ImageCreate`.
pub const IMAGE_CREATE: &str = "/images/create";
/// `ImageUpdate`.
pub const IMAGE_UPDATE: &str = "/images/update";
/// `ImageDelete`.
pub const IMAGE_DELETE: &str = "/images/delete";
/// `NamespaceCreate`.
pub const NAMESPACE_CREATE: &str = "/namespaces/create";
/// `NamespaceUpdate`.
pub const NAMESPACE_UPDATE: &str = "/namespaces/update";
/// `NamespaceDelete`.
pub const NAMESPACE_DELETE: &str = "/namespaces/delete";
/// `SnapshotPrepare`.
pub const SNAPSHOT_PREPARE: &str = "/snapshot/prepare";
/// `SnapshotCommit`.
pub const SNAPSHOT_COMMIT: &str = "/snapshot/commit";
/// `SnapshotRemove`.
pub const SNAPSHOT_REMOVE: &str = "/snapshot/remove";
/// `TaskCreate`.
pub const TASK_CREATE: &str = "/tasks/create";
/// `TaskStart`.
pub const TASK_START: &str = "/tasks/start";
/// `TaskOOM`.
pub const TASK_OOM: &str = "/tasks/oom";
/// `TaskExit`.
pub const TASK_EXIT: &str = "/tasks/exit";
/// `TaskDelete`.
pub const TASK_DELETE: &str = "/tasks/delete";
/// `TaskExecAdded`.
pub const TASK_EXEC_ADDED: &str = "/tasks/exec-added";
/// `TaskExecStarted`.
pub const TASK_EXEC_STARTED: &str = "/tasks/exec-started";
/// `TaskPaused`.
pub const TASK_PAUSED: &str = "/tasks/paused";
/// `TaskResumed`.
pub const TASK_RESUMED: &str = "/tasks/resumed";
/// `TaskCheckpointed`.
pub const TASK_CHECKPOINTED: &str = "/tasks/checkpointed";

/// Checks that `topic` is `/` followed by one or more `/`-separated identifiers.
pub fn validate(topic: &str) -> Result<(), TopicError> {
    let rest = topic.strip_prefix('/').ok_or(if topic.is_empty() {
        TopicError::Empty
    } else {
        TopicError::NoLeadingSlash
    })?;
    if rest.is_empty() {
        return Err(TopicError::NoComponents);
    }
    for component in rest.split('/') {
        identifiers::validate(component).map_err(|source| TopicError::Component {
            component: component.to_owned(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_containerd_topics() {
        for ok in [
            CONTAINER_CREATE,
            SNAPSHOT_PREPARE,
            TASK_EXEC_STARTED,
            TASK_OOM,
            "/a",
            "/a/b.c/d_e",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_malformed_topics() {
        assert_eq!(validate(""), Err(TopicError::Empty));
        assert_eq!(validate("tasks/exit"), Err(TopicError::NoLeadingSlash));
        assert_eq!(validate("/"), Err(TopicError::NoComponents));
        for bad in ["//", "/tasks/", "/tasks//exit", "/tasks/?", "/a b", "/../x"] {
            assert!(
                matches!(validate(bad), Err(TopicError::Component { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn component_error_names_the_component() {
        let err = validate("/tasks/?").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("failed validation on component \"?\": identifier \"?\""),
            "{err}"
        );
    }
}
