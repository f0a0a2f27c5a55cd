//! `berth containers label ID [k=v...]`: Containers.Update with `labels.<k>` masks.

use anyhow::Result;
use berth_proto::containerd::services::containers::v1::{Container, UpdateContainerRequest};

use crate::client::Client;
use crate::commands::parse_labels;
use crate::error::{Object, RpcResultExt};
use crate::output::sorted_labels;

/// Arguments of `containers label`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
    /// Labels as KEY=VALUE; `KEY=` removes the label.
    pub labels: Vec<String>,
}

/// Updates the labels and prints the result.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let labels = parse_labels(&args.labels);
    let mut paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
    paths.sort();
    let c = client
        .containers()
        .update(client.req(UpdateContainerRequest {
            container: Some(Container {
                id: args.id.clone(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        }))
        .await
        .rpc(client, "update", Object::container(&args.id))?
        .into_inner()
        .container
        .unwrap_or_default();
    println!("{}", sorted_labels(&c.labels).join(","));
    Ok(())
}
