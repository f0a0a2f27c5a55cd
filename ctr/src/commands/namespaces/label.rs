//! `berth namespaces label NAME [k=v...]`: Namespaces.Update with a `labels.<k>` mask per key.

use anyhow::Result;
use berth_proto::containerd::services::namespaces::v1::{Namespace, UpdateNamespaceRequest};

use crate::client::Client;
use crate::commands::parse_labels;
use crate::error::{Object, RpcResultExt};

/// Arguments of `namespaces label`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Namespace name.
    pub name: String,
    /// Labels as KEY=VALUE; `KEY=` removes the label.
    pub labels: Vec<String>,
}

/// Updates the labels.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let labels = parse_labels(&args.labels);
    let mut paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
    paths.sort();
    client
        .namespaces()
        .update(client.req(UpdateNamespaceRequest {
            namespace: Some(Namespace {
                name: args.name.clone(),
                labels,
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        }))
        .await
        .rpc(client, "update", Object::namespace(&args.name))?;
    Ok(())
}
