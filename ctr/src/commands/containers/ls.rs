//! `berth containers ls [FILTER...]`: Containers.ListStream (List when Unimplemented);
//! `CONTAINER IMAGE RUNTIME`.

use anyhow::Result;
use berth_proto::containerd::services::containers::v1::{Container, ListContainersRequest};
use serde_json::json;
use tonic::Code;

use crate::client::Client;
use crate::error::{Object, RpcResultExt};
use crate::output::{labels_json, ListOpts, Listing};
use crate::timefmt;

/// Flags of `containers ls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub list: ListOpts,
    /// Filters (`id==…`, `image==…`, `labels.…`).
    pub filters: Vec<String>,
}

async fn list(client: &Client, filters: Vec<String>) -> Result<Vec<Container>> {
    let req = ListContainersRequest { filters };
    match client
        .containers()
        .list_stream(client.req(req.clone()))
        .await
    {
        Ok(resp) => {
            let mut stream = resp.into_inner();
            let mut out = Vec::new();
            while let Some(msg) =
                stream
                    .message()
                    .await
                    .rpc(client, "list", Object::kind("containers"))?
            {
                out.extend(msg.container);
            }
            Ok(out)
        }
        Err(s) if s.code() == Code::Unimplemented => Ok(client
            .containers()
            .list(client.req(req))
            .await
            .rpc(client, "list", Object::kind("containers"))?
            .into_inner()
            .containers),
        Err(s) => Err(s).rpc(client, "list", Object::kind("containers")),
    }
}

/// A container as JSON (without the spec).
pub fn container_json(c: &Container) -> serde_json::Value {
    json!({
        "id": c.id,
        "image": c.image,
        "runtime": c.runtime.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
        "snapshotter": c.snapshotter,
        "snapshot_key": c.snapshot_key,
        "labels": labels_json(&c.labels),
        "created_at": timefmt::timestamp(c.created_at.as_ref()),
        "updated_at": timefmt::timestamp(c.updated_at.as_ref()),
    })
}

/// Lists containers.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let containers = list(client, args.filters.clone()).await?;
    let mut listing = Listing::new(&["CONTAINER", "IMAGE", "RUNTIME"]);
    for c in &containers {
        let image = if c.image.is_empty() {
            "-".to_owned()
        } else {
            c.image.clone()
        };
        let runtime = c
            .runtime
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_default();
        listing.push(
            c.id.clone(),
            vec![c.id.clone(), image, runtime],
            container_json(c),
        );
    }
    listing.print(&args.list)?;
    Ok(())
}
