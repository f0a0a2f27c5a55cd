//! Structured logs and tracing (issue 19, part 5), with a real berthd:
//! - `[debug] format = "json"`: every line berthd writes is a JSON object, and the span of a
//!   call (logged at its close with `BERTH_LOG_SPANS=1`) names the RPC, the namespace, the
//!   container id and the gRPC status code;
//! - an unknown `[debug] format` stops start-up naming the key and the value;
//! - OpenTelemetry: with containerd's `io.containerd.tracing.processor.v1.otlp` section, the
//!   spans of the calls made reach a small OTLP receiver run by the test, over grpc (a tonic
//!   `TraceService`) and over http/protobuf (a minimal HTTP/1.1 server decoding the protobuf
//!   body), named after the RPCs and carrying the namespace, the ids and the status;
//! - without an endpoint the processor plugin is listed as skipped and the tracing plugin ok,
//!   as containerd 1.6 lists them.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::{
    channel, ctr, minimal_container, namespaced, parse_table, require_binary, require_root,
    spawn_raw, Daemon,
};
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_proto::containerd::services::containers::v1::GetContainerRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as OtelValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message as _;
use serde_json::Value;

/// The namespace and container of the calls the tests make.
const NS: &str = "structured-logs";
const CONTAINER: &str = "sl-ctr";
/// A container that does not exist: its Get fails with NotFound (code 5).
const MISSING: &str = "sl-missing";
/// The gRPC service of the calls looked for.
const CONTAINERS_SERVICE: &str = "containerd.services.containers.v1.Containers";
/// How long a berthd expected to fail may run.
const FAIL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long spans may take to reach the receiver.
const EXPORT_WAIT: Duration = Duration::from_secs(20);

/// Creates [`CONTAINER`] in [`NS`] and asks for [`MISSING`], through the Rust client.
async fn create_and_miss(daemon: &Daemon) {
    let mut client = ContainersClient::new(channel(daemon).await);
    client
        .create(namespaced(NS, minimal_container(CONTAINER)))
        .await
        .expect("create the container");
    let err = client
        .get(namespaced(NS, GetContainerRequest { id: MISSING.into() }))
        .await
        .expect_err("a missing container");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A closed span of the JSON log: the fields of the `span` object of a line whose message is
/// "close".
type SpanFields = serde_json::Map<String, Value>;

/// The spans closed in `log` (one JSON object a line).
fn closed_spans(log: &str) -> Vec<SpanFields> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["fields"]["message"] == "close")
        .filter_map(|v| v.get("span").and_then(Value::as_object).cloned())
        .collect()
}

/// `key` of a span's fields, `null` when it has none.
fn field<'a>(span: &'a SpanFields, key: &str) -> &'a Value {
    span.get(key).unwrap_or(&Value::Null)
}

#[test]
fn json_format_writes_json_lines_with_the_rpc_span() {
    if !require_root() || !require_binary("ctr") {
        return;
    }
    let mut d = Daemon::prepare(Some("[debug]\nformat = \"json\"\n"), &[]);
    d.set_env("BERTH_LOG_SPANS", Some("1"));
    d.restart();
    runtime().block_on(create_and_miss(&d));
    // ctr's own calls are spans too.
    let out = ctr(&d, &["-n", NS, "containers", "info", CONTAINER]);
    out.ok();
    let status = d.stop();
    assert!(status.success(), "berthd exited with {status}");
    let log = d.log();
    let mut lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{log}"));
        assert!(v["timestamp"].is_string(), "no timestamp: {line}");
        assert!(v["level"].is_string(), "no level: {line}");
        assert!(v["fields"].is_object(), "no fields: {line}");
        lines += 1;
    }
    assert!(lines > 0, "berthd wrote nothing");
    assert!(
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["fields"]["message"] == "serving" && v["level"] == "INFO"),
        "the serving line is in the log:\n{log}"
    );
    let spans = closed_spans(&log);
    let closed = |method: &str, id: &str| {
        spans.iter().find(|s| {
            field(s, "name") == "rpc"
                && field(s, "rpc.service") == CONTAINERS_SERVICE
                && field(s, "rpc.method") == method
                && field(s, "id") == id
        })
    };
    let create = closed("Create", CONTAINER)
        .unwrap_or_else(|| panic!("no closed Containers/Create span with id {CONTAINER}:\n{log}"));
    assert_eq!(field(create, "namespace"), NS, "{create:?}");
    assert_eq!(field(create, "rpc.grpc.status_code"), 0, "{create:?}");
    let missing = closed("Get", MISSING)
        .unwrap_or_else(|| panic!("no closed Containers/Get span with id {MISSING}:\n{log}"));
    assert_eq!(field(missing, "namespace"), NS, "{missing:?}");
    assert_eq!(
        field(missing, "rpc.grpc.status_code"),
        5,
        "NotFound: {missing:?}"
    );
    // ctr's Get of the container it has just shown.
    let shown = closed("Get", CONTAINER)
        .unwrap_or_else(|| panic!("no closed Containers/Get span of ctr's call:\n{log}"));
    assert_eq!(field(shown, "namespace"), NS, "{shown:?}");
    assert_eq!(field(shown, "rpc.grpc.status_code"), 0, "{shown:?}");
}

