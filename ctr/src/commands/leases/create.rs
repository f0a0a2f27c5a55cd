//! `berth leases create [k=v...]`: Leases.Create (`--id`, `--expires`, default 24h); prints the id.

use std::time::Duration;

use anyhow::Result;
use berth_wellknown::label;

use crate::cli::parse_duration;
use crate::client::leases;
use crate::client::Client;
use crate::commands::parse_labels;

use crate::timefmt;

/// Arguments of `leases create`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Lease id (default: a random one).
    #[arg(long, default_value = "")]
    pub id: String,
    /// Expiry (`0` for none).
    #[arg(short = 'x', long, default_value = "24h", value_parser = parse_duration)]
    pub expires: Duration,
    /// Labels as KEY=VALUE.
    pub labels: Vec<String>,
}

/// Creates the lease.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let mut labels = parse_labels(&args.labels);
    if !args.expires.is_zero() {
        let (now, _) = timefmt::now();
        let secs = i64::try_from(args.expires.as_secs()).unwrap_or(i64::MAX / 2);
        labels.insert(label::GC_EXPIRE.to_owned(), timefmt::rfc3339(now + secs));
    }
    let lease = leases::create(client, &args.id, labels).await?;
    println!("{}", lease.id);
    Ok(())
}
