//! `berth volumes ls`: `DRIVER VOLUME NAME` as Docker prints them; `-q` names, `--format json`.

use anyhow::Result;
use serde_json::json;

use crate::client::volumes::DRIVER;
use crate::client::Client;
use crate::output::{ListOpts, Listing};

/// Flags of `volumes ls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub list: ListOpts,
}

/// Lists the namespace's volumes.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let (store, _lock) = super::locked_store(client).await?;
    let volumes = store.list()?;
    let mut listing = Listing::new(&["DRIVER", "VOLUME NAME"]);
    for v in volumes {
        listing.push(
            v.name.clone(),
            vec![DRIVER.to_owned(), v.name.clone()],
            json!({
                "Driver": DRIVER,
                "Name": v.name,
                "Mountpoint": v.mountpoint.display().to_string(),
                "Labels": v.labels,
                "Anonymous": v.anonymous(),
            }),
        );
    }
    listing.print(&args.list)?;
    Ok(())
}
