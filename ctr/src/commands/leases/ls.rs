//! `berth leases ls [FILTER...]`: Leases.List; `ID CREATED AT LABELS`.

use anyhow::Result;
use berth_proto::containerd::services::leases::v1::ListRequest;
use serde_json::json;

use crate::client::Client;
use crate::error::{Object, RpcResultExt};
use crate::output::{labels_column, labels_json, ListOpts, Listing};
use crate::timefmt;

/// Flags of `leases ls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub list: ListOpts,
    /// Filters (`id==…`, `labels.…`).
    pub filters: Vec<String>,
}

/// Lists leases.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let leases = client
        .leases()
        .list(client.req(ListRequest {
            filters: args.filters.clone(),
        }))
        .await
        .rpc(client, "list", Object::kind("leases"))?
        .into_inner()
        .leases;
    let mut listing = Listing::new(&["ID", "CREATED AT", "LABELS"]);
    for l in &leases {
        let created = timefmt::timestamp(l.created_at.as_ref());
        listing.push(
            l.id.clone(),
            vec![l.id.clone(), created.clone(), labels_column(&l.labels)],
            json!({"id": l.id, "created_at": created, "labels": labels_json(&l.labels)}),
        );
    }
    listing.print(&args.list)?;
    Ok(())
}
