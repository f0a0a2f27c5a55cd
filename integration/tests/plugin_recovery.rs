//! End-to-end tests for plugins that fail to load (issue 16, deliverable 2): the daemon says
//! which plugin failed and why, to `ctr plugins ls` and to every call of a service that plugin
//! (or a plugin needing it) serves, and it loads them once the cause is gone, without a
//! restart.
//!
//! The cause here is a regular file where the metadata plugin's directory belongs: the plugin
//! cannot create its directory, as it cannot open its database on a full disk, and removing the
//! file from outside is what freeing space is there.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::thread;
use std::time::{Duration, Instant};

use berth_integration::image::build_busybox_image;
use berth_integration::{
    channel, ctr, namespaced, parse_table, require_binary, require_root, Daemon, Row, CTR_BIN,
};
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_proto::containerd::services::containers::v1::ListContainersRequest;
use berth_proto::containerd::services::introspection::v1::introspection_client::IntrospectionClient;
use berth_proto::containerd::services::introspection::v1::PluginsRequest;
use tonic::Code;

/// The metadata plugin's type.
const METADATA_TYPE: &str = "io.containerd.metadata.v1";

/// How long after the obstacle is gone the daemon may take to serve again: the retries wait
/// 1 s, 2 s, 4 s, ... and the obstacle goes within the first seconds.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(20);

/// Root and `ctr`: what every test here needs.
fn prerequisites() -> bool {
    require_root() && require_binary(CTR_BIN)
}

/// The rows of `ctr plugins ls`, checking the header.
fn plugins_ls(daemon: &Daemon) -> Vec<Row> {
    let out = ctr(daemon, &["plugins", "ls"]);
    let (header, rows) = parse_table(out.ok());
    assert_eq!(header, ["TYPE", "ID", "PLATFORMS", "STATUS"], "{out}");
    rows
}

/// The STATUS cell of plugin `ty`/`id` in `rows`; panics when it is not listed.
fn status<'a>(rows: &'a [Row], ty: &str, id: &str) -> &'a str {
    rows.iter()
        .find(|r| r["TYPE"] == ty && r["ID"] == id)
        .map(|r| r["STATUS"].as_str())
        .unwrap_or_else(|| panic!("plugin {ty}.{id} not listed: {rows:#?}"))
}

