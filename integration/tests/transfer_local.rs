//! The daemon's local transfer stores (`berth_core::transfer_local`) against a real registry
//! (Debian's `docker-registry`): push an image out of one set of stores and pull it into a
//! fresh one, without a daemon or gRPC in between, as CRI's `PullImage` will.
//!
//! Needs root (the native snapshotter's bind mounts, applying with numeric owners) and
//! `/usr/bin/docker-registry`; a missing one skips the test, or fails it under CI=true.

// A file under tests/ is a test crate of its own.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use berth_core::content::ContentStore as Blobs;
use berth_core::layer_content::layer_differ;
use berth_core::namespaced_content::NamespacedContent;
use berth_core::namespaced_snapshots::NamespacedSnapshots;
use berth_core::transfer_local::LocalStores;
use berth_core::{Descriptor as MetaDescriptor, Image as MetaImage, MetadataStore};
use berth_integration::image::{build_busybox_image, TestImage, HELLO};
use berth_integration::registry::{require_registry, Registry};
use berth_integration::require_root;
use berth_snapshotters::native::NativeSnapshotter;
use berth_snapshotters::Snapshotter;
use berth_transfer::types::chain_ids;
use berth_transfer::{pull, push, Platform, PullOptions, PushOptions, RegistryOptions};
use berth_wellknown::media_type;

const NS: &str = "default";
const SNAPSHOTTER: &str = "native";
const IMAGE: &str = "docker.io/library/bb:latest";

/// A daemon's stores on a temporary root, without the daemon.
struct Env {
    _dir: tempfile::TempDir,
    meta: Arc<MetadataStore>,
    content: NamespacedContent,
    snapshots: NamespacedSnapshots,
    stores: LocalStores,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("create a temporary root");
    let meta =
        Arc::new(MetadataStore::open(&dir.path().join("meta")).expect("open the metadata store"));
    let blobs = Arc::new(Blobs::open(&dir.path().join("content")).expect("open the content store"));
    let content = NamespacedContent::new(meta.clone(), blobs, true);
    let native: Arc<dyn Snapshotter> = Arc::new(
        NativeSnapshotter::new(&dir.path().join("native")).expect("open the native snapshotter"),
    );
    let snapshots = NamespacedSnapshots::new(
        meta.clone(),
        BTreeMap::from([(SNAPSHOTTER.to_owned(), native)]),
    );
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).expect("create the differ's tmp dir");
    let differ = layer_differ(content.clone(), tmp);
    let stores = LocalStores::new(
        meta.clone(),
        content.clone(),
        snapshots.clone(),
        SNAPSHOTTER,
        differ,
    );
    Env {
        _dir: dir,
        meta,
        content,
        snapshots,
        stores,
    }
}

impl Env {
    /// Writes the blobs of `img` and its image record, as an import would.
    fn seed(&self, img: &TestImage) {
        for (digest, data) in &img.blobs {
            let reference = format!("seed-{digest}");
            let size = data.len() as u64;
            let mut w = self
                .content
                .writer(NS, &reference, size, Some(digest), None)
                .expect("open a seed ingest");
            w.write_at(0, data).expect("write a seed blob");
            w.commit(size, Some(digest), BTreeMap::new())
                .expect("commit a seed blob");
        }
        let now = SystemTime::now();
        self.meta
            .create_image(
                NS,
                MetaImage {
                    name: img.name.clone(),
                    labels: BTreeMap::new(),
                    target: MetaDescriptor {
                        media_type: media_type::OCI_MANIFEST.to_owned(),
                        digest: img.manifest_digest.clone(),
                        size: img.manifest_size as i64,
                        annotations: BTreeMap::new(),
                    },
                    created_at: now,
                    updated_at: now,
                },
            )
            .expect("record the seed image");
    }
}

fn plain() -> RegistryOptions {
    RegistryOptions {
        plain_http: true,
        ..RegistryOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_local_push_then_pull_through_local_stores() {
    // The native snapshotter's bind mounts need root to apply layers.
    if !require_root() || !require_registry() {
        return;
    }
    let registry = Registry::start_plain();
    let source = env();
    let work = tempfile::tempdir().unwrap();
    let img = build_busybox_image(work.path(), IMAGE);
    source.seed(&img);
    let reference = format!("{}/local/bb:v1", registry.host());

    let push_opts = PushOptions {
        registry: plain(),
        ..PushOptions::default()
    };
    let pushed = push(IMAGE, &reference, &push_opts, &source.stores.stores(NS))
        .await
        .unwrap();
    assert_eq!(pushed.digest, img.manifest_digest);

    let dest = env();
    let pull_opts = PullOptions {
        registry: plain(),
        platform: Some(Platform::new("linux", "amd64")),
        ..PullOptions::default()
    };
    let image = pull(&reference, &pull_opts, &dest.stores.stores(NS))
        .await
        .unwrap();
    assert_eq!(image.name, reference);
    assert_eq!(image.target.digest, img.manifest_digest);

    // The image record.
    let record = dest.meta.get_image(NS, &reference).unwrap();
    assert_eq!(record.target.digest, img.manifest_digest);
    assert_eq!(record.target.size, img.manifest_size as i64);

    // The blobs, with the labels a pull sets.
    let manifest = dest.content.info(NS, &img.manifest_digest).unwrap();
    assert_eq!(
        manifest.labels["containerd.io/gc.ref.content.config"],
        img.config_digest
    );
    for (i, layer) in img.layers.iter().enumerate() {
        assert_eq!(
            manifest.labels[&format!("containerd.io/gc.ref.content.l.{i}")],
            layer.digest
        );
        let info = dest.content.info(NS, &layer.digest).unwrap();
        assert_eq!(info.size, layer.size);
        assert_eq!(info.labels["containerd.io/uncompressed"], layer.diff_id);
        assert_eq!(
            info.labels["containerd.io/distribution.source.127.0.0.1"],
            "local/bb"
        );
    }

    // The committed snapshots, and the config's reference to the top one.
    let diff_ids: Vec<String> = img.layers.iter().map(|l| l.diff_id.clone()).collect();
    let chain = chain_ids(&diff_ids);
    for id in &chain {
        let rec = dest.snapshots.stat(NS, SNAPSHOTTER, id).unwrap();
        assert_eq!(rec.kind, "committed", "{id}");
    }
    let top = chain.last().unwrap();
    let config = dest.content.info(NS, &img.config_digest).unwrap();
    assert_eq!(
        config.labels[&format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}")],
        *top
    );
    let view = dest
        .snapshots
        .view(NS, SNAPSHOTTER, "check", Some(top), BTreeMap::new(), None)
        .unwrap();
    let hello = std::fs::read(Path::new(&view[0].source).join("etc/hello")).unwrap();
    assert_eq!(hello, HELLO);
    dest.snapshots.remove(NS, SNAPSHOTTER, "check").unwrap();

    // The pull lease is gone.
    assert!(dest.stores.leases.ids(NS).await.unwrap().is_empty());

    // Pulling again fetches no blob.
    let gets = || -> usize {
        img.layers
            .iter()
            .map(|l| registry.blob_gets("local/bb", &l.digest).len())
            .sum()
    };
    assert_eq!(gets(), 2, "{}", registry.log_text());
    let again = pull(&reference, &pull_opts, &dest.stores.stores(NS))
        .await
        .unwrap();
    assert_eq!(again.target, image.target);
    assert_eq!(gets(), 2);
}
