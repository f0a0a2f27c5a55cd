//! `berth content`: the content store (blobs and active ingests).

mod active;
mod edit;
mod fetch;
mod get;
mod ingest;
mod label;
mod ls;
mod rm;

use anyhow::Result;
use clap::Subcommand;

use crate::client::Client;

/// `content` verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List blobs in the content store (filters as arguments).
    #[command(visible_alias = "list")]
    Ls(ls::Args),
    /// Write a blob to stdout.
    Get(get::Args),
    /// Accept content on stdin and commit it under REF (resumable).
    Ingest(ingest::Args),
    /// Display active transfers.
    Active(active::Args),
    /// Add labels to a blob: DIGEST [KEY=VALUE...] (`KEY=` clears).
    Label(label::Args),
    /// Fetch all content of an image from a registry into the store (no unpack): REF.
    Fetch(fetch::Args),
    /// Edit a blob in $EDITOR and store the result as a new blob, printing its digest.
    Edit(edit::Args),
    /// Permanently delete one or more blobs.
    #[command(visible_aliases = ["remove", "delete", "del"])]
    Rm(rm::Args),
}

impl Command {
    /// Dispatches the verb.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Self::Ls(a) => ls::run(client, a).await,
            Self::Get(a) => get::run(client, a).await,
            Self::Ingest(a) => ingest::run(client, a).await,
            Self::Active(a) => active::run(client, a).await,
            Self::Label(a) => label::run(client, a).await,
            Self::Fetch(a) => fetch::run(client, a).await,
            Self::Edit(a) => edit::run(client, a).await,
            Self::Rm(a) => rm::run(client, a).await,
        }
    }
}
