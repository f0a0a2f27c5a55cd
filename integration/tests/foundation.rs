//! End-to-end tests for the foundation: daemon lifecycle, config and plugins, version,
//! introspection, namespaces and health, driven by the real `ctr` 1.6.20 and by gRPC.
//!
//! Each test starts its own `berthd` on its own temporary root and socket, so they run in
//! parallel. All need root (the daemon's defaults live under `/var/lib` and `/run`).

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::collections::{BTreeSet, HashMap};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use berth_integration::{
    channel, ctr, namespaced, parse_table, require_binary, require_root, spawn_raw, Daemon, Row,
    CTR_BIN,
};
use berth_proto::containerd::services::introspection::v1::introspection_client::IntrospectionClient;
use berth_proto::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;
use berth_proto::containerd::services::namespaces::v1::{
    CreateNamespaceRequest, ListNamespacesRequest, Namespace,
};
use berth_proto::containerd::services::version::v1::version_client::VersionClient;
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The plugins every foundation daemon registers (type, id).
const FOUNDATION_PLUGINS: [(&str, &str); 5] = [
    ("io.containerd.metadata.v1", "sled"),
    ("io.containerd.grpc.v1", "version"),
    ("io.containerd.grpc.v1", "introspection"),
    ("io.containerd.grpc.v1", "namespaces"),
    ("io.containerd.grpc.v1", "healthcheck"),
];

/// The namespace ctr sends when none is chosen.
const CTR_DEFAULT_NAMESPACE: &str = "default";

const HEALTHCHECK_URI: &str = "io.containerd.grpc.v1.healthcheck";

/// How long a berthd that is expected to fail may run before it is killed.
const FAIL_TIMEOUT: Duration = Duration::from_secs(20);

/// Root and `ctr`: what every test here needs.
fn prerequisites() -> bool {
    require_root() && require_binary(CTR_BIN)
}

/// The version berthd reports: the crate version plus `-berth`.
fn expected_version() -> String {
    format!("{}-berth", env!("CARGO_PKG_VERSION"))
}

/// The `key: value` lines of one section (`Client:` / `Server:`) of `ctr version`.
fn version_section(stdout: &str, section: &str) -> HashMap<String, String> {
    let mut lines = stdout.lines().skip_while(|l| l.trim() != section);
    assert!(
        lines.next().is_some(),
        "no {section} section in ctr version output:\n{stdout}"
    );
    lines
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// True for the canonical textual form of a UUID (8-4-4-4-12 hex digits).
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The server UUID printed by `ctr version`, checking the Server section along the way.
fn server_uuid(daemon: &Daemon) -> String {
    let out = ctr(daemon, &["version"]);
    let server = version_section(out.ok(), "Server:");
    assert_eq!(
        server.get("Version"),
        Some(&expected_version()),
        "server version in:\n{out}"
    );
    assert!(server.contains_key("Revision"), "no revision in:\n{out}");
    let uuid = server.get("UUID").cloned().unwrap_or_default();
    assert!(
        is_uuid(&uuid),
        "server UUID {uuid:?} is not a UUID in:\n{out}"
    );
    uuid
}

/// The rows of `ctr plugins ls`, checking the header.
fn plugins(daemon: &Daemon) -> Vec<Row> {
    let out = ctr(daemon, &["plugins", "ls"]);
    let (header, rows) = parse_table(out.ok());
    assert_eq!(header, ["TYPE", "ID", "PLATFORMS", "STATUS"], "{out}");
    rows
}

/// The row of plugin `ty`/`id` in `rows`, if listed.
fn plugin<'a>(rows: &'a [Row], ty: &str, id: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r["TYPE"] == ty && r["ID"] == id)
}

/// The rows of `ctr namespaces ls`, checking the header.
fn namespaces_ls(daemon: &Daemon) -> Vec<Row> {
    let out = ctr(daemon, &["namespaces", "ls"]);
    let (header, rows) = parse_table(out.ok());
    assert_eq!(header, ["NAME", "LABELS"], "{out}");
    rows
}

/// The LABELS cell of namespace `name` in `ctr namespaces ls`, or None when not listed.
fn namespace_labels(daemon: &Daemon, name: &str) -> Option<String> {
    namespaces_ls(daemon)
        .into_iter()
        .find(|r| r["NAME"] == name)
        .map(|r| r["LABELS"].clone())
}

/// All namespace names, via gRPC.
async fn grpc_namespace_names(daemon: &Daemon) -> BTreeSet<String> {
    let mut client = NamespacesClient::new(channel(daemon).await);
    client
        .list(namespaced(
            CTR_DEFAULT_NAMESPACE,
            ListNamespacesRequest::default(),
        ))
        .await
        .expect("Namespaces.List")
        .into_inner()
        .namespaces
        .into_iter()
        .map(|ns| ns.name)
        .collect()
}

