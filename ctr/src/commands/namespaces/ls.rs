//! `berth namespaces ls`: Namespaces.List; `NAME LABELS`.

use anyhow::Result;
use berth_proto::containerd::services::namespaces::v1::ListNamespacesRequest;
use serde_json::json;

use crate::client::Client;
use crate::error::{Object, RpcResultExt};
use crate::output::{labels_json, sorted_labels, ListOpts, Listing};

/// Flags of `namespaces ls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub list: ListOpts,
}

/// Lists namespaces sorted by name.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let mut namespaces = client
        .namespaces()
        .list(client.req(ListNamespacesRequest::default()))
        .await
        .rpc(client, "list", Object::kind("namespaces"))?
        .into_inner()
        .namespaces;
    namespaces.sort_by(|a, b| a.name.cmp(&b.name));
    let mut listing = Listing::new(&["NAME", "LABELS"]);
    for ns in &namespaces {
        listing.push(
            ns.name.clone(),
            vec![ns.name.clone(), sorted_labels(&ns.labels).join(",")],
            json!({"name": ns.name, "labels": labels_json(&ns.labels)}),
        );
    }
    listing.print(&args.list)?;
    Ok(())
}
