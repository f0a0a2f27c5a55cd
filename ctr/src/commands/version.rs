//! `berth version`: client version, then the server's (Version.Version, Introspection.Server).

use anyhow::Result;
use berth_proto::containerd::services::introspection::v1::ServerResponse;

use crate::client::Client;
use crate::error::{Object, RpcResultExt};

/// Flags of `version` (none).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Prints `Client:` and `Server:` sections like ctr.
pub async fn run(client: &Client, _args: Args) -> Result<()> {
    println!("Client:");
    println!("  Version:  {}", env!("CARGO_PKG_VERSION"));
    println!("  Revision: berth");
    println!(
        "  Rust version: {}",
        option_env!("CARGO_PKG_RUST_VERSION").unwrap_or("-")
    );
    println!();
    let v = client
        .version()
        .version(client.req(()))
        .await
        .rpc(client, "get", Object::kind("version"))?
        .into_inner();
    println!("Server:");
    println!("  Version:  {}", v.version);
    println!("  Revision: {}", v.revision);
    let server: Option<ServerResponse> = client
        .introspection()
        .server(client.req(()))
        .await
        .ok()
        .map(tonic::Response::into_inner);
    if let Some(s) = server {
        println!("  UUID: {}", s.uuid);
    }
    Ok(())
}
