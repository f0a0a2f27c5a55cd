//! `berth volumes create [--label K=V]... [NAME]`: makes the volume (an existing one is
//! returned as it is, as Docker does) and prints its name.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::client::volumes::{self as vol};
use crate::client::Client;

/// Flags of `volumes create`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Labels of the volume (KEY=VALUE).
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// The volume's name (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`; random 64 hex digits when omitted).
    pub name: Option<String>,
}

/// Creates the volume.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let name = match args.name {
        Some(name) => name,
        None => vol::random_name()?,
    };
    // Checked before the store is touched: a bad name makes nothing.
    vol::validate_name(&name)?;
    let labels: BTreeMap<String, String> = crate::commands::parse_labels(&args.labels)
        .into_iter()
        .collect();
    let (store, _lock) = super::locked_store(client).await?;
    let (volume, _) = store.create(&name, &labels)?;
    println!("{}", volume.name);
    Ok(())
}
