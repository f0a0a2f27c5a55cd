//! The client side of the restart monitor's labels (containerd `runtime/restart`), as nerdctl
//! writes them: `run --restart P` creates the container with [`label::POLICY`] (and the log URI
//! in [`label::LOG_URI`]), and once its task has started sets [`label::STATUS`] = `running` and
//! [`label::EXPLICITLY_STOPPED`] = `false` (nerdctl `Start`); a user's `tasks kill` sets
//! [`label::EXPLICITLY_STOPPED`] = `true` first (nerdctl `kill`/`stop`), which `unless-stopped`
//! honours and `always` does not (containerd 1.7 `restart.Reconcile`).

use std::collections::HashMap;

use anyhow::Result;
use berth_proto::containerd::services::containers::v1::{Container, UpdateContainerRequest};
pub use berth_restart::label;

use super::Client;
use crate::error::{Object, RpcResultExt};

/// Container label with the json-file log of a `--log-driver json-file` container (read by
/// `berth logs`).
pub const LOG_PATH_LABEL: &str = "berth/log-path";

/// Sets `labels` on container `id` (Containers.Update with `labels.<k>` masks).
pub async fn set_labels(client: &Client, id: &str, labels: &[(&str, &str)]) -> Result<()> {
    let paths = labels.iter().map(|(k, _)| format!("labels.{k}")).collect();
    let labels: HashMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    client
        .containers()
        .update(client.req(UpdateContainerRequest {
            container: Some(Container {
                id: id.to_owned(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        }))
        .await
        .rpc(client, "update", Object::container(id))?;
    Ok(())
}

/// Whether the restart monitor manages container `c`.
pub fn is_managed(c: &Container) -> bool {
    c.labels.contains_key(label::POLICY) || c.labels.contains_key(label::STATUS)
}

/// After a user started the task of a container with a policy: keep it running.
pub async fn mark_started(client: &Client, id: &str) -> Result<()> {
    set_labels(
        client,
        id,
        &[
            (label::STATUS, "running"),
            (label::EXPLICITLY_STOPPED, "false"),
        ],
    )
    .await
}

/// Before a user stops or signals a managed container: `unless-stopped` leaves it stopped.
pub async fn mark_explicitly_stopped(client: &Client, id: &str) -> Result<()> {
    set_labels(client, id, &[(label::EXPLICITLY_STOPPED, "true")]).await
}
