//! The metadata plugin's `content_sharing_policy` reaches the Content service: under `shared`
//! (the default) a namespace claims a blob another namespace holds by committing without its
//! bytes; under `isolated` the same commit fails and the blob stays invisible to it (containerd
//! `core/metadata/content.go`, the bolt plugin's `content_sharing_policy`).
//!
//! Needs root (berthd's snapshotters); without it the test skips, or fails under CI=true.

// A file under tests/ is a test crate of its own.
#![allow(clippy::tests_outside_test_module)]

use berth_integration::image::sha256_digest;
use berth_integration::{channel, namespaced, require_root, Daemon};
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::content::v1::{
    InfoRequest, WriteAction, WriteContentRequest,
};
use tonic::{Code, Status};

const DATA: &[u8] = b"one blob, two namespaces";

/// Content.Write in `ns`: STAT, then WRITE `data` if any, then COMMIT of [`DATA`]'s size and
/// digest.
async fn write(daemon: &Daemon, ns: &str, data: Option<&[u8]>) -> Result<(), Status> {
    let total = i64::try_from(DATA.len()).expect("size fits i64");
    let expected = sha256_digest(DATA);
    let mut messages = vec![WriteContentRequest {
        action: WriteAction::Stat as i32,
        r#ref: format!("sharing-{ns}"),
        total,
        expected: expected.clone(),
        ..Default::default()
    }];
    if let Some(data) = data {
        messages.push(WriteContentRequest {
            action: WriteAction::Write as i32,
            data: data.to_vec(),
            ..Default::default()
        });
    }
    messages.push(WriteContentRequest {
        action: WriteAction::Commit as i32,
        total,
        offset: total,
        expected,
        ..Default::default()
    });
    let mut client = ContentClient::new(channel(daemon).await);
    let mut stream = client
        .write(namespaced(ns, tokio_stream::iter(messages)))
        .await?
        .into_inner();
    while stream.message().await?.is_some() {}
    Ok(())
}

/// Content.Info of [`DATA`] in `ns`.
async fn info(daemon: &Daemon, ns: &str) -> Result<(), Status> {
    let mut client = ContentClient::new(channel(daemon).await);
    let req = InfoRequest {
        digest: sha256_digest(DATA),
    };
    client.info(namespaced(ns, req)).await.map(drop)
}

/// A daemon with the metadata plugin's sharing policy set to `policy` (none: the default).
fn daemon(policy: Option<&str>) -> Daemon {
    let config = policy.map(|p| {
        format!("[plugins.\"io.containerd.metadata.v1.sled\"]\ncontent_sharing_policy = \"{p}\"\n")
    });
    Daemon::start_with(config.as_deref(), &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_policy_lets_a_namespace_claim_a_blob_without_its_bytes() {
    if !require_root() {
        return;
    }
    for policy in [None, Some("shared")] {
        let d = daemon(policy);
        write(&d, "one", Some(DATA)).await.unwrap();
        write(&d, "two", None)
            .await
            .unwrap_or_else(|s| panic!("policy {policy:?}: claim without bytes: {s:?}"));
        info(&d, "two").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_policy_makes_each_namespace_send_the_bytes() {
    if !require_root() {
        return;
    }
    let d = daemon(Some("isolated"));
    write(&d, "one", Some(DATA)).await.unwrap();
    let refused = write(&d, "two", None).await.unwrap_err();
    assert_ne!(refused.code(), Code::Ok);
    assert_eq!(info(&d, "two").await.unwrap_err().code(), Code::NotFound);
    // With its bytes the blob is committed in the second namespace too.
    write(&d, "two", Some(DATA)).await.unwrap();
    info(&d, "two").await.unwrap();
}
