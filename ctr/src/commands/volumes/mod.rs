//! `berth volumes`: named volumes as Docker's `docker volume` manages them, kept by the client
//! under the daemon's root (see [`crate::client::volumes`] for where and how).

mod create;
mod inspect;
mod ls;
mod prune;
mod rm;

use anyhow::Result;
use clap::Subcommand;

use crate::client::volumes::{StoreLock, VolumeStore};
use crate::client::Client;

/// `volumes` verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a volume: [--label K=V] [NAME] (a random name when none is given).
    Create(create::Args),
    /// List volumes.
    #[command(visible_alias = "list")]
    Ls(ls::Args),
    /// Print volumes as JSON: NAME...
    Inspect(inspect::Args),
    /// Remove volumes no container uses: NAME...
    #[command(visible_aliases = ["remove", "delete", "del"])]
    Rm(rm::Args),
    /// Remove unused anonymous volumes (all unused volumes with --all).
    Prune(prune::Args),
}

impl Command {
    /// Dispatches the verb.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Self::Create(a) => create::run(client, a).await,
            Self::Ls(a) => ls::run(client, a).await,
            Self::Inspect(a) => inspect::run(client, a).await,
            Self::Rm(a) => rm::run(client, a).await,
            Self::Prune(a) => prune::run(client, a).await,
        }
    }
}

/// The namespace's store, locked.
async fn locked_store(client: &Client) -> Result<(VolumeStore, StoreLock)> {
    let store = VolumeStore::open(client).await?;
    let locking = store.clone();
    let lock = tokio::task::spawn_blocking(move || locking.lock()).await??;
    Ok((store, lock))
}
