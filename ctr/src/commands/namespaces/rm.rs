//! `berth namespaces rm NAME...`: Namespaces.Delete each; a missing namespace is an error line
//! but the others are still removed.

use anyhow::Result;
use berth_proto::containerd::services::namespaces::v1::DeleteNamespaceRequest;

use crate::client::Client;
use crate::commands::Failures;
use crate::error::{Object, RpcResultExt};

/// Arguments of `namespaces rm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Namespaces to remove.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// Removes each namespace, printing its name on success.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let mut failures = Failures::default();
    for name in &args.names {
        let res = client
            .namespaces()
            .delete(client.req(DeleteNamespaceRequest { name: name.clone() }))
            .await
            .rpc(client, "delete", Object::namespace(name));
        match res {
            Ok(_) => println!("{name}"),
            Err(err) => {
                if crate::error::code_of(&err) == Some(tonic::Code::NotFound) {
                    // ctr counts a missing namespace as removed.
                    println!("{name}");
                    continue;
                }
                failures.add(err);
            }
        }
    }
    failures.finish()
}
