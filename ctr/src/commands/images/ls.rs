//! `berth images ls [FILTER...]`: Images.List; `REF TYPE DIGEST SIZE PLATFORMS LABELS`.

use anyhow::Result;
use berth_proto::containerd::services::images::v1::ListImagesRequest;
use serde_json::json;

use crate::client::images::{self as img, PlatformFilter};
use crate::client::Client;
use crate::error::{Object, RpcResultExt};
use crate::output::{bytes_binary, labels_column, labels_json, ListOpts, Listing};
use crate::timefmt;

/// Flags of `images ls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub list: ListOpts,
    /// Filters (`name==…`, `target.digest==…`, `labels.…`).
    pub filters: Vec<String>,
}

/// Lists images.
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
    let mut listing = Listing::new(&["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"]);
    let filter = PlatformFilter::host();
    for image in &images {
        let target = img::target(image);
        let (size, platforms) = if args.list.quiet {
            (0, Vec::new())
        } else {
            // Missing content is not fatal to a listing (ctr logs and goes on).
            let size = img::size(client, &target, &filter).await.unwrap_or(0);
            let platforms = img::platforms(client, &target).await.unwrap_or_default();
            (size, platforms)
        };
        let platform_col = if platforms.is_empty() {
            "-".to_owned()
        } else {
            platforms.join(",")
        };
        listing.push(
            image.name.clone(),
            vec![
                image.name.clone(),
                target.media_type.clone(),
                target.digest.clone(),
                bytes_binary(size),
                platform_col,
                labels_column(&image.labels),
            ],
            json!({
                "name": image.name,
                "media_type": target.media_type,
                "digest": target.digest,
                "size": size,
                "platforms": platforms,
                "labels": labels_json(&image.labels),
                "created_at": timefmt::timestamp(image.created_at.as_ref()),
                "updated_at": timefmt::timestamp(image.updated_at.as_ref()),
            }),
        );
    }
    listing.print(&args.list)?;
    Ok(())
}
