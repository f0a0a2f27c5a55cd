//! `berth content rm DIGEST...`: Content.Delete each, printing the digests removed.

use anyhow::Result;
use berth_proto::containerd::services::content::v1::DeleteContentRequest;

use crate::client::Client;
use crate::commands::Failures;
use crate::error::{Object, RpcResultExt};

/// Arguments of `content rm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Digests to delete.
    #[arg(required = true)]
    pub digests: Vec<String>,
}

/// Deletes each blob.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let mut failures = Failures::default();
    for digest in &args.digests {
        let res = client
            .content()
            .delete(client.req(DeleteContentRequest {
                digest: digest.clone(),
            }))
            .await
            .rpc(client, "delete", Object::content(digest));
        match res {
            Ok(_) => println!("{digest}"),
            Err(err) => failures.add(err),
        }
    }
    failures.finish()
}
