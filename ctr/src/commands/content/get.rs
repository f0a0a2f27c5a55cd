//! `berth content get DIGEST`: Content.Info, then Content.Read to stdout.

use anyhow::Result;

use crate::client::{content, Client};

/// Arguments of `content get`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Digest of the blob.
    pub digest: String,
}

/// Writes the blob to stdout.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    content::info(client, &args.digest).await?;
    let mut out = tokio::io::stdout();
    content::read_to(client, &args.digest, &mut out).await?;
    Ok(())
}
