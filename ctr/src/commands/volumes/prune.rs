//! `berth volumes prune [--all]`: removes the volumes no container uses: anonymous ones, or every
//! one with `--all` (Docker 23's rule).

use anyhow::Result;

use crate::client::volumes as vol;
use crate::client::Client;

/// Flags of `volumes prune`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remove unused named volumes too, not only anonymous ones (no `-a`: that is the global
    /// `--address`).
    #[arg(long)]
    pub all: bool,
    /// Do not prompt (berth never prompts; accepted for Docker's scripts).
    #[arg(short, long)]
    pub force: bool,
}

/// Removes the unused volumes, printing each name removed.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let (store, _lock) = super::locked_store(client).await?;
    let used = vol::usage(&store, &vol::list_containers(client).await?);
    for v in store.list()? {
        if used.contains_key(&v.name) || !(args.all || v.anonymous()) {
            continue;
        }
        store.remove(&v.name)?;
        println!("{}", v.name);
    }
    Ok(())
}
