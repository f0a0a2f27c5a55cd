//! Runtime name → shim binary (containerd `runtime/v2/shim/util.go` `BinaryName`, and
//! `ShimManager.resolveRuntimePath`).
//!
//! Stricter than containerd: a runtime name must be `io.containerd.<name>.<version>` with plain
//! alphanumeric parts, or a key of the configured `runtimes` table; an absolute path is taken
//! only when the config names it. The binary is looked up on `$PATH` and next to the daemon,
//! never in the daemon's working directory. Anything else is InvalidArgument and nothing runs.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::RuntimeError;

/// The prefix every runtime v2 name starts with.
const RUNTIME_PREFIX: &str = "io.containerd.";

fn is_plain_part(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// `io.containerd.<name>.<version>` → `containerd-shim-<name>-<version>`; `None` for any other
/// shape (more or fewer parts, other prefix, characters outside `[A-Za-z0-9_-]`).
pub fn binary_name(runtime: &str) -> Option<String> {
    let rest = runtime.strip_prefix(RUNTIME_PREFIX)?;
    let (name, version) = rest.split_once('.')?;
    if !is_plain_part(name) || !is_plain_part(version) {
        return None;
    }
    Some(format!("containerd-shim-{name}-{version}"))
}

/// True when `path` is a regular file with an execute bit.
fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Finds shim binaries for runtime names, caching each answer.
#[derive(Debug)]
pub struct ShimResolver {
    overrides: BTreeMap<String, String>,
    search: Vec<PathBuf>,
    cache: Mutex<HashMap<String, PathBuf>>,
}

impl ShimResolver {
    /// A resolver over the configured overrides, searching `$PATH` and then the daemon's own
    /// directory.
    pub fn new(overrides: BTreeMap<String, String>) -> ShimResolver {
        let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
        let mut search: Vec<PathBuf> = std::env::split_paths(&path)
            .filter(|p| p.is_absolute())
            .collect();
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
        {
            search.push(dir);
        }
        ShimResolver::with_search_path(overrides, search)
    }

    /// A resolver with an explicit search path (tests).
    pub fn with_search_path(
        overrides: BTreeMap<String, String>,
        search: Vec<PathBuf>,
    ) -> ShimResolver {
        ShimResolver {
            overrides,
            search,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The shim binary for `runtime` (a runtime name, or an absolute path the config names).
    pub fn resolve(&self, runtime: &str) -> Result<PathBuf, RuntimeError> {
        if let Some(found) = self.lock().get(runtime) {
            return Ok(found.clone());
        }
        let found = self.lookup(runtime)?;
        self.lock().insert(runtime.to_owned(), found.clone());
        Ok(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PathBuf>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lookup(&self, runtime: &str) -> Result<PathBuf, RuntimeError> {
        let invalid = || RuntimeError::InvalidRuntime(runtime.to_owned());
        if runtime.starts_with('/') {
            // An absolute path runs only if the operator put it in the config.
            let configured = self.overrides.get(runtime).map(String::as_str) == Some(runtime)
                || self.overrides.values().any(|v| v == runtime);
            if !configured {
                return Err(invalid());
            }
            return self.check_absolute(runtime, runtime);
        }
        let binary = match self.overrides.get(runtime) {
            Some(target) if target.starts_with('/') => return self.check_absolute(runtime, target),
            Some(target) if is_plain_binary(target) => target.clone(),
            Some(_) => return Err(invalid()),
            None => binary_name(runtime).ok_or_else(invalid)?,
        };
        self.search
            .iter()
            .map(|dir| dir.join(&binary))
            .find(|p| is_executable(p))
            .ok_or(RuntimeError::ShimNotInstalled {
                runtime: runtime.to_owned(),
                binary,
            })
    }

    fn check_absolute(&self, runtime: &str, path: &str) -> Result<PathBuf, RuntimeError> {
        let p = PathBuf::from(path);
        if is_executable(&p) {
            Ok(p)
        } else {
            Err(RuntimeError::ShimNotInstalled {
                runtime: runtime.to_owned(),
                binary: path.to_owned(),
            })
        }
    }
}

/// A configured binary name: a single path component, no dots-only names.
fn is_plain_binary(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && s != "." && s != ".." && !s.contains('\0')
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use berth_registry::{Classify, ErrorKind};

    use super::*;

    fn exe(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn names_follow_containerds_rule() {
        assert_eq!(
            binary_name("io.containerd.runc.v2").as_deref(),
            Some("containerd-shim-runc-v2")
        );
        assert_eq!(
            binary_name("io.containerd.kata-qemu.v2").as_deref(),
            Some("containerd-shim-kata-qemu-v2")
        );
        for bad in [
            "",
            "runc",
            "io.containerd.runc",
            "io.containerd.runc.v2.x",
            "io.containerd..v2",
            "io.containerd.runc/../../bin/sh.v2",
            "io.containerd.run c.v2",
            "com.example.runc.v2",
            "io.containerd.-x.v2",
        ] {
            assert_eq!(binary_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn resolves_on_the_search_path_with_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let runc = exe(dir.path(), "containerd-shim-runc-v1");
        let berth = exe(dir.path(), "containerd-shim-berth-v2");
        let r = ShimResolver::with_search_path(
            BTreeMap::from([(
                "io.containerd.runc.v2".to_owned(),
                "containerd-shim-berth-v2".to_owned(),
            )]),
            vec![dir.path().to_path_buf()],
        );
        assert_eq!(r.resolve("io.containerd.runc.v2").unwrap(), berth);
        assert_eq!(r.resolve("io.containerd.runc.v1").unwrap(), runc);
        let err = r.resolve("io.containerd.kata.v2").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(matches!(err, RuntimeError::ShimNotInstalled { .. }));
    }

    #[test]
    fn refuses_other_shapes_and_unconfigured_paths() {
        let dir = tempfile::tempdir().unwrap();
        let sh = exe(dir.path(), "shim");
        let r = ShimResolver::with_search_path(BTreeMap::new(), vec![dir.path().to_path_buf()]);
        for bad in [
            "runc",
            "../shim",
            "/bin/sh",
            sh.to_str().unwrap(),
            "io.containerd.../x.v2",
        ] {
            let err = r.resolve(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}");
            assert!(matches!(err, RuntimeError::InvalidRuntime(_)), "{bad:?}");
        }

        let configured = ShimResolver::with_search_path(
            BTreeMap::from([
                ("io.containerd.mine.v1".to_owned(), sh.display().to_string()),
                (
                    "io.containerd.evil.v1".to_owned(),
                    "../../bin/sh".to_owned(),
                ),
            ]),
            vec![],
        );
        assert_eq!(configured.resolve("io.containerd.mine.v1").unwrap(), sh);
        assert_eq!(configured.resolve(sh.to_str().unwrap()).unwrap(), sh);
        assert!(matches!(
            configured.resolve("io.containerd.evil.v1").unwrap_err(),
            RuntimeError::InvalidRuntime(_)
        ));
    }
}
