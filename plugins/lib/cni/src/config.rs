//! Network configs from `conf_dir` (libcni's `ConfFiles`, go-cni's `loadFromConfDir`): files
//! ending `.conflist`, `.conf` or `.json`, in name order, the first `max_conf_num` of them; a
//! single-plugin `.conf`/`.json` becomes a one-plugin list.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{CniError, Result};

/// The loopback network every pod with its own netns gets first, as go-cni's `WithLoNetwork`.
pub const LOOPBACK_CONFLIST: &str =
    r#"{"cniVersion":"0.3.1","name":"cni-loopback","plugins":[{"type":"loopback"}]}"#;

/// A network config list: a name, a version and the plugins run in order for ADD.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    /// `name`.
    pub name: String,
    /// `cniVersion`.
    pub cni_version: String,
    /// Each plugin's config object (`type` names the binary).
    pub plugins: Vec<Map<String, Value>>,
    /// The file it came from (empty for built-in lists).
    pub source: PathBuf,
}

impl NetworkList {
    /// Parses a `.conflist` document.
    pub fn from_conflist(data: &[u8], source: &Path) -> Result<NetworkList> {
        let doc: Map<String, Value> = serde_json::from_slice(data)
            .map_err(|e| invalid_config(source, format!("not a JSON object: {e}")))?;
        let name = string_field(&doc, "name").ok_or_else(|| invalid_config(source, "no name"))?;
        let cni_version = string_field(&doc, "cniVersion").unwrap_or_default();
        let plugins = match doc.get("plugins") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|p| match p {
                    Value::Object(o) if string_field(o, "type").is_some() => Ok(o.clone()),
                    _ => Err(invalid_config(source, "a plugin without a type")),
                })
                .collect::<Result<Vec<_>>>()?,
            _ => return Err(invalid_config(source, "no plugins list")),
        };
        if plugins.is_empty() {
            return Err(invalid_config(source, "no plugins"));
        }
        Ok(NetworkList {
            name,
            cni_version,
            plugins,
            source: source.to_owned(),
        })
    }

    /// Parses a single-plugin `.conf` and wraps it in a list (libcni `ConfListFromConf`).
    pub fn from_conf(data: &[u8], source: &Path) -> Result<NetworkList> {
        let doc: Map<String, Value> = serde_json::from_slice(data)
            .map_err(|e| invalid_config(source, format!("not a JSON object: {e}")))?;
        if string_field(&doc, "type").is_none() {
            return Err(invalid_config(source, "network type not found"));
        }
        let name = string_field(&doc, "name").ok_or_else(|| invalid_config(source, "no name"))?;
        let cni_version = string_field(&doc, "cniVersion").unwrap_or_default();
        Ok(NetworkList {
            name,
            cni_version,
            plugins: vec![doc],
            source: source.to_owned(),
        })
    }

    /// The list as a conflist document (kept in the result cache so DEL replays it).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "cniVersion": self.cni_version,
            "plugins": self.plugins,
        })
    }

    /// The built-in loopback list.
    pub fn loopback() -> NetworkList {
        // The constant is valid: a parse failure here is a programming error caught by tests.
        NetworkList::from_conflist(LOOPBACK_CONFLIST.as_bytes(), Path::new("")).unwrap_or_else(
            |_| NetworkList {
                name: "cni-loopback".into(),
                cni_version: "0.3.1".into(),
                plugins: Vec::new(),
                source: PathBuf::new(),
            },
        )
    }
}

fn string_field(doc: &Map<String, Value>, key: &str) -> Option<String> {
    match doc.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn invalid_config(path: &Path, reason: impl Into<String>) -> CniError {
    CniError::Network(format!(
        "invalid CNI config {}: {}",
        path.display(),
        reason.into()
    ))
}

/// The first `max` network lists of `dir` (`max` 0 means 1, as containerd's default), in file
/// name order. An unreadable or invalid file fails, as go-cni does; no file at all is
/// [`CniError::Network`] saying "cni config not initialized".
pub fn load_networks(dir: &Path, max: usize) -> Result<Vec<NetworkList>> {
    let max = max.max(1);
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_initialized(dir)),
        Err(e) => return Err(CniError::io("read CNI conf dir", dir, e)),
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CniError::io("read CNI conf dir", dir, e))?;
        let path = entry.path();
        let wanted = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("conflist" | "conf" | "json")
        );
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut lists = Vec::new();
    for path in files {
        let data = std::fs::read(&path).map_err(|e| CniError::io("read CNI config", &path, e))?;
        let list = if path.extension().and_then(|e| e.to_str()) == Some("conflist") {
            NetworkList::from_conflist(&data, &path)?
        } else {
            NetworkList::from_conf(&data, &path)?
        };
        lists.push(list);
        if lists.len() == max {
            break;
        }
    }
    if lists.is_empty() {
        return Err(not_initialized(dir));
    }
    Ok(lists)
}

/// The error when `dir` holds no network config (the kubelet shows it as the NetworkReady
/// reason).
pub fn not_initialized(dir: &Path) -> CniError {
    CniError::Network(format!(
        "cni config not initialized: no network config found in {}",
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn files_load_in_name_order_up_to_max() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "20-b.conflist",
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        );
        write(
            dir.path(),
            "10-a.conf",
            r#"{"cniVersion":"0.4.0","name":"a","type":"ptp"}"#,
        );
        write(dir.path(), "99-ignored.txt", "not json");
        let one = load_networks(dir.path(), 1).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].name, "a");
        assert_eq!(one[0].plugins.len(), 1);
        assert_eq!(one[0].plugins[0]["type"], "ptp");
        let two = load_networks(dir.path(), 5).unwrap();
        assert_eq!(
            two.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(two[1].cni_version, "1.0.0");
        assert_eq!(two[1].plugins[1]["type"], "portmap");
    }

    #[test]
    fn empty_or_missing_dir_is_not_initialized() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_networks(dir.path(), 1).unwrap_err().to_string();
        assert!(err.contains("cni config not initialized"), "{err}");
        let err = load_networks(&dir.path().join("nope"), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cni config not initialized"), "{err}");
    }

    #[test]
    fn invalid_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.conf", r#"{"cniVersion":"0.4.0","name":"a"}"#);
        let err = load_networks(dir.path(), 1).unwrap_err().to_string();
        assert!(err.contains("network type not found"), "{err}");
        std::fs::remove_file(dir.path().join("a.conf")).unwrap();
        write(
            dir.path(),
            "a.conflist",
            r#"{"cniVersion":"0.4.0","name":"a","plugins":[]}"#,
        );
        let err = load_networks(dir.path(), 1).unwrap_err().to_string();
        assert!(err.contains("no plugins"), "{err}");
    }

    #[test]
    fn loopback_list_parses() {
        let lo = NetworkList::loopback();
        assert_eq!(lo.name, "cni-loopback");
        assert_eq!(lo.plugins.len(), 1);
    }
}
