//! Unpacking an image into snapshots (containerd `Image.Unpack` + `rootfs.ApplyLayerWithOpts`):
//! per layer Stat(chainID) ⇒ skip, else Prepare(`extract-<unique> <chainID>`), Diff.Apply,
//! Commit(chainID) and the `containerd.io/uncompressed` label; then the config blob gets
//! `containerd.io/gc.ref.snapshot.<snapshotter>` = top chain ID.

use anyhow::{bail, Result};
use berth_proto::containerd::services::diff::v1::ApplyRequest;
use berth_proto::containerd::services::snapshots::v1::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use berth_wellknown::label;
use tonic::Code;

use super::images::RootFs;
use super::leases::{self, TempLease};
use super::{content, Client};
use crate::error::{Object, RpcResultExt};
use crate::oci;

/// Whether a committed snapshot named `chain_id` exists.
pub async fn snapshot_exists(client: &Client, snapshotter: &str, chain_id: &str) -> Result<bool> {
    let resp = client
        .snapshots()
        .stat(client.req(StatSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            key: chain_id.to_owned(),
        }))
        .await;
    match resp {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(s).rpc(client, "stat", Object::snapshot(snapshotter, chain_id)),
    }
}

/// Unpacks `rootfs` on `snapshotter` under a temporary lease; returns the top chain ID and
/// whether any layer was applied.
pub async fn unpack(client: &Client, rootfs: &RootFs, snapshotter: &str) -> Result<(String, bool)> {
    let lease = TempLease::new(client).await?;
    let result = unpack_leased(&lease.client, rootfs, snapshotter).await;
    let done = lease.done().await;
    let out = result?;
    done?;
    Ok(out)
}

async fn unpack_leased(
    client: &Client,
    rootfs: &RootFs,
    snapshotter: &str,
) -> Result<(String, bool)> {
    let chain = oci::chain_ids(&rootfs.diff_ids());
    let mut parent = String::new();
    let mut applied_any = false;
    for ((layer, diff_id), chain_id) in rootfs.layers.iter().zip(&chain) {
        if snapshot_exists(client, snapshotter, chain_id).await? {
            parent = chain_id.clone();
            continue;
        }
        apply_layer(client, snapshotter, layer, diff_id, chain_id, &parent).await?;
        content::update_labels(
            client,
            &layer.digest,
            [(label::UNCOMPRESSED.to_owned(), diff_id.clone())],
        )
        .await?;
        applied_any = true;
        parent = chain_id.clone();
    }
    if parent.is_empty() {
        bail!("image has no layers to unpack");
    }
    content::update_labels(
        client,
        &rootfs.config.digest,
        [(
            format!("{}.{snapshotter}", label::GC_REF_SNAPSHOT),
            parent.clone(),
        )],
    )
    .await?;
    Ok((parent, applied_any))
}

/// Prepare, apply, verify and commit one layer.
async fn apply_layer(
    client: &Client,
    snapshotter: &str,
    layer: &oci::Descriptor,
    diff_id: &str,
    chain_id: &str,
    parent: &str,
) -> Result<()> {
    let key = format!("extract-{} {chain_id}", leases::unique_part());
    let mounts = client
        .snapshots()
        .prepare(client.req(PrepareSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            key: key.clone(),
            parent: parent.to_owned(),
            labels: Default::default(),
        }))
        .await
        .rpc(client, "prepare", Object::snapshot(snapshotter, &key))?
        .into_inner()
        .mounts;
    let result = async {
        let applied = client
            .diff()
            .apply(client.req(ApplyRequest {
                diff: Some(layer.into()),
                mounts,
                payloads: Default::default(),
            }))
            .await
            .rpc(
                client,
                "apply",
                Object::named("layer", layer.digest.clone()),
            )?
            .into_inner()
            .applied
            .unwrap_or_default();
        if applied.digest != diff_id {
            bail!(
                "wrong diff id calculated on extraction of {}: {} (config says {diff_id})",
                layer.digest,
                applied.digest
            );
        }
        let commit = client
            .snapshots()
            .commit(client.req(CommitSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                name: chain_id.to_owned(),
                key: key.clone(),
                labels: Default::default(),
            }))
            .await;
        match commit {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(s).rpc(client, "commit", Object::snapshot(snapshotter, chain_id)),
        }
    }
    .await;
    if result.is_err() {
        let _ = client
            .snapshots()
            .remove(client.req(RemoveSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                key,
            }))
            .await;
    }
    result
}