/// A Namespaces.Create request. Like every call from ctr it carries `containerd-namespace:
/// default`: containerd's Create publishes an event in the caller's namespace and fails with
/// Unknown (`failed publishing event: namespace is required`) without one.
fn create_request(name: &str, labels: HashMap<String, String>) -> Request<CreateNamespaceRequest> {
    namespaced(
        CTR_DEFAULT_NAMESPACE,
        CreateNamespaceRequest {
            namespace: Some(Namespace {
                name: name.to_owned(),
                labels,
            }),
        },
    )
}

/// A scratch directory under /tmp (short enough for socket paths) for a second daemon.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("berth-x-")
        .tempdir_in("/tmp")
        .expect("create a scratch directory")
}

// 1. ctr version: Server section, UUID stable across restarts.
#[test]
fn ctr_version_reports_server_version_and_stable_uuid() {
    if !prerequisites() {
        return;
    }
    let mut daemon = Daemon::start();
    let uuid = server_uuid(&daemon);
    daemon.restart();
    assert_eq!(
        server_uuid(&daemon),
        uuid,
        "the server UUID changed across a restart on the same root"
    );
}

#[tokio::test]
async fn grpc_version_and_server_uuid() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let chan = channel(&daemon).await;
    let version = VersionClient::new(chan.clone())
        .version(())
        .await
        .expect("Version.Version")
        .into_inner();
    assert_eq!(version.version, expected_version());
    let server = IntrospectionClient::new(chan)
        .server(())
        .await
        .expect("Introspection.Server")
        .into_inner();
    assert!(is_uuid(&server.uuid), "uuid {:?}", server.uuid);
}

// 2. ctr plugins ls / -q.
#[test]
fn ctr_plugins_ls_lists_foundation_plugins() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let rows = plugins(&daemon);
    for (ty, id) in FOUNDATION_PLUGINS {
        let row = plugin(&rows, ty, id)
            .unwrap_or_else(|| panic!("plugin {ty} {id} not listed in {rows:#?}"));
        assert_eq!(row["PLATFORMS"], "-", "platforms of {ty}.{id}");
        assert_eq!(row["STATUS"], "ok", "status of {ty}.{id}");
    }

    let out = ctr(&daemon, &["plugins", "ls", "-q"]);
    let ids: BTreeSet<&str> = out.ok().lines().map(str::trim).collect();
    for (_, id) in FOUNDATION_PLUGINS {
        assert!(
            ids.contains(id),
            "id {id} missing from `plugins ls -q`:\n{out}"
        );
    }
    assert!(
        !ids.iter().any(|l| l.starts_with("TYPE") || l.contains(' ')),
        "`plugins ls -q` prints ids only:\n{out}"
    );
}

// 3. Plugin config errors, required and disabled plugins.
#[test]
fn plugin_with_unknown_config_key_is_listed_as_error() {
    if !prerequisites() {
        return;
    }
    let config = format!("[plugins.\"{HEALTHCHECK_URI}\"]\n  bogus = true\n");
    let daemon = Daemon::start_with(Some(&config), &[]);
    let rows = plugins(&daemon);
    let row = plugin(&rows, "io.containerd.grpc.v1", "healthcheck")
        .unwrap_or_else(|| panic!("a failed plugin stays listed: {rows:#?}"));
    assert_eq!(row["STATUS"], "error", "{row:?}");
    // The other plugins are unaffected.
    let version = plugin(&rows, "io.containerd.grpc.v1", "version").expect("version plugin");
    assert_eq!(version["STATUS"], "ok");

    let out = ctr(&daemon, &["plugins", "ls", "-d"]);
    assert!(
        out.ok().contains("bogus"),
        "`plugins ls -d` names the unknown key:\n{out}"
    );
}

#[test]
fn failed_required_plugin_stops_the_daemon() {
    if !prerequisites() {
        return;
    }
    let dir = scratch();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nrequired_plugins = [\"{HEALTHCHECK_URI}\"]\n\
             [plugins.\"{HEALTHCHECK_URI}\"]\n  bogus = true\n"
        ),
    )
    .expect("write config");
    let path = |p: &str| dir.path().join(p).display().to_string();
    let out = spawn_raw(
        &[
            "--config",
            &path("config.toml"),
            "--root",
            &path("root"),
            "--state",
            &path("state"),
            "--address",
            &path("s.sock"),
        ],
        FAIL_TIMEOUT,
    );
    let stderr = out.fails();
    assert!(
        stderr.contains(HEALTHCHECK_URI),
        "stderr names the required plugin:\n{out}"
    );
}

