//! `berth plugins`: introspection of the daemon's plugins.

mod ls;

use anyhow::Result;
use clap::Subcommand;

use crate::client::Client;

/// `plugins` verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List plugins (filters as arguments, e.g. `type==io.containerd.snapshotter.v1`).
    #[command(visible_alias = "list")]
    Ls(ls::Args),
}

impl Command {
    /// Dispatches the verb.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Self::Ls(args) => ls::run(client, args).await,
        }
    }
}
