//! berthd's Prometheus metrics end to end (issue 19, part 2): containerd's `[metrics] address`
//! and `grpc_histogram` keys, `GET /v1/metrics` in the text exposition format, against a real
//! berthd, shim and runc with the busybox test image.
//!
//! - A scrape while 5 containers run parses (a strict parser of the text format below) and
//!   shows each container's CPU and memory series, labelled by namespace and container id; a
//!   deleted container's series are gone from the next scrape.
//! - 100 scrapes cost the daemon less CPU than 100 `berth tasks metrics` calls (the shims'
//!   answers are cached, so a scrape asks no shim most of the time): CPU ticks of berthd from
//!   `/proc/<pid>/stat`, both measured in this test.
//! - gRPC counters grow with calls; `grpc_histogram = true` adds the handling-time histograms,
//!   `false` has none.
//! - An address in use or unparsable stops start-up, naming `[metrics] address` and the
//!   address.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::berth_cli::berth;
use berth_integration::image::build_busybox_image;
use berth_integration::{require_binary, require_root, spawn_raw, Daemon};

const IMAGE: &str = "docker.io/library/bb:latest";
/// How long the tests wait for things.
const PATIENCE: Duration = Duration::from_secs(20);
/// Scrapes and `tasks metrics` calls compared.
const CALLS: usize = 100;

/// Container ids unique to this test process (runc's state is host-global).
fn uid(base: &str) -> String {
    format!("mx-{base}-{}", std::process::id())
}

/// Kills and removes the containers when dropped.
struct Remove<'a>(&'a Path, Vec<String>);

impl Drop for Remove<'_> {
    fn drop(&mut self) {
        for id in &self.1 {
            berth(self.0, &["tasks", "kill", "-s", "KILL", "--all", id]);
            berth(self.0, &["tasks", "delete", "-f", id]);
            berth(self.0, &["containers", "rm", id]);
        }
    }
}

/// A port on 127.0.0.1 free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A daemon serving metrics on a free port, with `grpc_histogram` as given; its address.
fn daemon_with_metrics(histogram: bool) -> (Daemon, String) {
    let address = format!("127.0.0.1:{}", free_port());
    let config = format!("[metrics]\naddress = \"{address}\"\ngrpc_histogram = {histogram}\n");
    (Daemon::start_with(Some(&config), &[]), address)
}

/// `GET path` over HTTP/1.1 on `address`: the status code, the headers and the body.
fn get(address: &str, path: &str) -> (u16, String, String) {
    let mut stream =
        TcpStream::connect(address).unwrap_or_else(|e| panic!("connect {address}: {e}"));
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("set a read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let raw = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, head.to_owned(), body)
}

/// The payload of a chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// One sample of the text format.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: every sample, and each family's type.
#[derive(Debug, Default)]
struct Exposition {
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    /// The samples of series `name`.
    fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The value of `name` with labels including `labels`, if exactly one sample matches.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .series(name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(
            found.len() <= 1,
            "more than one {name} {labels:?}: {found:?}"
        );
        found.first().map(|s| s.value)
    }

    /// Every `container_id` with a sample of `name` in namespace `default`.
    fn containers_in(&self, name: &str) -> BTreeSet<String> {
        self.series(name)
            .filter(|s| s.labels.get("namespace").map(String::as_str) == Some("default"))
            .filter_map(|s| s.labels.get("container_id").cloned())
            .collect()
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// The family a sample belongs to: its name less a histogram or summary suffix when the
/// family of the shorter name is one.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
            {
                return base;
            }
        }
    }
    name
}

