//! The annotation keys containerd's CRI writes into specs (`pkg/cri/annotations`), read by
//! runtimes and tools, and the runtime handler's pass-through of pod and container annotations.

use std::collections::{BTreeMap, HashMap};

/// `sandbox` or `container`.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// The value of [`CONTAINER_TYPE`] for a pause container.
pub const CONTAINER_TYPE_SANDBOX: &str = "sandbox";
/// The value of [`CONTAINER_TYPE`] for a workload container.
pub const CONTAINER_TYPE_CONTAINER: &str = "container";
/// The pod's sandbox id.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// The pod's CPU period.
pub const SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
/// The pod's CPU quota.
pub const SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
/// The pod's CPU shares.
pub const SANDBOX_CPU_SHARES: &str = "io.kubernetes.cri.sandbox-cpu-shares";
/// The pod's memory limit.
pub const SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
/// The pod's log directory.
pub const SANDBOX_LOG_DIR: &str = "io.kubernetes.cri.sandbox-log-directory";
/// The pod's Kubernetes namespace.
pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
/// The pod's uid.
pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
/// The pod's name.
pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
/// The container's name.
pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
/// The container's image name.
pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

/// The annotations whose key matches one of the runtime handler's `patterns` (shell globs:
/// `*`, `?`), passed into the spec (containerd `getPassthroughAnnotations`).
pub fn passthrough(
    annotations: &HashMap<String, String>,
    patterns: &[String],
) -> BTreeMap<String, String> {
    annotations
        .iter()
        .filter(|(k, _)| {
            patterns
                .iter()
                .any(|p| glob_match(p.as_bytes(), k.as_bytes()))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether `name` matches the glob `pattern` (`*` any run without `/`, `?` one character
/// other than `/`, as Go's `path.Match`).
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => {
            let mut i = 0;
            loop {
                if glob_match(rest, &name[i..]) {
                    return true;
                }
                if i == name.len() || name[i] == b'/' {
                    return false;
                }
                i += 1;
            }
        }
        Some((b'?', rest)) => match name.split_first() {
            Some((c, tail)) if *c != b'/' => glob_match(rest, tail),
            _ => false,
        },
        Some((c, rest)) => match name.split_first() {
            Some((n, tail)) if n == c => glob_match(rest, tail),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_path_match() {
        assert!(glob_match(b"*", b"anything.io"));
        assert!(glob_match(b"example.com/*", b"example.com/key"));
        assert!(!glob_match(b"example.com/*", b"example.org/key"));
        assert!(!glob_match(b"*", b"a/b"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"ac"));
    }

    #[test]
    fn only_matching_annotations_pass() {
        let a = HashMap::from([
            ("pass.me/x".to_owned(), "1".to_owned()),
            ("other".to_owned(), "2".to_owned()),
        ]);
        let out = passthrough(&a, &["pass.me/*".to_owned()]);
        assert_eq!(out.len(), 1);
        assert_eq!(out["pass.me/x"], "1");
        assert!(passthrough(&a, &[]).is_empty());
    }
}
