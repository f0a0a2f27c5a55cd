//! `berth snapshots ls [FILTER...]`: Snapshots.List; `KEY PARENT KIND`.

use anyhow::Result;

use super::{info_json, kind_name, list_all};
use crate::client::Client;
use crate::output::{ListOpts, Listing};

/// Flags of `snapshots ls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub list: ListOpts,
    /// Filters (`kind==committed`, `parent==…`, `labels.…`).
    pub filters: Vec<String>,
}

/// Lists snapshots.
pub async fn run(client: &Client, snapshotter: &str, args: Args) -> Result<()> {
    let infos = list_all(client, snapshotter, args.filters.clone()).await?;
    let mut listing = Listing::new(&["KEY", "PARENT", "KIND"]);
    for info in &infos {
        listing.push(
            info.name.clone(),
            vec![
                info.name.clone(),
                info.parent.clone(),
                kind_name(info.kind).to_owned(),
            ],
            info_json(info),
        );
    }
    listing.print(&args.list)?;
    Ok(())
}
