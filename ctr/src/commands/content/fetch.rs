//! `berth content fetch REF`: fetch all content of an image from a registry into the content
//! store and record the image, without unpacking (ctr `content fetch`, which is containerd's
//! `client.Fetch`): the pull of `images pull --no-unpack`, sharing its flags and code.

use anyhow::Result;

use crate::client::{Client, DEFAULT_SNAPSHOTTER};
use crate::commands::images::pull::{fetch, FetchFlags};

/// Arguments of `content fetch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub fetch: FetchFlags,
}

/// Fetches; prints `<name> (<digest>)` of the recorded image.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    // Nothing is unpacked, so the snapshotter is not used.
    let image = fetch(client, &args.fetch, false, DEFAULT_SNAPSHOTTER).await?;
    println!("{} ({})", image.name, image.target.digest);
    Ok(())
}
