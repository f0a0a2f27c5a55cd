//! Prerequisite gates for tests, after containerd `pkg/testutil/helpers_unix.go` `RequiresRoot`.
//!
//! A missing prerequisite skips the test with a `skipped: <reason>` line, except under `CI=true`
//! where it fails loudly: CI has opted in, so a silent skip would hide a broken runner.

use std::env;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Reports a missing prerequisite: panics under `CI=true`, else prints `skipped: <reason>`.
fn missing(reason: &str) -> bool {
    if env::var("CI").is_ok_and(|v| v == "true") {
        panic!("prerequisite missing with CI=true: {reason}");
    }
    println!("skipped: {reason}");
    false
}

/// Returns true when the test runs as root; otherwise skips (or panics under `CI=true`).
///
/// Use as `if !require_root() { return; }` at the top of a test.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    missing("this test requires root")
}

/// Finds an executable by absolute path or on `PATH`.
fn find_executable(name: &str) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        return is_exec(&path).then_some(path);
    }
    let path_var = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path_var)
        .map(|dir| dir.join(name))
        .find(|p| is_exec(p))
}

/// Returns true when the executable `name` (absolute path or a name on `PATH`) exists; otherwise
/// skips (or panics under `CI=true`) naming the binary.
pub fn require_binary(name: &str) -> bool {
    if find_executable(name).is_some() {
        return true;
    }
    missing(&format!("this test requires the `{name}` binary"))
}

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
    missing(&format!(
        "this test requires the Python module `{module}` (pip package `{package}`)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_on_path_and_by_absolute_path() {
        assert!(find_executable("sh").is_some());
        assert!(find_executable("/bin/sh").is_some());
    }

    #[test]
    fn rejects_missing_and_non_executable_files() {
        assert!(find_executable("definitely-not-a-berth-binary").is_none());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        assert!(find_executable(file.to_str().unwrap()).is_none());
    }
}
