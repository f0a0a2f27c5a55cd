//! `berth-bench --quick` end to end: the built benchmark starts its own berthd and containerd,
//! measures everything at tiny sizes, and must produce a finite number for every metric (CI does
//! not judge the figures, only that the harness still measures them all).

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_integration::bench::METRICS;
use berth_integration::{require_binary, require_root, run_with_timeout};
use serde_json::Value;

/// `target/<profile>/berth-bench`, next to berthd: the test executable lives in
/// `target/<profile>/deps/`.
fn bench_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is in target/<profile>/deps");
    let bin = dir.join("berth-bench");
    assert!(
        bin.is_file() && dir.join("berthd").is_file(),
        "berth-bench or berthd not found in {}: run `cargo build --workspace` first",
        dir.display()
    );
    bin
}

/// A summary object with a finite median, min and max.
fn finite_summary(value: &Value) -> bool {
    ["median", "min", "max"]
        .iter()
        .all(|k| value[k].as_f64().is_some_and(f64::is_finite))
}

#[test]
fn quick_run_measures_every_metric() {
    if !require_root() || !require_binary("containerd") || !require_binary("runc") {
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let json_path = out_dir.path().join("bench.json");
    let mut cmd = Command::new(bench_bin());
    cmd.arg("--quick").arg("--out").arg(&json_path);
    let out = run_with_timeout(cmd, Duration::from_secs(600));
    assert!(out.success(), "berth-bench --quick failed: {out}");
    assert!(out.stdout.contains("metric"), "no table printed: {out}");

    let text = std::fs::read_to_string(&json_path).unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        report["missing"].as_array().map(Vec::len),
        Some(0),
        "{text}"
    );
    let metrics = report["metrics"].as_array().expect("a metrics array");
    assert_eq!(metrics.len(), METRICS.len(), "{text}");
    for (def, metric) in METRICS.iter().zip(metrics) {
        assert_eq!(metric["id"], def.id, "{text}");
        assert!(
            finite_summary(&metric["containerd"]),
            "{}: no containerd figure in {metric}",
            def.id
        );
        // The Berth side may only be absent with a stated reason (`berth run` not written yet).
        assert!(
            finite_summary(&metric["berth"]) || metric["not_applicable"].is_string(),
            "{}: no berth figure in {metric}",
            def.id
        );
    }
}