#[test]
fn disabled_plugin_is_absent() {
    if !prerequisites() {
        return;
    }
    let config = format!("disabled_plugins = [\"{HEALTHCHECK_URI}\"]\n");
    let daemon = Daemon::start_with(Some(&config), &[]);
    let rows = plugins(&daemon);
    assert!(
        plugin(&rows, "io.containerd.grpc.v1", "healthcheck").is_none(),
        "disabled plugin listed: {rows:#?}"
    );
    assert!(plugin(&rows, "io.containerd.grpc.v1", "version").is_some());
}

// 4. Namespaces with the real ctr.
#[test]
fn ctr_namespaces_create_label_ls_rm() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    ctr(&daemon, &["namespaces", "create", "a"]).ok();
    assert_eq!(namespace_labels(&daemon, "a").as_deref(), Some(""));

    ctr(&daemon, &["namespaces", "label", "a", "k=v"]).ok();
    assert_eq!(namespace_labels(&daemon, "a").as_deref(), Some("k=v"));

    // `k=` deletes the label.
    ctr(&daemon, &["namespaces", "label", "a", "k="]).ok();
    assert_eq!(namespace_labels(&daemon, "a").as_deref(), Some(""));

    let out = ctr(&daemon, &["namespaces", "rm", "a"]);
    assert_eq!(out.ok().trim(), "a", "rm prints the removed name");
    assert_eq!(namespace_labels(&daemon, "a"), None);

    // Labels at create, several sorted and comma-joined by ctr.
    ctr(&daemon, &["namespaces", "create", "b", "x=y", "z=w"]).ok();
    assert_eq!(namespace_labels(&daemon, "b").as_deref(), Some("x=y,z=w"));
    let out = ctr(&daemon, &["namespaces", "ls", "-q"]);
    assert!(out.ok().lines().any(|l| l.trim() == "b"), "{out}");
}

#[test]
fn ctr_namespaces_create_existing_fails() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    ctr(&daemon, &["namespaces", "create", "dup"]).ok();
    let out = ctr(&daemon, &["namespaces", "create", "dup"]);
    let stderr = out.fails();
    assert!(stderr.contains("already exists"), "{out}");
}

// 5. Root lock, busy socket, stale socket.
#[test]
fn second_daemon_on_same_root_fails_on_lock() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let dir = scratch();
    let state = dir.path().join("state").display().to_string();
    let sock = dir.path().join("s.sock").display().to_string();
    let root = daemon.root().display().to_string();
    let config = daemon.config_path().display().to_string();
    let out = spawn_raw(
        &[
            "--config",
            &config,
            "--root",
            &root,
            "--state",
            &state,
            "--address",
            &sock,
        ],
        FAIL_TIMEOUT,
    );
    let stderr = out.fails();
    assert!(stderr.contains("lock"), "stderr mentions the lock:\n{out}");
    // The first daemon is untouched.
    ctr(&daemon, &["version"]).ok();
}

#[test]
fn daemon_on_busy_socket_fails_naming_the_address() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let dir = scratch();
    let path = |p: &str| dir.path().join(p).display().to_string();
    let address = daemon.address().display().to_string();
    std::fs::write(path("config.toml"), "version = 2\n").expect("write config");
    let out = spawn_raw(
        &[
            "--config",
            &path("config.toml"),
            "--root",
            &path("root"),
            "--state",
            &path("state"),
            "--address",
            &address,
        ],
        FAIL_TIMEOUT,
    );
    let stderr = out.fails();
    assert!(
        stderr.contains(&address) && stderr.contains("in use"),
        "stderr names the address and says it is in use:\n{out}"
    );
    // The live daemon keeps its socket.
    ctr(&daemon, &["version"]).ok();
}

#[test]
fn stale_socket_is_replaced() {
    if !prerequisites() {
        return;
    }
    let mut daemon = Daemon::prepare(None, &[]);
    // A socket file nobody listens on, as left by a crash.
    drop(UnixListener::bind(daemon.address()).expect("bind a socket to leave behind"));
    assert!(daemon.address().exists());
    daemon.restart();
    ctr(&daemon, &["version"]).ok();

    // The same after a real crash.
    daemon.kill9();
    assert!(daemon.address().exists(), "SIGKILL leaves the socket file");
    daemon.restart();
    ctr(&daemon, &["version"]).ok();
}

// 6. Metadata survives kill -9: every acknowledged Create is there after restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_namespaces_survive_kill9() {
    if !prerequisites() {
        return;
    }
    let mut daemon = Daemon::start();
    let mut client = NamespacesClient::new(channel(&daemon).await);
    let creator = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 0..1_000_000 {
            let name = format!("n{i}");
            match client.create(create_request(&name, HashMap::new())).await {
                Ok(_) => acknowledged.push(name),
                Err(_) => break,
            }
        }
        acknowledged
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    daemon.kill9();
    let acknowledged = tokio::time::timeout(Duration::from_secs(30), creator)
        .await
        .expect("the create loop stops once the daemon is gone")
        .expect("the create loop does not panic");
    assert!(
        !acknowledged.is_empty(),
        "no Create succeeded within 1.5 s\n{}",
        daemon.log()
    );
    println!(
        "{} namespaces acknowledged before kill -9",
        acknowledged.len()
    );

    daemon.restart();
    let listed = grpc_namespace_names(&daemon).await;
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !listed.contains(*n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged namespaces lost after kill -9: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
}

