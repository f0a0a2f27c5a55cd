//! `berth snapshots [--snapshotter S]`: snapshots of one snapshotter (default: the namespace's
//! `containerd.io/defaults/snapshotter` label, else overlayfs).

mod commit;
mod info;
mod label;
mod ls;
mod mounts;
mod prepare;
mod rm;
mod tree;
mod usage;
mod view;

use std::collections::HashMap;

use anyhow::Result;
use berth_proto::containerd::services::snapshots::v1::{Info, Kind, ListSnapshotsRequest};
use berth_proto::containerd::types::Mount;
use berth_wellknown::label as wellknown_label;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::Client;
use crate::error::{Object, RpcResultExt};

use crate::output::labels_json;
use crate::timefmt;

/// `snapshots` with its shared flag.
#[derive(Debug, clap::Args)]
pub struct Group {
    /// Snapshotter name.
    #[arg(long, global = true, env = "CONTAINERD_SNAPSHOTTER")]
    pub snapshotter: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// `snapshots` verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List snapshots.
    #[command(visible_alias = "list")]
    Ls(ls::Args),
    /// Prepare an active snapshot: KEY [PARENT].
    Prepare(prepare::Args),
    /// Create a read-only view: KEY [PARENT].
    View(view::Args),
    /// Print `mount` commands for a snapshot: TARGET KEY.
    Mounts(mounts::Args),
    /// Commit an active snapshot: NAME KEY.
    Commit(commit::Args),
    /// Remove snapshots.
    #[command(visible_aliases = ["remove", "delete", "del"])]
    Rm(rm::Args),
    /// Show information about a snapshot as JSON.
    Info(info::Args),
    /// Display the snapshots as a tree.
    Tree(tree::Args),
    /// Disk usage of snapshots.
    Usage(usage::Args),
    /// Set and clear labels of a snapshot: KEY [KEY=VALUE...].
    Label(label::Args),
}

impl Group {
    /// Resolves the snapshotter and dispatches the verb.
    pub async fn run(self, client: &Client) -> Result<()> {
        let sn = client.snapshotter(self.snapshotter.as_deref()).await?;
        match self.command {
            Command::Ls(a) => ls::run(client, &sn, a).await,
            Command::Prepare(a) => prepare::run(client, &sn, a).await,
            Command::View(a) => view::run(client, &sn, a).await,
            Command::Mounts(a) => mounts::run(client, &sn, a).await,
            Command::Commit(a) => commit::run(client, &sn, a).await,
            Command::Rm(a) => rm::run(client, &sn, a).await,
            Command::Info(a) => info::run(client, &sn, a).await,
            Command::Tree(a) => tree::run(client, &sn, a).await,
            Command::Usage(a) => usage::run(client, &sn, a).await,
            Command::Label(a) => label::run(client, &sn, a).await,
        }
    }
}

/// Every snapshot (Snapshots.List, no filters unless given).
pub async fn list_all(
    client: &Client,
    snapshotter: &str,
    filters: Vec<String>,
) -> Result<Vec<Info>> {
    let mut stream = client
        .snapshots()
        .list(client.req(ListSnapshotsRequest {
            snapshotter: snapshotter.to_owned(),
            filters,
        }))
        .await
        .rpc(client, "list", Object::snapshots(snapshotter))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(batch) =
        stream
            .message()
            .await
            .rpc(client, "list", Object::snapshots(snapshotter))?
    {
        out.extend(batch.info);
    }
    Ok(out)
}

/// Go's `snapshots.Kind.String()`.
pub fn kind_name(kind: i32) -> &'static str {
    match Kind::try_from(kind) {
        Ok(Kind::View) => "View",
        Ok(Kind::Active) => "Active",
        Ok(Kind::Committed) => "Committed",
        _ => "Unknown",
    }
}

/// A snapshot as JSON (ctr `snapshots info` fields).
pub fn info_json(info: &Info) -> Value {
    json!({
        "name": info.name,
        "parent": info.parent,
        "kind": kind_name(info.kind),
        "created_at": timefmt::timestamp(info.created_at.as_ref()),
        "updated_at": timefmt::timestamp(info.updated_at.as_ref()),
        "labels": labels_json(&info.labels),
    })
}

/// Labels for snapshots ctr creates: `containerd.io/gc.root` = now, RFC 3339.
pub fn gc_root_labels(extra: HashMap<String, String>) -> HashMap<String, String> {
    let mut labels = extra;
    let (now, _) = timefmt::now();
    labels.insert(wellknown_label::GC_ROOT.to_owned(), timefmt::rfc3339(now));
    labels
}

/// `mount -t <type> <source> <target> -o <options>` per mount (ctr `printMounts`).
pub fn print_mounts(target: &str, mounts: &[Mount]) {
    for m in mounts {
        println!(
            "mount -t {} {} {} -o {}",
            m.r#type,
            m.source,
            target,
            m.options.join(",")
        );
    }
}
