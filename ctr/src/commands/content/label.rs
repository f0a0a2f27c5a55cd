//! `berth content label DIGEST [k=v...]`: Content.Update with a `labels.<k>` mask per key;
//! prints the resulting labels.

use anyhow::Result;

use crate::client::{content, Client};
use crate::commands::parse_labels;
use crate::output::sorted_labels;

/// Arguments of `content label`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Digest of the blob.
    pub digest: String,
    /// Labels as KEY=VALUE; `KEY=` removes the label.
    pub labels: Vec<String>,
}

/// Updates the labels.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let info = content::update_labels(client, &args.digest, parse_labels(&args.labels)).await?;
    println!("{}", sorted_labels(&info.labels).join(","));
    Ok(())
}