// 7. Invalid input is refused with InvalidArgument and nothing is stored.
#[tokio::test]
async fn invalid_namespaces_and_labels_are_rejected() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let mut client = NamespacesClient::new(channel(&daemon).await);
    let too_long = "a".repeat(77);
    for name in ["../x", "a/b", "", too_long.as_str(), "-a", "a..b"] {
        let err = client
            .create(create_request(name, HashMap::new()))
            .await
            .expect_err(&format!("Create {name:?} must fail"));
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "Create {name:?}: {err:?}"
        );
    }

    let big_key = HashMap::from([("k".repeat(4097), String::new())]);
    let err = client
        .create(create_request("labelled", big_key))
        .await
        .expect_err("a 4097-byte label must fail");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // The limits themselves are accepted: 76 characters, key + value of 4096 bytes.
    let longest = "b".repeat(76);
    client
        .create(create_request(&longest, HashMap::new()))
        .await
        .expect("a 76-character name is valid");
    let biggest = HashMap::from([("k".repeat(2048), "v".repeat(2048))]);
    client
        .create(create_request("biggest", biggest))
        .await
        .expect("a 4096-byte label is valid");

    let listed = grpc_namespace_names(&daemon).await;
    for name in ["../x", "a/b", "", too_long.as_str(), "labelled"] {
        assert!(!listed.contains(name), "{name:?} was stored: {listed:?}");
    }
    assert!(
        listed.contains(&longest) && listed.contains("biggest"),
        "{listed:?}"
    );

    let out = ctr(&daemon, &["namespaces", "create", "../x"]);
    let stderr = out.fails();
    assert!(stderr.contains("invalid argument"), "{out}");
}

// 8. Health and the default config.
#[tokio::test]
async fn health_check_is_serving() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let response = HealthClient::new(channel(&daemon).await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("Health.Check")
        .into_inner();
    assert_eq!(response.status(), ServingStatus::Serving);
}

#[test]
fn config_default_is_valid_toml_with_default_paths() {
    if !prerequisites() {
        return;
    }
    let out = spawn_raw(&["config", "default"], FAIL_TIMEOUT);
    let text = out.ok();
    let config: toml::Table = toml::from_str(text)
        .unwrap_or_else(|e| panic!("`berthd config default` is not TOML: {e}\n{text}"));
    assert_eq!(
        config.get("version").and_then(toml::Value::as_integer),
        Some(2),
        "{text}"
    );
    assert_eq!(
        config.get("root").and_then(toml::Value::as_str),
        Some("/var/lib/berth"),
        "{text}"
    );
    let address = config
        .get("grpc")
        .and_then(|g| g.get("address"))
        .and_then(toml::Value::as_str);
    assert_eq!(address, Some("/run/berth/berthd.sock"), "{text}");

    // The printed defaults load back: every plugin accepts its own section. Root, state and
    // socket are moved into the temporary directory so the host's paths stay untouched.
    let mut daemon = Daemon::prepare(None, &[]);
    let mut config = config;
    let path = |p: &std::path::Path| toml::Value::String(p.display().to_string());
    config.insert("root".into(), path(daemon.root()));
    config.insert("state".into(), path(daemon.state()));
    if let Some(grpc) = config.get_mut("grpc").and_then(toml::Value::as_table_mut) {
        grpc.insert("address".into(), path(daemon.address()));
    }
    let text = toml::to_string(&config).expect("serialize the config");
    std::fs::write(daemon.config_path(), &text).expect("write the config");
    daemon.restart();
    for row in plugins(&daemon) {
        if FOUNDATION_PLUGINS.contains(&(row["TYPE"].as_str(), row["ID"].as_str())) {
            assert_eq!(row["STATUS"], "ok", "default config of {row:?}:\n{text}");
        }
    }
}

// 9. SIGTERM: clean exit, socket removed.
#[test]
fn sigterm_exits_zero_and_removes_socket() {
    if !prerequisites() {
        return;
    }
    let mut daemon = Daemon::start();
    let status = daemon.stop();
    assert!(status.success(), "berthd exited with {status} on SIGTERM");
    assert!(
        !daemon.address().exists(),
        "socket {} still exists after SIGTERM",
        daemon.address().display()
    );
}
