//! `berth content ls [FILTER...]`: Content.List; `DIGEST SIZE AGE LABELS`.

use anyhow::Result;
use berth_proto::containerd::services::content::v1::ListContentRequest;
use serde_json::json;

use crate::client::Client;
use crate::error::{Object, RpcResultExt};
use crate::output::{bytes_decimal, human_duration, labels_column, labels_json, ListOpts, Listing};
use crate::timefmt;

/// Flags of `content ls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub list: ListOpts,
    /// Filters (`digest==…`, `labels.…`).
    pub filters: Vec<String>,
}

/// Lists blobs.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let mut stream = client
        .content()
        .list(client.req(ListContentRequest {
            filters: args.filters.clone(),
        }))
        .await
        .rpc(client, "list", Object::kind("content"))?
        .into_inner();
    let mut listing = Listing::new(&["DIGEST", "SIZE", "AGE", "LABELS"]);
    while let Some(batch) = stream
        .message()
        .await
        .rpc(client, "list", Object::kind("content"))?
    {
        for info in batch.info {
            let age = timefmt::age_secs(info.created_at.as_ref());
            listing.push(
                info.digest.clone(),
                vec![
                    info.digest.clone(),
                    bytes_decimal(info.size),
                    human_duration(age),
                    labels_column(&info.labels),
                ],
                json!({
                    "digest": info.digest,
                    "size": info.size,
                    "created_at": timefmt::timestamp(info.created_at.as_ref()),
                    "updated_at": timefmt::timestamp(info.updated_at.as_ref()),
                    "labels": labels_json(&info.labels),
                }),
            );
        }
    }
    listing.print(&args.list)?;
    Ok(())
}