/// The init error introspection reports for the metadata plugin; panics when it has none.
async fn metadata_init_error(daemon: &Daemon) -> String {
    let mut client = IntrospectionClient::new(channel(daemon).await);
    let plugins = client
        .plugins(PluginsRequest {
            filters: vec![format!("type=={METADATA_TYPE}")],
        })
        .await
        .expect("Introspection.Plugins answers while plugins are failed")
        .into_inner()
        .plugins;
    assert_eq!(plugins.len(), 1, "{plugins:#?}");
    plugins[0]
        .init_err
        .as_ref()
        .unwrap_or_else(|| panic!("the metadata plugin has no init error: {plugins:#?}"))
        .message
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_plugin_answers_unavailable_and_loads_once_its_cause_is_gone() {
    if !prerequisites() {
        return;
    }
    let mut daemon = Daemon::prepare(None, &[]);
    let metadata_id = berth_core::metadata::plugin::ID;
    let obstacle = daemon.root().join(format!("{METADATA_TYPE}.{metadata_id}"));
    std::fs::create_dir_all(daemon.root()).expect("create the daemon root");
    std::fs::write(&obstacle, b"not a directory").expect("put a file where the plugin dir goes");
    daemon.restart();
    let pid = daemon.pid();

    // Listed as failed, with the services that need it.
    let rows = plugins_ls(&daemon);
    assert_eq!(status(&rows, METADATA_TYPE, metadata_id), "error");
    for id in ["images", "containers", "content", "namespaces"] {
        assert_eq!(status(&rows, "io.containerd.grpc.v1", id), "error", "{id}");
    }
    assert_eq!(status(&rows, "io.containerd.grpc.v1", "version"), "ok");
    let cause = metadata_init_error(&daemon).await;
    assert!(
        cause.contains(&obstacle.display().to_string()),
        "the metadata plugin's error names its directory: {cause}"
    );

    // A call to a service whose plugin is missing says so, with the metadata plugin's own
    // error, and with a code that tells the client to come back.
    let mut containers = ContainersClient::new(channel(&daemon).await);
    let err = containers
        .list(namespaced(
            "default",
            ListContainersRequest { filters: vec![] },
        ))
        .await
        .expect_err("Containers.List cannot answer without the metadata store");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains(&cause),
        "the status carries the metadata plugin's error {cause:?}: {err:?}"
    );
    let out = ctr(&daemon, &["images", "ls"]);
    let stderr = out.fails();
    assert!(
        stderr.contains(&cause) && stderr.contains("unavailable"),
        "`ctr images ls` prints the metadata plugin's error {cause:?}:\n{out}"
    );

    // The obstacle goes: the daemon loads the plugin and everything that needed it, by itself.
    std::fs::remove_file(&obstacle).expect("remove the obstacle");
    let removed = Instant::now();
    loop {
        let out = ctr(&daemon, &["images", "ls"]);
        if out.success() {
            break;
        }
        assert!(
            removed.elapsed() < RECOVERY_DEADLINE,
            "`ctr images ls` still fails {RECOVERY_DEADLINE:?} after the obstacle went:\n{out}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "serving again {:?} after the obstacle went",
        removed.elapsed()
    );
    let rows = plugins_ls(&daemon);
    for row in &rows {
        assert!(
            row["STATUS"] == "ok" || row["STATUS"] == "skip",
            "every plugin loaded after the retry: {row:?}\n{rows:#?}"
        );
    }
    assert_eq!(status(&rows, METADATA_TYPE, metadata_id), "ok");
    assert_eq!(status(&rows, "io.containerd.grpc.v1", "images"), "ok");
    containers
        .list(namespaced(
            "default",
            ListContainersRequest { filters: vec![] },
        ))
        .await
        .expect("Containers.List answers after the retry");
    // The store works for writes too, and it is still the same daemon.
    ctr(&daemon, &["namespaces", "create", "recovered"]).ok();
    let out = ctr(&daemon, &["namespaces", "ls", "-q"]);
    assert!(
        out.ok().lines().any(|l| l.trim() == "recovered"),
        "the namespace made after recovery is listed:\n{out}"
    );
    assert!(daemon.is_running());
    assert_eq!(daemon.pid(), pid, "berthd was not restarted");
}

#[test]
fn services_that_loaded_without_a_snapshotter_use_it_once_it_loads() {
    if !prerequisites() {
        return;
    }
    // The overlay snapshotter (ctr's default) cannot make its directory; the metadata store and
    // the services load without it, on the native snapshotter.
    let mut daemon = Daemon::prepare(None, &[]);
    let obstacle = daemon.root().join("io.containerd.snapshotter.v1.overlayfs");
    std::fs::create_dir_all(daemon.root()).expect("create the daemon root");
    std::fs::write(&obstacle, b"not a directory").expect("put a file where the plugin dir goes");
    daemon.restart();
    let rows = plugins_ls(&daemon);
    assert_eq!(
        status(&rows, "io.containerd.snapshotter.v1", "overlayfs"),
        "error"
    );
    assert_eq!(status(&rows, "io.containerd.grpc.v1", "snapshots"), "ok");
    let out = ctr(&daemon, &["snapshots", "ls"]);
    assert!(
        out.fails().contains("snapshotter not loaded: overlayfs"),
        "the Snapshots service has no overlayfs yet:\n{out}"
    );
    ctr(&daemon, &["snapshots", "--snapshotter", "native", "ls"]).ok();

    std::fs::remove_file(&obstacle).expect("remove the obstacle");
    let removed = Instant::now();
    loop {
        let out = ctr(&daemon, &["snapshots", "prepare", "recovered", ""]);
        if out.success() {
            break;
        }
        assert!(
            removed.elapsed() < RECOVERY_DEADLINE,
            "the Snapshots service still has no overlayfs {RECOVERY_DEADLINE:?} after the \
             obstacle went:\n{out}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    let out = ctr(&daemon, &["snapshots", "ls"]);
    assert!(
        out.ok().contains("recovered"),
        "the overlay snapshot is listed:\n{out}"
    );
    let rows = plugins_ls(&daemon);
    assert_eq!(
        status(&rows, "io.containerd.snapshotter.v1", "overlayfs"),
        "ok"
    );
    assert_eq!(status(&rows, "io.containerd.grpc.v1", "cri"), "ok");
    ctr(&daemon, &["snapshots", "rm", "recovered"]).ok();
    // The collector sweeps the late snapshotter too: an image unpacked onto it leaves no
    // snapshot behind once the image is removed.
    let image = "docker.io/library/recovered:latest";
    let img = build_busybox_image(daemon.dir(), image);
    let archive = img.archive.to_string_lossy().into_owned();
    ctr(&daemon, &["images", "import", &archive]).ok();
    let out = ctr(&daemon, &["snapshots", "ls"]);
    assert!(
        out.ok().lines().count() > 1,
        "the import unpacked onto overlayfs:\n{out}"
    );
    ctr(&daemon, &["images", "rm", "--sync", image]).ok();
    let out = ctr(&daemon, &["snapshots", "ls"]);
    assert_eq!(
        out.ok().lines().count(),
        1,
        "overlay snapshots survived the collection that followed the image's removal:\n{out}"
    );
}

#[test]
fn a_service_whose_plugin_is_disabled_stays_unimplemented() {
    if !prerequisites() {
        return;
    }
    // Not a failure: nothing to retry, and the call is refused as before.
    let daemon = Daemon::start_with(
        Some("disabled_plugins = [\"io.containerd.grpc.v1.images\"]\n"),
        &[],
    );
    let out = ctr(&daemon, &["images", "ls"]);
    let stderr = out.fails();
    assert!(
        stderr.contains("Unimplemented") || stderr.contains("not implemented"),
        "a disabled service is not implemented:\n{out}"
    );
    let rows = plugins_ls(&daemon);
    assert!(rows
        .iter()
        .all(|r| !(r["TYPE"] == "io.containerd.grpc.v1" && r["ID"] == "images")));
}

/// The devmapper snapshotter on this machine's kernel, which has no device-mapper: `ctr plugins
/// ls` lists it as `skip`, and `-d` gives the reason, which says device-mapper is missing
/// (checked before its config, so even a configured pool skips). On a kernel with
/// device-mapper the unconfigured plugin fails as containerd's: `devmapper not configured`.
#[test]
fn devmapper_skips_with_the_reason_on_a_kernel_without_device_mapper() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start_with(
        Some(
            "[plugins.\"io.containerd.snapshotter.v1.devmapper\"]\n\
             pool_name = \"berth-pool\"\nbase_image_size = \"1GB\"\n",
        ),
        &[],
    );
    let snapshotter = "io.containerd.snapshotter.v1";
    let rows = plugins_ls(&daemon);
    let detailed = ctr(&daemon, &["plugins", "ls", "-d", "id==devmapper"]);
    let detailed = detailed.ok();
    match berth_snapshotters::devmapper::dm::availability() {
        Err(reason) => {
            assert_eq!(status(&rows, snapshotter, "devmapper"), "skip");
            assert!(reason.contains("device-mapper"), "{reason}");
            assert!(
                detailed.contains(&reason) && detailed.contains("device-mapper"),
                "`ctr plugins ls -d` gives the kernel's reason {reason:?}:\n{detailed}"
            );
            // The other snapshotters are not affected.
            assert_eq!(status(&rows, snapshotter, "native"), "ok");
        }
        Ok(()) => {
            // A configured pool that does not exist: an error naming it, as containerd's.
            assert_eq!(status(&rows, snapshotter, "devmapper"), "error");
            assert!(detailed.contains("berth-pool"), "{detailed}");
        }
    }
}
