//! `berth content ingest REF`: Content.Write of stdin (STAT/WRITE/COMMIT), resumable by ref;
//! prints the committed digest.

use anyhow::Result;

use crate::client::content::{self, WriteSpec};
use crate::client::Client;
use crate::commands::label_flags;

/// Arguments of `content ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ingest reference: writes with the same ref resume.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Expected size of the content.
    #[arg(long, default_value_t = 0)]
    pub expected_size: i64,
    /// Expected digest of the content.
    #[arg(long, default_value = "")]
    pub expected_digest: String,
    /// Labels to commit the blob with (KEY=VALUE, repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
}

/// Streams stdin into the content store.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let spec = WriteSpec {
        reference: args.reference,
        total: args.expected_size,
        expected: args.expected_digest,
        labels: label_flags(&args.labels),
    };
    let written = content::write_blob(client, &spec, tokio::io::stdin()).await?;
    println!("{}", written.digest);
    Ok(())
}