#[test]
fn unknown_log_format_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "version = 2\n[debug]\nformat = \"yaml\"\n").expect("write config");
    let root = dir.path().join("root");
    let state = dir.path().join("state");
    let address = dir.path().join("s.sock");
    let out = spawn_raw(
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--root",
            root.to_str().expect("utf-8"),
            "--state",
            state.to_str().expect("utf-8"),
            "--address",
            address.to_str().expect("utf-8"),
        ],
        FAIL_TIMEOUT,
    );
    assert!(
        !out.timed_out,
        "berthd started with an unknown format: {out}"
    );
    assert!(!out.success(), "berthd accepted an unknown format: {out}");
    assert!(
        out.stderr.contains("[debug] format") && out.stderr.contains("\"yaml\""),
        "the error names the key and the value: {out}"
    );
    assert!(!address.exists(), "no socket was made: {out}");
}

#[test]
fn without_an_endpoint_the_otlp_processor_is_skipped() {
    if !require_root() || !require_binary("ctr") {
        return;
    }
    let d = Daemon::start();
    let out = ctr(&d, &["plugins", "ls"]);
    let (_, rows) = parse_table(out.ok());
    let status = |ty: &str, id: &str| {
        rows.iter()
            .find(|r| r["TYPE"] == ty && r["ID"] == id)
            .map(|r| r["STATUS"].clone())
            .unwrap_or_else(|| panic!("{ty}.{id} is not listed:\n{out}"))
    };
    assert_eq!(status("io.containerd.tracing.processor.v1", "otlp"), "skip");
    assert_eq!(status("io.containerd.internal.v1", "tracing"), "ok");
    let log = d.log();
    assert!(
        log.contains("no OpenTelemetry endpoint"),
        "the skip's reason is logged:\n{log}"
    );
}

/// One span as received: its name, attributes and status code, and the service name of its
/// resource.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    attributes: BTreeMap<String, String>,
    /// OTLP's status code: 0 unset, 1 ok, 2 error.
    status: i32,
    service: String,
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(OtelValue::StringValue(s)) => s.clone(),
        Some(OtelValue::IntValue(i)) => i.to_string(),
        Some(OtelValue::BoolValue(b)) => b.to_string(),
        Some(OtelValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

/// Every span of an export request.
fn received(req: ExportTraceServiceRequest) -> Vec<Received> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let resource = attributes(&rs.resource.map(|r| r.attributes).unwrap_or_default());
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                out.push(Received {
                    name: span.name,
                    attributes: attributes(&span.attributes),
                    status: span.status.map_or(0, |s| s.code),
                    service: service.clone(),
                });
            }
        }
    }
    out
}

type Sink = Arc<Mutex<Vec<Received>>>;

/// The OTLP/gRPC receiver.
struct Collector(Sink);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = received(request.into_inner());
        self.0.lock().expect("sink").extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves OTLP/gRPC on a free loopback port until the runtime ends.
async fn grpc_collector(sink: Sink) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the collector");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(sink)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    addr
}

/// Serves OTLP over HTTP/1.1 (`POST /v1/traces`, protobuf body) on a free loopback port, one
/// connection at a time, on a thread that ends with the test process.
fn http_collector(sink: Sink) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the collector");
    let addr = listener.local_addr().expect("its address");
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(conn);
            // Keep-alive: requests one after another on the connection.
            loop {
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                    break;
                }
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 {
                        break;
                    }
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = header.split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    break;
                }
                let ok = request_line.starts_with("POST /v1/traces ");
                if ok {
                    if let Ok(req) = ExportTraceServiceRequest::decode(body.as_slice()) {
                        sink.lock().expect("sink").extend(received(req));
                    }
                }
                let answer: &[u8] = if ok {
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
                } else {
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
                };
                if reader.get_mut().write_all(answer).is_err() {
                    break;
                }
            }
        }
    });
    addr
}

