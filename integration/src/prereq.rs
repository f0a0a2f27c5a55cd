//! Prerequisite gates for tests: the one root gate and `PATH` lookup live in the leaf crate
//! `berth-testutil` (re-exported here), so that unit tests of any crate use the same ones; this
//! module adds the gates only end-to-end tests need.

pub use berth_testutil::{find_executable, on_path, require_binary, require_root, skip};

/// Returns true when `python3` can import `module`; otherwise skips (or panics under `CI=true`)
/// naming the module and the package that provides it.
pub fn require_python_module(module: &str, package: &str) -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    skip(&format!(
        "this test requires the Python module `{module}` (pip package `{package}`)"
    ))
}
