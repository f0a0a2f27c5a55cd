//! `berth leases rm ID...`: Leases.Delete each (`--sync` waits for garbage collection).

use anyhow::Result;

use crate::client::{leases, Client};
use crate::commands::Failures;

/// Arguments of `leases rm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Wait for the resources to be garbage collected.
    #[arg(long)]
    pub sync: bool,
    /// Lease ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// Deletes each lease, printing the ids removed.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let mut failures = Failures::default();
    for id in &args.ids {
        match leases::delete(client, id, args.sync).await {
            Ok(()) => println!("{id}"),
            Err(err) => failures.add(err),
        }
    }
    failures.finish()
}
