//! `berth namespaces create NAME [k=v...]`: Namespaces.Create.

use anyhow::Result;
use berth_proto::containerd::services::namespaces::v1::{CreateNamespaceRequest, Namespace};

use crate::client::Client;
use crate::commands::parse_labels;
use crate::error::{Object, RpcResultExt};

/// Arguments of `namespaces create`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Namespace name.
    pub name: String,
    /// Labels as KEY=VALUE.
    pub labels: Vec<String>,
}

/// Creates the namespace.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    client
        .namespaces()
        .create(client.req(CreateNamespaceRequest {
            namespace: Some(Namespace {
                name: args.name.clone(),
                labels: parse_labels(&args.labels),
            }),
        }))
        .await
        .rpc(client, "create", Object::namespace(&args.name))?;
    Ok(())
}
