//! `berth images`: the image store, and registry `pull` / `push` through `berth-transfer`.

mod check;
mod docker;
mod export;
mod import;
mod label;
mod ls;
mod mount;
pub mod pull;
mod push;
mod rm;
mod tag;
mod transfer;
mod unmount;
mod unpack;

use anyhow::{Context as _, Result};
use berth_proto::containerd::services::images::v1::Image;
use clap::Subcommand;

use crate::client::images::{self as img, PlatformFilter};
use crate::client::{unpack as unpacker, Client};
use crate::oci::Platform;

/// `images` verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List images known to the daemon (filters as arguments).
    #[command(visible_alias = "list")]
    Ls(ls::Args),
    /// Check that all content of images is available locally.
    Check(check::Args),
    /// Tag an image: SOURCE TARGET...
    Tag(tag::Args),
    /// Remove one or more images by reference.
    #[command(visible_aliases = ["remove", "delete", "del"])]
    Rm(rm::Args),
    /// Set and clear labels for an image: NAME [KEY=VALUE...].
    Label(label::Args),
    /// Import images from an OCI layout tar (`-` for stdin).
    Import(import::Args),
    /// Export images to an OCI layout tar (`-` for stdout).
    Export(export::Args),
    /// Unpack an image into snapshots.
    Unpack(unpack::Args),
    /// Mount an image at a target path.
    Mount(mount::Args),
    /// Unmount an image from a target path.
    Unmount(unmount::Args),
    /// Pull an image from a registry and unpack it: REF.
    Pull(pull::Args),
    /// Push an image to a registry: REMOTE [LOCAL].
    Push(push::Args),
}

impl Command {
    /// Dispatches the verb.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Self::Ls(a) => ls::run(client, a).await,
            Self::Check(a) => check::run(client, a).await,
            Self::Tag(a) => tag::run(client, a).await,
            Self::Rm(a) => rm::run(client, a).await,
            Self::Label(a) => label::run(client, a).await,
            Self::Import(a) => import::run(client, a).await,
            Self::Export(a) => export::run(client, a).await,
            Self::Unpack(a) => unpack::run(client, a).await,
            Self::Mount(a) => mount::run(client, a).await,
            Self::Unmount(a) => unmount::run(client, a).await,
            Self::Pull(a) => pull::run(client, a).await,
            Self::Push(a) => push::run(client, a).await,
        }
    }
}

/// `--platform` value or the host platform.
pub fn platform_arg(arg: Option<&str>) -> Result<Platform> {
    match arg {
        None | Some("") => Ok(Platform::host()),
        Some(text) => Platform::parse(text).with_context(|| format!("invalid platform {text:?}")),
    }
}

/// `--platform` / `--all-platforms` as a filter.
pub fn platform_filter(arg: Option<&str>, all: bool) -> Result<PlatformFilter> {
    if all {
        return Ok(PlatformFilter::All);
    }
    Ok(PlatformFilter::Only(platform_arg(arg)?))
}

/// Unpacks `image` for `platform` on `snapshotter`; returns the top chain ID.
pub async fn unpack_image(
    client: &Client,
    image: &Image,
    platform: &Platform,
    snapshotter: &str,
) -> Result<String> {
    let rootfs = img::rootfs(client, &img::target(image), platform).await?;
    let (chain, _) = unpacker::unpack(client, &rootfs, snapshotter).await?;
    Ok(chain)
}
