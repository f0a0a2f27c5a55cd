//! `berth containers create [flags] IMAGE|ROOTFS ID [COMMAND] [ARG...]`: the container half of
//! `run` (ctr's `containers create` calls `run.NewContainer`); prints nothing.

use anyhow::Result;

use crate::client::Client;
use crate::commands::run::{self, ContainerFlags};

/// Flags and arguments of `containers create`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub container: ContainerFlags,
    /// Image reference (or, with --rootfs, a host directory; with --config, the container id).
    #[arg(value_name = "IMAGE|ROOTFS")]
    pub image: String,
    /// Container id.
    pub id: Option<String>,
    /// Command and arguments (default: the image's entrypoint and cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Creates the container.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let (image, id) = run::ref_and_id(&args.container, &args.image, args.id.as_deref())?;
    let made = run::new_container(client, &args.container, image, id, &args.args).await?;
    run::NewContainer::release_lease(made.lease).await
}
