//! `berth volumes rm [-f] NAME...`: removes volumes; one a container uses (by its mounts record
//! or a spec mount inside the volume) is refused, naming the containers.

use anyhow::{anyhow, Result};

use crate::client::volumes as vol;
use crate::client::Client;
use crate::commands::Failures;

/// Flags of `volumes rm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do not fail on volumes that do not exist.
    #[arg(short, long)]
    pub force: bool,
    /// Volume names.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// Removes the volumes, printing each name removed.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let (store, _lock) = super::locked_store(client).await?;
    let used = vol::usage(&store, &vol::list_containers(client).await?);
    let mut failures = Failures::default();
    for name in &args.names {
        let removed = (|| -> Result<bool> {
            vol::validate_name(name)?;
            if store.get(name)?.is_none() {
                if args.force {
                    return Ok(false);
                }
                return Err(anyhow!(
                    "volume {name:?} not found in namespace {:?}",
                    client.namespace
                ));
            }
            if let Some(users) = used.get(name) {
                return Err(anyhow!(
                    "cannot remove volume {name:?}: volume is in use by container(s) {}",
                    users.join(", ")
                ));
            }
            store.remove(name)?;
            Ok(true)
        })();
        match removed {
            Ok(true) => println!("{name}"),
            Ok(false) => {}
            Err(err) => failures.add(err),
        }
    }
    failures.finish()
}
