//! `berth leases`: create, list and remove leases.

mod create;
mod ls;
mod rm;

use anyhow::Result;
use clap::Subcommand;

use crate::client::Client;

/// `leases` verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a lease ([KEY=VALUE...] labels).
    Create(create::Args),
    /// List leases (filters as arguments).
    #[command(visible_alias = "list")]
    Ls(ls::Args),
    /// Delete leases.
    #[command(visible_aliases = ["remove", "delete", "del"])]
    Rm(rm::Args),
}

impl Command {
    /// Dispatches the verb.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Self::Create(a) => create::run(client, a).await,
            Self::Ls(a) => ls::run(client, a).await,
            Self::Rm(a) => rm::run(client, a).await,
        }
    }
}
