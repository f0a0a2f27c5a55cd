//! The prerequisite gates of Berth's tests, after containerd `pkg/testutil/helpers_unix.go`
//! `RequiresRoot`: the one root gate and the one `PATH` lookup every crate's tests use.
//!
//! A missing prerequisite skips the test with a `skipped: <reason>` line, except under `CI=true`
//! where it fails loudly: CI has opted in, so a silent skip would hide a broken runner.
//!
//! A leaf crate (it depends on `nix` alone) so that any crate can reach it: the snapshotter
//! conformance suite, which is library code, as a dependency (containerd's
//! `core/snapshots/testsuite` imports `pkg/testutil` the same way), unit tests as a
//! dev-dependency, and the end-to-end harness `berth-integration`, which re-exports it.
//!
//! ```no_run
//! if !berth_testutil::require_root() || !berth_testutil::require_binary("runc") {
//!     return; // printed `skipped: ...`; under CI=true this panicked instead
//! }
//! ```

use std::env;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// True when `CI=true`: a missing prerequisite then fails the test instead of skipping it.
pub fn ci() -> bool {
    env::var("CI").is_ok_and(|v| v == "true")
}

/// Reports a missing prerequisite and returns false: panics under `CI=true`, else prints
/// `skipped: <reason>`. For conditions the other gates do not name.
///
/// Use as `return skip("...");` or `if !cond { skip("..."); return; }`.
pub fn skip(reason: &str) -> bool {
    if ci() {
        panic!("prerequisite missing with CI=true: {reason}");
    }
    println!("skipped: {reason}");
    false
}

/// True when the test runs as root; otherwise skips (or panics under `CI=true`).
///
/// Use as `if !require_root() { return; }` at the top of a test.
pub fn require_root() -> bool {
    require_root_for("this test")
}

/// [`require_root`] naming what needs root (`"overlay mounts"` reads as
/// `skipped: overlay mounts requires root`).
pub fn require_root_for(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    skip(&format!("{what} requires root"))
}

/// Finds an executable by absolute (or relative, with a `/`) path or on `PATH`.
pub fn find_executable(name: &str) -> Option<PathBuf> {
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

/// True when the executable `name` is found (see [`find_executable`]); no skip, no panic.
pub fn on_path(name: &str) -> bool {
    find_executable(name).is_some()
}

/// True when the executable `name` (a path or a name on `PATH`) exists; otherwise skips (or
/// panics under `CI=true`) naming the binary.
pub fn require_binary(name: &str) -> bool {
    if on_path(name) {
        return true;
    }
    skip(&format!("this test requires the `{name}` binary"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_on_path_and_by_absolute_path() {
        assert!(on_path("sh"));
        assert!(find_executable("/bin/sh").is_some());
    }

    #[test]
    fn rejects_missing_and_non_executable_files() {
        assert!(!on_path("definitely-not-a-berth-binary"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        assert!(find_executable(file.to_str().unwrap()).is_none());
        assert!(find_executable(dir.path().to_str().unwrap()).is_none());
    }
}