/// Runs berthd with `otlp_section`, makes the calls, stops berthd (which sends what is
/// queued) and checks the spans `sink` received.
async fn spans_reach_the_collector(otlp_section: &str, sink: Sink) {
    let config = format!(
        "[plugins.\"io.containerd.tracing.processor.v1.otlp\"]\n{otlp_section}\n\
         [plugins.\"io.containerd.internal.v1.tracing\"]\nservice_name = \"berth-test\"\n\
         sampling_ratio = 1.0\n"
    );
    let mut d = Daemon::prepare(Some(&config), &[]);
    // Export within a moment rather than every 5 s, so the spans arrive while berthd runs.
    d.set_env("OTEL_BSP_SCHEDULE_DELAY", Some("200"));
    d.restart();
    let out = ctr(&d, &["plugins", "ls"]);
    let (_, rows) = parse_table(out.ok());
    assert!(
        rows.iter()
            .any(|r| r["ID"] == "otlp" && r["STATUS"] == "ok"),
        "the processor loaded:\n{out}"
    );
    create_and_miss(&d).await;
    let create_name = format!("{CONTAINERS_SERVICE}/Create");
    let get_name = format!("{CONTAINERS_SERVICE}/Get");
    let deadline = Instant::now() + EXPORT_WAIT;
    // The spans arrive on their own (schedule delay) while berthd runs.
    loop {
        let arrived = sink
            .lock()
            .expect("sink")
            .iter()
            .any(|s| s.name == create_name);
        if arrived {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no {create_name} span after {EXPORT_WAIT:?}; received {:?}\n{}",
            sink.lock().expect("sink"),
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Whatever is still queued goes at shutdown.
    let status = d.stop();
    assert!(status.success(), "berthd exited with {status}");
    let spans = sink.lock().expect("sink").clone();
    let create = spans
        .iter()
        .find(|s| s.name == create_name)
        .unwrap_or_else(|| panic!("no {create_name} span in {spans:?}"));
    assert_eq!(
        create.attributes.get("namespace").map(String::as_str),
        Some(NS),
        "{create:?}"
    );
    assert_eq!(
        create.attributes.get("id").map(String::as_str),
        Some(CONTAINER),
        "{create:?}"
    );
    assert_eq!(
        create.attributes.get("rpc.service").map(String::as_str),
        Some(CONTAINERS_SERVICE),
        "{create:?}"
    );
    assert_eq!(
        create.attributes.get("rpc.method").map(String::as_str),
        Some("Create")
    );
    assert_eq!(
        create.attributes.get("rpc.system").map(String::as_str),
        Some("grpc")
    );
    assert_eq!(
        create
            .attributes
            .get("rpc.grpc.status_code")
            .map(String::as_str),
        Some("0"),
        "{create:?}"
    );
    assert_ne!(create.status, 2, "an ok call is not an error: {create:?}");
    assert_eq!(create.service, "berth-test", "{create:?}");
    let missing = spans
        .iter()
        .find(|s| s.name == get_name && s.attributes.get("id").map(String::as_str) == Some(MISSING))
        .unwrap_or_else(|| panic!("no {get_name} span for {MISSING} in {spans:?}"));
    assert_eq!(
        missing
            .attributes
            .get("rpc.grpc.status_code")
            .map(String::as_str),
        Some("5"),
        "{missing:?}"
    );
    assert_eq!(missing.status, 2, "NotFound is an error: {missing:?}");
}

#[test]
fn spans_reach_an_otlp_grpc_collector() {
    if !require_root() || !require_binary("ctr") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let sink = Sink::default();
        let addr = grpc_collector(sink.clone()).await;
        let section = format!("endpoint = \"{addr}\"\nprotocol = \"grpc\"\ninsecure = true");
        spans_reach_the_collector(&section, sink).await;
    });
}

#[test]
fn spans_reach_an_otlp_http_collector() {
    if !require_root() || !require_binary("ctr") {
        return;
    }
    let sink = Sink::default();
    let addr = http_collector(sink.clone());
    let section = format!("endpoint = \"http://{addr}\"\nprotocol = \"http/protobuf\"");
    runtime().block_on(spans_reach_the_collector(&section, sink));
}

#[test]
fn a_bad_otlp_section_is_the_plugins_error_and_berthd_runs() {
    if !require_root() || !require_binary("ctr") {
        return;
    }
    let d = Daemon::start_with(
        Some(
            "[plugins.\"io.containerd.tracing.processor.v1.otlp\"]\n\
             endpoint = \"127.0.0.1:4317\"\nprotocol = \"http/json\"\n",
        ),
        &[],
    );
    let out = ctr(&d, &["plugins", "ls", "-d", "id==otlp"]);
    let text = out.ok();
    assert!(
        text.contains("OpenTelemetry protocol \"http/json\" is not supported"),
        "the plugin's error names the protocol:\n{text}"
    );
    assert!(
        d.log().contains("OpenTelemetry export is off"),
        "the log says export is off:\n{}",
        d.log()
    );
}
