//! `berth volumes inspect NAME...`: a JSON array of Docker's volume objects.

use anyhow::Result;
use serde_json::Value;

use crate::client::volumes as vol;
use crate::client::Client;
use crate::commands::Failures;

/// Arguments of `volumes inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Volume names.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// Prints the volumes found; a missing one is an error.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let (store, _lock) = super::locked_store(client).await?;
    let mut failures = Failures::default();
    let mut out = Vec::new();
    for name in &args.names {
        match vol::validate_name(name).and_then(|()| store.get(name)) {
            Ok(Some(v)) => out.push(v.inspect_json()),
            Ok(None) => failures.add(anyhow::anyhow!(
                "volume {name:?} not found in namespace {:?}",
                client.namespace
            )),
            Err(err) => failures.add(err),
        }
    }
    println!("{}", serde_json::to_string_pretty(&Value::Array(out))?);
    failures.finish()
}