/// Parses the Prometheus text format (0.0.4) strictly: `# HELP`/`# TYPE` lines with valid
/// names and types, each family's type declared once and before its samples, the samples of a
/// family together, label names valid and values quoted with only `\\`, `\"` and `\n`
/// escapes, no label twice, a float value, an optional integer timestamp, no sample twice.
/// Panics naming the line otherwise.
fn parse(text: &str) -> Exposition {
    let mut out = Exposition::default();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| -> ! { panic!("line {}: {why}: {line:?}", n + 1) };
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next(), parts.next());
            let Some(name) = name else {
                continue;
            };
            match kind {
                Some("HELP") if !is_name(name) => bad("bad metric name"),
                Some("TYPE") => {
                    let t = parts.next().unwrap_or_else(|| bad("no type"));
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        bad("unknown type");
                    }
                    if !is_name(name) || out.types.insert(name.to_owned(), t.to_owned()).is_some() {
                        bad("bad or repeated family");
                    }
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        // name{labels} value [timestamp]
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| bad("no value"));
        let name = &line[..name_end];
        if !is_name(name) {
            bad("bad metric name");
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = rest.find('=').unwrap_or_else(|| bad("label without '='"));
                let key = &rest[..eq];
                if !is_name(key) || key.contains(':') {
                    bad("bad label name");
                }
                rest = rest[eq + 1..]
                    .strip_prefix('"')
                    .unwrap_or_else(|| bad("unquoted label value"));
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => bad("bad escape"),
                        },
                        Some((_, c)) => value.push(c),
                        None => bad("unterminated label value"),
                    }
                };
                if labels.insert(key.to_owned(), value).is_some() {
                    bad("label twice");
                }
                rest = &rest[end + 1..];
                if let Some(r) = rest.strip_prefix(',') {
                    rest = r;
                } else if !rest.starts_with('}') {
                    bad("labels not separated by ','");
                }
            }
        }
        let mut fields = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| bad("no space before the value"))
            .split(' ');
        let value = fields
            .next()
            .and_then(parse_value)
            .unwrap_or_else(|| bad("bad value"));
        if let Some(ts) = fields.next() {
            if ts.parse::<i64>().is_err() {
                bad("bad timestamp");
            }
        }
        if fields.next().is_some() {
            bad("trailing fields");
        }
        let family = family_of(name, &out.types).to_owned();
        if !out.types.contains_key(&family) {
            bad("sample before its # TYPE");
        }
        if current.as_deref() != Some(family.as_str()) {
            if !done.insert(family.clone()) {
                bad("family's samples not together");
            }
            current = Some(family);
        }
        if !seen.insert(format!("{name}{labels:?}")) {
            bad("sample twice");
        }
        out.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    out
}

/// Scrapes `/v1/metrics`, checking the answer's status and content type.
#[track_caller]
fn scrape(address: &str) -> Exposition {
    let (status, head, body) = get(address, "/v1/metrics");
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    parse(&body)
}

/// utime + stime of process `pid`, in clock ticks (every thread, the ended ones too).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read the stat");
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Polls `check` until it holds; panics naming `what`.
#[track_caller]
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// Either of containerd's names (cgroup v1, cgroup v2) of a container's CPU time and of its
/// memory in use.
const CPU_SERIES: [&str; 2] = [
    "container_cpu_total_nanoseconds",
    "container_cpu_usage_usec_microseconds",
];
const MEMORY_SERIES: [&str; 2] = [
    "container_memory_usage_usage_bytes",
    "container_memory_usage_bytes",
];

fn has_all(e: &Exposition, names: &[&str], ids: &[String]) -> bool {
    let found: BTreeSet<String> = names.iter().flat_map(|n| e.containers_in(n)).collect();
    ids.iter().all(|id| found.contains(id))
}

