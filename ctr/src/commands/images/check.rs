//! `berth images check [FILTER...]`: which images have all their content (and are unpacked);
//! `REF TYPE DIGEST STATUS SIZE UNPACKED`.

use anyhow::Result;
use berth_proto::containerd::services::images::v1::ListImagesRequest;
use serde_json::json;

use crate::client::images as img;
use crate::client::unpack::snapshot_exists;
use crate::client::Client;
use crate::error::{Object, RpcResultExt};
use crate::oci::Platform;
use crate::output::{bytes_binary, ListOpts, Listing};

/// Flags of `images check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub list: ListOpts,
    /// Snapshotter to check unpacking on.
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER")]
    pub snapshotter: Option<String>,
    /// Filters.
    pub filters: Vec<String>,
}

/// Checks each image.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let images = client
        .images()
        .list(client.req(ListImagesRequest {
            filters: args.filters.clone(),
        }))
        .await
        .rpc(client, "list", Object::kind("images"))?
        .into_inner()
        .images;
    let snapshotter = client.snapshotter(args.snapshotter.as_deref()).await?;
    let platform = Platform::host();
    let mut listing = Listing::new(&["REF", "TYPE", "DIGEST", "STATUS", "SIZE", "UNPACKED"]);
    for image in &images {
        let target = img::target(image);
        let check = img::check(client, &target, &platform).await?;
        let present: i64 = check.present.iter().map(|d| d.size).sum();
        let required: i64 = check.required.iter().map(|d| d.size).sum();
        let complete = check.available && check.missing.is_empty();
        let (status, size) = if check.available {
            let word = if check.missing.is_empty() {
                "complete"
            } else {
                "incomplete"
            };
            (
                format!("{word} ({}/{})", check.present.len(), check.required.len()),
                format!("{}/{}", bytes_binary(present), bytes_binary(required)),
            )
        } else {
            (
                format!("unavailable ({}/?)", check.present.len()),
                format!("{}/?", bytes_binary(present)),
            )
        };
        let unpacked = match img::rootfs(client, &target, &platform).await {
            Ok(rootfs) => match rootfs.chain_id() {
                Some(chain) => snapshot_exists(client, &snapshotter, &chain).await?,
                None => false,
            },
            Err(_) => false,
        };
        // -q prints only the complete images, as ctr.
        if args.list.quiet && !complete {
            continue;
        }
        listing.push(
            image.name.clone(),
            vec![
                image.name.clone(),
                target.media_type.clone(),
                target.digest.clone(),
                status.clone(),
                size,
                unpacked.to_string(),
            ],
            json!({
                "name": image.name,
                "media_type": target.media_type,
                "digest": target.digest,
                "status": status,
                "complete": complete,
                "present_size": present,
                "required_size": required,
                "missing": check.missing.iter().map(|d| d.digest.clone()).collect::<Vec<_>>(),
                "unpacked": unpacked,
            }),
        );
    }
    listing.print(&args.list)?;
    Ok(())
}
