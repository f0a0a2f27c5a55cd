//! `berth images rm REF...`: Images.Delete each (`--sync` on the last); a missing image is an
//! error naming it.

use anyhow::Result;
use berth_proto::containerd::services::images::v1::DeleteImageRequest;

use crate::client::Client;
use crate::commands::Failures;
use crate::error::{Object, RpcResultExt};

/// Arguments of `images rm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Synchronously remove the image and all associated resources.
    #[arg(long)]
    pub sync: bool,
    /// Image references.
    #[arg(required = true)]
    pub refs: Vec<String>,
}

/// Deletes each image, printing the names removed.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let mut failures = Failures::default();
    let last = args.refs.len().saturating_sub(1);
    for (i, name) in args.refs.iter().enumerate() {
        let res = client
            .images()
            .delete(client.req(DeleteImageRequest {
                name: name.clone(),
                sync: args.sync && i == last,
            }))
            .await
            .rpc(client, "delete", Object::image(name));
        match res {
            Ok(_) => println!("{name}"),
            Err(err) => failures.add(err),
        }
    }
    failures.finish()
}