#[test]
fn containers_series_come_from_cached_stats_and_go_with_the_container() {
    if !require_root() || !require_binary("runc") {
        return;
    }
    let (daemon, metrics) = daemon_with_metrics(false);
    let a = daemon.address();
    let img = build_busybox_image(daemon.dir(), IMAGE);
    berth(
        a,
        &[
            "images",
            "import",
            img.archive.to_str().expect("utf-8 path"),
        ],
    )
    .ok();
    let ids: Vec<String> = (0..5).map(|i| uid(&format!("c{i}"))).collect();
    let _remove = Remove(a, ids.clone());
    for id in &ids {
        berth(a, &["run", "-d", IMAGE, id, "sleep", "600"]).ok();
    }

    // New tasks are asked about at the scrape that first sees them.
    let e = eventually("every container's CPU and memory series", || {
        let e = scrape(&metrics);
        (has_all(&e, &CPU_SERIES, &ids) && has_all(&e, &MEMORY_SERIES, &ids)).then_some(e)
    });
    for id in &ids {
        let labels = [("namespace", "default"), ("container_id", id.as_str())];
        let pids = e
            .value("container_pids_current", &labels)
            .unwrap_or_else(|| panic!("pids of {id}"));
        assert!(pids >= 1.0, "{id}: {pids} pids");
        let memory = MEMORY_SERIES
            .iter()
            .find_map(|n| e.value(n, &labels))
            .expect("a memory series");
        assert!(memory > 0.0, "{id}: memory {memory}");
    }
    assert!(
        e.value("berth_tasks", &[("state", "running")])
            .is_some_and(|n| n >= 5.0),
        "{:?}",
        e.series("berth_tasks").collect::<Vec<_>>()
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "berth_content_store_bytes",
        "berth_gc_runs_total",
    ] {
        assert!(e.series(name).next().is_some(), "no {name}");
    }
    assert!(
        e.value("berth_content_store_bytes", &[])
            .is_some_and(|b| b > 0.0),
        "the imported image's blobs are counted"
    );
    // The image was unpacked into overlayfs snapshots, one per layer plus one per container.
    assert!(
        e.value(
            "berth_snapshots",
            &[("namespace", "default"), ("snapshotter", "overlayfs")]
        )
        .is_some_and(|n| n >= 5.0),
        "{:?}",
        e.series("berth_snapshots").collect::<Vec<_>>()
    );

    // 100 scrapes against 100 `berth tasks metrics`, in berthd's CPU ticks.
    let pid = daemon.pid();
    let before = cpu_ticks(pid);
    for _ in 0..CALLS {
        scrape(&metrics);
    }
    let scrapes = cpu_ticks(pid) - before;
    let before = cpu_ticks(pid);
    for i in 0..CALLS {
        berth(a, &["tasks", "metrics", &ids[i % ids.len()]]).ok();
    }
    let calls = cpu_ticks(pid) - before;
    eprintln!("berthd CPU ticks: {CALLS} scrapes {scrapes}, {CALLS} tasks metrics {calls}");
    assert!(
        scrapes < calls,
        "{CALLS} scrapes cost berthd {scrapes} ticks, {CALLS} `tasks metrics` {calls}"
    );

    // A deleted container's series are gone from the next scrape.
    let gone = &ids[0];
    berth(a, &["tasks", "kill", "-s", "KILL", gone]).ok();
    eventually("the task stops", || {
        let ls = berth(a, &["tasks", "ls", "--format", "json"]).json();
        ls.as_array()
            .is_some_and(|l| {
                l.iter()
                    .any(|t| t["id"] == gone.as_str() && t["status"] == "STOPPED")
            })
            .then_some(())
    });
    berth(a, &["tasks", "delete", gone]).ok();
    berth(a, &["containers", "rm", gone]).ok();
    let e = scrape(&metrics);
    let left: Vec<&Sample> = e
        .samples
        .iter()
        .filter(|s| s.labels.get("container_id") == Some(gone))
        .collect();
    assert!(left.is_empty(), "{gone} still has series: {left:?}");
    assert!(
        has_all(&e, &CPU_SERIES, &ids[1..]),
        "the others keep theirs"
    );
}

