//! `berth content active [FILTER]`: Content.ListStatuses; `REF SIZE AGE`.

use anyhow::Result;
use berth_proto::containerd::services::content::v1::ListStatusesRequest;
use serde_json::json;

use crate::client::Client;
use crate::error::{Object, RpcResultExt};
use crate::output::{bytes_decimal, human_duration, ListOpts, Listing};
use crate::timefmt;

/// Flags of `content active`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub list: ListOpts,
    /// Filter (`ref~=…`).
    pub filter: Option<String>,
}

/// Lists active ingests.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let statuses = client
        .content()
        .list_statuses(client.req(ListStatusesRequest {
            filters: vec![args.filter.clone().unwrap_or_default()],
        }))
        .await
        .rpc(client, "list", Object::kind("active ingests"))?
        .into_inner()
        .statuses;
    let mut listing = Listing::new(&["REF", "SIZE", "AGE"]);
    for st in &statuses {
        listing.push(
            st.r#ref.clone(),
            vec![
                st.r#ref.clone(),
                bytes_decimal(st.offset),
                human_duration(timefmt::age_secs(st.started_at.as_ref())),
            ],
            json!({
                "ref": st.r#ref,
                "offset": st.offset,
                "total": st.total,
                "expected": st.expected,
                "started_at": timefmt::timestamp(st.started_at.as_ref()),
                "updated_at": timefmt::timestamp(st.updated_at.as_ref()),
            }),
        );
    }
    listing.print(&args.list)?;
    Ok(())
}
