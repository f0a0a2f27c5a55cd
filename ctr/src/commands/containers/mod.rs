//! `berth containers`: container metadata, and `create` (the container half of `run`).

mod create;
mod info;
mod label;
mod ls;
mod rm;

use anyhow::Result;
use clap::Subcommand;

use crate::client::Client;

/// `containers` verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container: [flags] IMAGE|ROOTFS ID [COMMAND] [ARG...].
    Create(Box<create::Args>),
    /// List containers (filters as arguments).
    #[command(visible_alias = "list")]
    Ls(ls::Args),
    /// Get info about a container as JSON.
    Info(info::Args),
    /// Delete one or more containers (and their snapshots).
    #[command(visible_aliases = ["remove", "delete", "del"])]
    Rm(rm::Args),
    /// Set and clear labels for a container: ID [KEY=VALUE...].
    Label(label::Args),
}

impl Command {
    /// Dispatches the verb.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Self::Create(a) => create::run(client, *a).await,
            Self::Ls(a) => ls::run(client, a).await,
            Self::Info(a) => info::run(client, a).await,
            Self::Rm(a) => rm::run(client, a).await,
            Self::Label(a) => label::run(client, a).await,
        }
    }
}