#[test]
fn rpc_counters_grow_and_the_histogram_follows_the_config() {
    if !require_root() {
        return;
    }
    let version = [
        ("grpc_service", "containerd.services.version.v1.Version"),
        ("grpc_method", "Version"),
        ("grpc_type", "unary"),
    ];
    let mut handled_ok = version.to_vec();
    handled_ok.push(("grpc_code", "OK"));
    for histogram in [true, false] {
        let (daemon, metrics) = daemon_with_metrics(histogram);
        let a = daemon.address();
        let count = |e: &Exposition, name: &str, labels: &[(&str, &str)]| {
            e.value(name, labels).unwrap_or(0.0)
        };
        let e = scrape(&metrics);
        let (started, handled) = (
            count(&e, "grpc_server_started_total", &version),
            count(&e, "grpc_server_handled_total", &handled_ok),
        );
        for _ in 0..3 {
            berth(a, &["version"]).ok();
        }
        // A call that fails: its code is counted.
        berth(a, &["containers", "info", "no-such-container"]).fails();
        let e = scrape(&metrics);
        assert!(
            count(&e, "grpc_server_started_total", &version) >= started + 3.0,
            "{:?}",
            e.series("grpc_server_started_total").collect::<Vec<_>>()
        );
        assert!(count(&e, "grpc_server_handled_total", &handled_ok) >= handled + 3.0);
        assert!(
            e.value(
                "grpc_server_handled_total",
                &[
                    (
                        "grpc_service",
                        "containerd.services.containers.v1.Containers"
                    ),
                    ("grpc_method", "Get"),
                    ("grpc_code", "NotFound"),
                ]
            )
            .is_some_and(|n| n >= 1.0),
            "{:?}",
            e.series("grpc_server_handled_total").collect::<Vec<_>>()
        );
        let timed = e.value("grpc_server_handling_seconds_count", &version);
        if histogram {
            assert_eq!(
                e.types
                    .get("grpc_server_handling_seconds")
                    .map(String::as_str),
                Some("histogram")
            );
            assert!(timed.is_some_and(|n| n >= 3.0), "{timed:?}");
            let mut inf = version.to_vec();
            inf.push(("le", "+Inf"));
            assert_eq!(e.value("grpc_server_handling_seconds_bucket", &inf), timed);
        } else {
            let any = e
                .samples
                .iter()
                .find(|s| s.name.starts_with("grpc_server_handling_seconds"));
            assert!(any.is_none(), "grpc_histogram = false: {any:?}");
        }
        // Other paths are not the metrics.
        let (status, _, _) = get(&metrics, "/metrics");
        assert_eq!(status, 404);
    }
}

/// berthd run on `config` fails to start; its stderr.
fn start_fails(config: &str) -> String {
    let dir = tempfile::Builder::new()
        .prefix("berth-mx-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, format!("version = 2\n{config}")).expect("write config");
    let arg = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_owned();
    let out = spawn_raw(
        &[
            "--config",
            &arg("config.toml"),
            "--root",
            &arg("root"),
            "--state",
            &arg("state"),
            "--address",
            &arg("s.sock"),
        ],
        PATIENCE,
    );
    assert!(!out.timed_out, "berthd started on {config:?}: {out}");
    assert!(!out.success(), "berthd accepted {config:?}: {out}");
    // Nothing was left listening.
    assert!(
        !Path::new(&arg("s.sock")).exists(),
        "{config:?} left a socket"
    );
    out.stderr
}

#[test]
fn a_metrics_address_in_use_or_unparsable_stops_start_up() {
    if !require_root() {
        return;
    }
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let address = taken.local_addr().expect("its address").to_string();
    let stderr = start_fails(&format!("[metrics]\naddress = \"{address}\"\n"));
    assert!(
        stderr.contains(&format!("[metrics] address \"{address}\"")) && stderr.contains("in use"),
        "{stderr}"
    );
    let stderr = start_fails("[metrics]\naddress = \"not an address\"\n");
    assert!(
        stderr.contains("[metrics] address \"not an address\""),
        "{stderr}"
    );
    let stderr = start_fails("[metrics]\nadress = \"127.0.0.1:1338\"\n");
    assert!(stderr.contains("unknown field `adress`"), "{stderr}");
}
