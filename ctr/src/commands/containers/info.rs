//! `berth containers info ID`: Containers.Get as indented JSON (`--spec`: only the OCI spec).

use anyhow::Result;
use berth_proto::containerd::services::containers::v1::GetContainerRequest;
use serde_json::Value;

use super::ls::container_json;
use crate::client::Client;
use crate::error::{Object, RpcResultExt};

/// Arguments of `containers info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only display the spec.
    #[arg(long)]
    pub spec: bool,
    /// Container id.
    pub id: String,
}

/// Prints the container.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let c = client
        .containers()
        .get(client.req(GetContainerRequest {
            id: args.id.clone(),
        }))
        .await
        .rpc(client, "get", Object::container(&args.id))?
        .into_inner()
        .container
        .unwrap_or_default();
    // The spec travels as JSON inside an Any.
    let spec: Value = c
        .spec
        .as_ref()
        .and_then(|a| serde_json::from_slice(&a.value).ok())
        .unwrap_or(Value::Null);
    let out = if args.spec {
        spec
    } else {
        let mut v = container_json(&c);
        v["spec"] = spec;
        v
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
