//! `berth namespaces`: create, list, label and remove namespaces.

mod create;
mod label;
mod ls;
mod rm;

use anyhow::Result;
use clap::Subcommand;

use crate::client::Client;

/// `namespaces` verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new namespace: NAME [KEY=VALUE...].
    Create(create::Args),
    /// List namespaces.
    #[command(visible_alias = "list")]
    Ls(ls::Args),
    /// Set and clear labels of a namespace: NAME [KEY=VALUE...] (`KEY=` clears).
    Label(label::Args),
    /// Remove one or more namespaces.
    #[command(visible_aliases = ["remove", "delete", "del"])]
    Rm(rm::Args),
}

impl Command {
    /// Dispatches the verb.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Self::Create(a) => create::run(client, a).await,
            Self::Ls(a) => ls::run(client, a).await,
            Self::Label(a) => label::run(client, a).await,
            Self::Rm(a) => rm::run(client, a).await,
        }
    }
}
