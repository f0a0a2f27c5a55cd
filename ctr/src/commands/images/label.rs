//! `berth images label NAME [k=v...]`: Images.Update with `labels.<k>` masks (`-r`: `labels`).

use anyhow::Result;
use berth_proto::containerd::services::images::v1::{Image, UpdateImageRequest};

use crate::client::Client;
use crate::commands::parse_labels;
use crate::error::{Object, RpcResultExt};
use crate::output::sorted_labels;

/// Arguments of `images label`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Replace all labels.
    #[arg(short, long)]
    pub replace_all: bool,
    /// Image name.
    pub name: String,
    /// Labels as KEY=VALUE; `KEY=` removes the label.
    pub labels: Vec<String>,
}

/// Updates the labels and prints the result.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let labels = parse_labels(&args.labels);
    let mut paths: Vec<String> = if args.replace_all {
        vec!["labels".to_owned()]
    } else {
        labels.keys().map(|k| format!("labels.{k}")).collect()
    };
    paths.sort();
    let updated = client
        .images()
        .update(client.req(UpdateImageRequest {
            image: Some(Image {
                name: args.name.clone(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        }))
        .await
        .rpc(client, "update", Object::image(&args.name))?
        .into_inner()
        .image
        .unwrap_or_default();
    println!("{}", sorted_labels(&updated.labels).join(","));
    Ok(())
}
