//! What the shim reads from and leaves in the bundle: the spec's grouping annotation, the
//! runtime options saved for the `delete` action (containerd `runtime/v2/runc/util.go`
//! `WriteOptions`, `WriteRuntime`). The spec's hooks and namespaces are read in `own`.

use std::collections::HashMap;
use std::path::Path;

use berth_proto::containerd::runc::v1::Options;
use prost::Message;

use crate::constants::{bundle, type_url, GROUP_LABELS};
use crate::error::{Result, ShimError};

/// The runtime options that outlive the shim, as JSON in `options.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SavedOptions {
    /// runc binary.
    pub binary_name: String,
    /// runc root.
    pub root: String,
    /// `--systemd-cgroup`.
    pub systemd_cgroup: bool,
    /// `--criu`.
    pub criu_path: String,
    /// `--no-pivot`.
    pub no_pivot_root: bool,
    /// `--no-new-keyring`.
    pub no_new_keyring: bool,
}

impl From<&Options> for SavedOptions {
    fn from(o: &Options) -> SavedOptions {
        SavedOptions {
            binary_name: o.binary_name.clone(),
            root: o.root.clone(),
            systemd_cgroup: o.systemd_cgroup,
            criu_path: o.criu_path.clone(),
            no_pivot_root: o.no_pivot_root,
            no_new_keyring: o.no_new_keyring,
        }
    }
}

/// Decodes `containerd.runc.v1.Options` from an `Any`; other types (or none) mean defaults.
pub fn decode_options(any: Option<&prost_types::Any>) -> Result<Options> {
    match any {
        Some(a)
            if a.type_url.trim_start_matches("type.googleapis.com/") == type_url::RUNC_OPTIONS =>
        {
            Options::decode(&*a.value).map_err(|e| ShimError::Decode {
                what: "runc options",
                message: e.to_string(),
            })
        }
        _ => Ok(Options::default()),
    }
}

/// Writes `options.json` and `runtime` into the bundle.
pub fn save_options(dir: &Path, opts: &SavedOptions) -> Result<()> {
    let path = dir.join(bundle::OPTIONS);
    let json = serde_json::to_vec(opts).map_err(|e| ShimError::Decode {
        what: "options",
        message: e.to_string(),
    })?;
    std::fs::write(&path, json).map_err(|e| ShimError::io("write", &path, e))?;
    let path = dir.join(bundle::RUNTIME);
    std::fs::write(&path, &opts.binary_name).map_err(|e| ShimError::io("write", &path, e))
}

/// Reads what [`save_options`] wrote; defaults when absent.
pub fn load_options(dir: &Path) -> SavedOptions {
    std::fs::read(dir.join(bundle::OPTIONS))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The grouping id in the spec annotations, if any.
pub fn group_id(spec_json: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default)]
        annotations: Option<HashMap<String, String>>,
    }
    let spec: Spec = serde_json::from_slice(spec_json).ok()?;
    let annotations = spec.annotations?;
    GROUP_LABELS
        .iter()
        .find_map(|label| annotations.get(*label).filter(|v| !v.is_empty()).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_annotations() {
        let spec = br#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-id":"sb","x":"y"}}"#;
        assert_eq!(group_id(spec).as_deref(), Some("sb"));
        let spec = br#"{"annotations":{"io.kubernetes.cri.sandbox-id":"sb","io.containerd.runc.v2.group":"g"}}"#;
        assert_eq!(group_id(spec).as_deref(), Some("g"));
        assert_eq!(group_id(br#"{"ociVersion":"1"}"#), None);
        assert_eq!(group_id(b"not json"), None);
    }

    #[test]
    fn options_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_options(dir.path()), SavedOptions::default());
        let o = Options {
            binary_name: "/usr/sbin/runc".into(),
            root: "/run/x".into(),
            ..Default::default()
        };
        let any = prost_types::Any {
            type_url: type_url::RUNC_OPTIONS.into(),
            value: o.encode_to_vec(),
        };
        let decoded = decode_options(Some(&any)).unwrap();
        assert_eq!(decoded, o);
        save_options(dir.path(), &SavedOptions::from(&decoded)).unwrap();
        let loaded = load_options(dir.path());
        assert_eq!(loaded.binary_name, "/usr/sbin/runc");
        assert_eq!(loaded.root, "/run/x");
        let other = prost_types::Any {
            type_url: "something.Else".into(),
            value: vec![1],
        };
        assert_eq!(decode_options(Some(&other)).unwrap(), Options::default());
    }
}
