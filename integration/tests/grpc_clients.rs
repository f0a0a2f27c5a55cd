//! gRPC clients nobody here wrote, on berthd's unix socket: a stock Python `grpcio` channel
//! (`grpc.insecure_channel("unix:<socket>")`, which sends the socket path as the HTTP/2
//! `:authority`) calls Version, Containers.List and a streaming Events.Subscribe. The same
//! client runs against a real containerd as the reference.

#![allow(clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_integration::containerd::Containerd;
use berth_integration::{
    require_binary, require_python_module, require_root, run_with_timeout, CmdOutput, Daemon,
};
use tempfile::TempDir;

/// How long the Python client may take, stub generation included.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the integration crate sits in the repository")
        .to_owned()
}

fn prerequisites() -> bool {
    require_root()
        && require_binary("python3")
        && require_python_module("grpc", "grpcio")
        && require_python_module("grpc_tools", "grpcio-tools")
}

/// Python stubs for the services the client calls, generated from the repository's protos.
fn python_stubs() -> TempDir {
    let out = tempfile::tempdir().expect("create a directory for the stubs");
    let protos = repo().join("proto/proto");
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", protos.display()))
        .arg(format!("--python_out={}", out.path().display()))
        .arg(format!("--grpc_python_out={}", out.path().display()));
    for file in [
        "containerd/services/version/v1/version.proto",
        "containerd/services/containers/v1/containers.proto",
        "containerd/services/events/v1/events.proto",
        "containerd/services/namespaces/v1/namespace.proto",
        "containerd/types/descriptor.proto",
    ] {
        cmd.arg(protos.join(file));
    }
    run_with_timeout(cmd, CLIENT_TIMEOUT).ok();
    out
}

/// Runs the grpcio client against `socket`; returns its JSON reply.
fn grpcio_client(socket: &Path, namespace: &str) -> Result<serde_json::Value, CmdOutput> {
    let stubs = python_stubs();
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("integration/clients/grpcio_client.py"))
        .arg(socket)
        .arg(namespace)
        .env("PYTHONPATH", stubs.path());
    let out = run_with_timeout(cmd, CLIENT_TIMEOUT);
    if !out.success() {
        return Err(out);
    }
    Ok(serde_json::from_str(out.stdout.trim()).expect("the client prints one JSON object"))
}

fn assert_calls_worked(reply: &serde_json::Value, namespace: &str) {
    assert!(
        reply["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{reply}"
    );
    assert_eq!(reply["containers"], serde_json::json!([]), "{reply}");
    assert_eq!(reply["event_topic"], "/namespaces/create", "{reply}");
    assert_eq!(reply["event_namespace"], namespace, "{reply}");
}

#[test]
fn stock_grpcio_client_calls_unary_and_streaming_rpcs_on_the_unix_socket() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let reply = grpcio_client(daemon.address(), "py-client")
        .unwrap_or_else(|out| panic!("grpcio client failed against berthd:\n{out}"));
    assert_calls_worked(&reply, "py-client");
    assert_eq!(reply["version"], "0.1.0-berth", "{reply}");
}

#[test]
fn reference_containerd_stock_grpcio_client() {
    if !prerequisites() || !require_binary("containerd") {
        return;
    }
    let containerd = Containerd::start();
    let reply = grpcio_client(containerd.address(), "py-client")
        .unwrap_or_else(|out| panic!("grpcio client failed against containerd:\n{out}"));
    assert_calls_worked(&reply, "py-client");
}
