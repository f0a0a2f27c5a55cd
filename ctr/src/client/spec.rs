//! The OCI runtime spec `berth run` and `containers create` send, as containerd's `oci/spec.go`
//! (`populateDefaultUnixSpec`) and `oci/spec_opts*.go` build it for ctr.
//!
//! The spec is built and edited as a `serde_json::Value` rather than with the `oci-spec` crate's
//! typed builders: containerd treats the spec as an opaque JSON document in an `Any`, ctr's
//! options are small edits of that document, and a `Value` keeps every field of a spec written
//! by someone else (`--config`, or a container made by the real ctr when `tasks exec` reuses its
//! process) instead of dropping what a typed model does not know.

use std::collections::HashMap;

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;
use serde_json::{json, Value};

/// `runtime-spec` version containerd 1.6 writes (`specs.Version`).
pub use berth_wellknown::oci::VERSION as OCI_VERSION;
/// Type URL of the spec `Any` (containerd registers `specs.Spec` under it).
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Type URL of an exec process spec `Any`.
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// containerd's `defaultUnixEnv`, default capabilities, and every capability (for
/// `--privileged`: containerd takes the caller's current set, which for root is all of them).
pub use berth_wellknown::oci::{ALL_CAPS, DEFAULT_CAPS, DEFAULT_PATH_ENV};

/// The default spec of a container `id` in namespace `ns` (`populateDefaultUnixSpec` followed by
/// `WithDefaultUnixDevices`).
pub fn default_spec(ns: &str, id: &str) -> Value {
    let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
    let dev = |major: i64, minor: Option<i64>| {
        let mut d = json!({"allow": true, "type": "c", "major": major, "access": "rwm"});
        if let Some(minor) = minor {
            d["minor"] = json!(minor);
        }
        d
    };
    json!({
        "ociVersion": OCI_VERSION,
        "process": {
            "user": {"uid": 0, "gid": 0},
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs"},
        "mounts": [
            mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
            mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
            mount("/dev/pts", "devpts", "devpts",
                &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
            mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
            mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
            mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"]),
            mount("/run", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
        ],
        "linux": {
            "resources": {
                "devices": [
                    {"allow": false, "access": "rwm"},
                    dev(1, Some(3)),
                    dev(1, Some(8)),
                    dev(1, Some(7)),
                    dev(5, Some(0)),
                    dev(1, Some(5)),
                    dev(1, Some(9)),
                    dev(5, Some(1)),
                    dev(136, None),
                    dev(5, Some(2)),
                ],
            },
            "cgroupsPath": format!("/{ns}/{id}"),
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"},
            ],
            "maskedPaths": berth_wellknown::oci::DEFAULT_MASKED_PATHS,
            "readonlyPaths": berth_wellknown::oci::DEFAULT_READONLY_PATHS,
        },
    })
}

/// One spec mount.
pub fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Value {
    json!({"destination": destination, "type": kind, "source": source, "options": options})
}

/// Parses ctr's `--mount type=bind,src=/a,dst=/b,options=rbind:ro` (a CSV record of `k=v`).
pub fn parse_mount_flag(text: &str) -> Result<Value> {
    let mut m = json!({});
    for field in text.split(',') {
        let Some((key, value)) = field.split_once('=') else {
            bail!("invalid mount specification: expected key=val");
        };
        match key {
            "type" => m["type"] = json!(value),
            "source" | "src" => m["source"] = json!(value),
            "destination" | "dst" => m["destination"] = json!(value),
            "options" => m["options"] = json!(value.split(':').collect::<Vec<_>>()),
            other => bail!("mount option {other:?} not supported"),
        }
    }
    Ok(m)
}

/// containerd's `replaceOrAppendEnvValues`: `overrides` replace same-named `defaults`, new ones
/// are appended, and a bare `NAME` removes `NAME`.
pub fn replace_or_append_env(defaults: &[String], overrides: &[String]) -> Vec<String> {
    let mut results: Vec<Option<String>> = defaults.iter().cloned().map(Some).collect();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, e) in defaults.iter().enumerate() {
        let name = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        index.insert(name.to_owned(), i);
    }
    for value in overrides {
        match value.split_once('=') {
            None => {
                if let Some(&i) = index.get(value) {
                    results[i] = None;
                }
            }
            Some((name, _)) => match index.get(name) {
                Some(&i) => results[i] = Some(value.clone()),
                None => {
                    index.insert(name.to_owned(), results.len());
                    results.push(Some(value.clone()));
                }
            },
        }
    }
    results.into_iter().flatten().collect()
}

/// The env of the spec's process.
pub fn env(spec: &Value) -> Vec<String> {
    strings(&spec["process"]["env"])
}

/// Strings of a JSON array (empty for anything else).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `WithEnv`: merges `vars` into the process env.
pub fn with_env(spec: &mut Value, vars: &[String]) {
    if vars.is_empty() {
        return;
    }
    let merged = replace_or_append_env(&env(spec), vars);
    spec["process"]["env"] = json!(merged);
}

/// `WithEnvFile`: one variable a line.
pub fn env_file_vars(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

/// The parts of an image config `run` uses (`ocispec.ImageConfig`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub labels: Option<HashMap<String, String>>,
    #[serde(default)]
    pub stop_signal: String,
}

/// An image config document: only `config` matters here.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfigDoc {
    #[serde(default)]
    pub config: RunConfig,
}

/// The accounts of a root filesystem: its `/etc/passwd` and `/etc/group` (None when absent).
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    pub passwd: Option<String>,
    pub group: Option<String>,
}

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

impl Accounts {
    /// Reads `<root>/etc/passwd` and `<root>/etc/group`.
    pub fn read(root: &std::path::Path) -> Self {
        Self {
            passwd: std::fs::read_to_string(root.join("etc/passwd")).ok(),
            group: std::fs::read_to_string(root.join("etc/group")).ok(),
        }
    }

    /// Parsed passwd entries (malformed lines skipped, as runc's `user` package does).
    pub fn users(&self) -> Vec<PasswdEntry> {
        let Some(text) = &self.passwd else {
            return Vec::new();
        };
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                Some(PasswdEntry {
                    name: (*f.first()?).to_owned(),
                    uid: f.get(2)?.parse().ok()?,
                    gid: f.get(3)?.parse().ok()?,
                })
            })
            .collect()
    }

    /// Parsed group entries.
    pub fn groups(&self) -> Vec<GroupEntry> {
        let Some(text) = &self.group else {
            return Vec::new();
        };
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                Some(GroupEntry {
                    name: (*f.first()?).to_owned(),
                    gid: f.get(2)?.parse().ok()?,
                    members: f
                        .get(3)
                        .map(|m| {
                            m.split(',')
                                .filter(|s| !s.is_empty())
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default(),
                })
            })
            .collect()
    }
}

fn set_user(spec: &mut Value, uid: u32, gid: u32) {
    spec["process"]["user"]["uid"] = json!(uid);
    spec["process"]["user"]["gid"] = json!(gid);
}

/// `ensureAdditionalGids`: the primary gid is always among the additional gids.
fn ensure_additional_gids(spec: &mut Value) {
    let gid = spec["process"]["user"]["gid"].as_u64().unwrap_or(0);
    let mut gids: Vec<u64> = spec["process"]["user"]["additionalGids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    if !gids.contains(&gid) {
        gids.insert(0, gid);
    }
    spec["process"]["user"]["additionalGids"] = json!(gids);
}

/// `WithUser(userstr)`: `uid`, `name`, `uid:gid`, `name:group` resolved in the rootfs accounts.
pub fn with_user(spec: &mut Value, userstr: &str, accounts: &Accounts) -> Result<()> {
    let max = u32::try_from(i32::MAX).unwrap_or(u32::MAX);
    let as_id = |s: &str| s.parse::<u32>().ok().filter(|v| *v <= max);
    let parts: Vec<&str> = userstr.split(':').collect();
    if let Some(obj) = spec["process"]["user"].as_object_mut() {
        obj.remove("additionalGids");
    }
    let result = match parts.as_slice() {
        [one] => match as_id(one) {
            Some(uid) => {
                match accounts.users().into_iter().find(|u| u.uid == uid) {
                    Some(u) => set_user(spec, u.uid, u.gid),
                    None => set_user(spec, uid, 0),
                }
                Ok(())
            }
            None => {
                let user = accounts
                    .users()
                    .into_iter()
                    .find(|u| u.name == *one)
                    .with_context(|| format!("no users found matching {one:?} in the rootfs"))?;
                set_user(spec, user.uid, user.gid);
                Ok(())
            }
        },
        [u, g] => {
            let mut uid = as_id(u).unwrap_or(0);
            let mut gid = as_id(g).unwrap_or(0);
            if as_id(u).is_none() {
                uid = accounts
                    .users()
                    .into_iter()
                    .find(|e| e.name == *u)
                    .with_context(|| format!("no users found matching {u:?} in the rootfs"))?
                    .uid;
            }
            if as_id(g).is_none() {
                gid = accounts
                    .groups()
                    .into_iter()
                    .find(|e| e.name == *g)
                    .with_context(|| format!("no groups found matching {g:?} in the rootfs"))?
                    .gid;
            }
            set_user(spec, uid, gid);
            Ok(())
        }
        _ => Err(anyhow::anyhow!("invalid USER value {userstr}")),
    };
    ensure_additional_gids(spec);
    result
}

/// `WithAdditionalGIDs(userstr)`: the supplementary groups listing the user (by name, or by the
/// name of the passwd entry with that uid).
pub fn with_additional_gids(spec: &mut Value, userstr: &str, accounts: &Accounts) {
    let username = match userstr.parse::<u32>() {
        Ok(uid) => match accounts.users().into_iter().find(|u| u.uid == uid) {
            Some(u) => u.name,
            None => {
                ensure_additional_gids(spec);
                return;
            }
        },
        Err(_) => userstr.to_owned(),
    };
    let gids: Vec<u32> = accounts
        .groups()
        .into_iter()
        .filter(|g| g.name != username && g.members.contains(&username))
        .map(|g| g.gid)
        .collect();
    spec["process"]["user"]["additionalGids"] = json!(gids);
    ensure_additional_gids(spec);
}

/// `WithImageConfigArgs` (Linux branch): env, args, cwd and user from the image config.
pub fn with_image_config(
    spec: &mut Value,
    config: &RunConfig,
    args: &[String],
    accounts: &Accounts,
) -> Result<()> {
    let defaults = match &config.env {
        Some(e) if !e.is_empty() => e.clone(),
        _ => vec![DEFAULT_PATH_ENV.to_owned()],
    };
    spec["process"]["env"] = json!(replace_or_append_env(&defaults, &env(spec)));
    let cmd = if args.is_empty() {
        config.cmd.clone().unwrap_or_default()
    } else {
        args.to_vec()
    };
    let mut full = config.entrypoint.clone().unwrap_or_default();
    full.extend(cmd);
    spec["process"]["args"] = json!(full);
    spec["process"]["cwd"] = json!(if config.working_dir.is_empty() {
        "/"
    } else {
        config.working_dir.as_str()
    });
    if config.user.is_empty() {
        with_additional_gids(spec, "root", accounts);
    } else {
        with_user(spec, &config.user, accounts)?;
        let uid = spec["process"]["user"]["uid"].as_u64().unwrap_or(0);
        with_additional_gids(spec, &uid.to_string(), accounts);
    }
    Ok(())
}

/// `WithAddedCapabilities` / `WithDroppedCapabilities` on bounding, effective and permitted.
pub fn edit_capabilities(spec: &mut Value, add: &[String], drop: &[String]) -> Result<()> {
    for cap in add.iter().chain(drop) {
        if !cap.starts_with("CAP_") {
            bail!("capabilities must be specified with 'CAP_' prefix");
        }
    }
    for set in ["bounding", "effective", "permitted"] {
        let mut list = strings(&spec["process"]["capabilities"][set]);
        for cap in add {
            if cap == "CAP_ALL" {
                for &c in ALL_CAPS {
                    if !list.iter().any(|x| x == c) {
                        list.push(c.to_owned());
                    }
                }
            } else if !list.contains(cap) {
                list.push(cap.clone());
            }
        }
        for cap in drop {
            if cap == "CAP_ALL" {
                list.clear();
            } else {
                list.retain(|c| c != cap);
            }
        }
        spec["process"]["capabilities"][set] = json!(list);
    }
    Ok(())
}

/// `WithPrivileged` + `WithAllDevicesAllowed`: every capability, no masked or read-only paths,
/// writable sysfs and cgroupfs, every device allowed.
pub fn with_privileged(spec: &mut Value) {
    for set in ["bounding", "effective", "permitted"] {
        spec["process"]["capabilities"][set] = json!(ALL_CAPS.to_vec());
    }
    if let Some(linux) = spec["linux"].as_object_mut() {
        linux.remove("maskedPaths");
        linux.remove("readonlyPaths");
        linux.remove("seccomp");
    }
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for m in mounts {
            if m["type"] == "sysfs" || m["type"] == "cgroup" {
                if let Some(opts) = m["options"].as_array_mut() {
                    for o in opts.iter_mut() {
                        if o == "ro" {
                            *o = json!("rw");
                        }
                    }
                }
            }
        }
    }
    spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
}

/// `WithHostNamespace`: drops namespace `kind` so the container shares the host's.
pub fn with_host_namespace(spec: &mut Value, kind: &str) {
    if let Some(list) = spec["linux"]["namespaces"].as_array_mut() {
        list.retain(|n| n["type"] != kind);
    }
}

/// `WithLinuxNamespace`: joins (or replaces) namespace `kind` at `path`.
pub fn with_linux_namespace(spec: &mut Value, kind: &str, path: &str) {
    let entry = json!({"type": kind, "path": path});
    if let Some(list) = spec["linux"]["namespaces"].as_array_mut() {
        if let Some(n) = list.iter_mut().find(|n| n["type"] == kind) {
            *n = entry;
            return;
        }
        list.push(entry);
    } else {
        spec["linux"]["namespaces"] = json!([entry]);
    }
}

/// Appends a mount.
pub fn add_mount(spec: &mut Value, m: Value) {
    match spec["mounts"].as_array_mut() {
        Some(list) => list.push(m),
        None => spec["mounts"] = json!([m]),
    }
}

/// Merges annotations.
pub fn with_annotations(spec: &mut Value, annotations: &HashMap<String, String>) {
    if annotations.is_empty() {
        return;
    }
    if !spec["annotations"].is_object() {
        spec["annotations"] = json!({});
    }
    for (k, v) in annotations {
        spec["annotations"][k] = json!(v);
    }
}

/// The spec as the `Any` containerd stores.
pub fn to_any(spec: &Value) -> Result<prost_types::Any> {
    Ok(prost_types::Any {
        type_url: SPEC_TYPE_URL.to_owned(),
        value: serde_json::to_vec(spec)?,
    })
}

/// Parses a spec `Any` (JSON value).
pub fn from_any(any: Option<&prost_types::Any>) -> Result<Value> {
    let any = any.context("container has no spec")?;
    serde_json::from_slice(&any.value).context("cannot parse the container's spec as JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn default_spec_matches_ctr() {
        let spec = default_spec("default", "c1");
        assert_eq!(spec["ociVersion"], "1.0.2-dev");
        assert_eq!(spec["linux"]["cgroupsPath"], "/default/c1");
        assert_eq!(spec["root"]["path"], "rootfs");
        assert_eq!(
            spec["process"]["capabilities"]["bounding"][13],
            "CAP_AUDIT_WRITE"
        );
        assert_eq!(spec["mounts"].as_array().unwrap().len(), 7);
        assert_eq!(spec["linux"]["resources"]["devices"][8]["major"], 136);
        assert!(spec["linux"]["resources"]["devices"][8]
            .get("minor")
            .is_none());
        assert_eq!(spec["linux"]["namespaces"][4]["type"], "network");
        assert_eq!(spec["process"]["rlimits"][0]["hard"], 1024);
    }

    #[test]
    fn env_merges_like_containerd() {
        let out = replace_or_append_env(&s(&["PATH=/bin", "A=1", "B=2"]), &s(&["A=x", "B", "C=3"]));
        assert_eq!(out, s(&["PATH=/bin", "A=x", "C=3"]));
    }

    #[test]
    fn image_config_sets_process() {
        let mut spec = default_spec("default", "c1");
        with_env(&mut spec, &s(&["FOO=bar"]));
        let cfg = RunConfig {
            env: Some(s(&["PATH=/x", "FOO=img"])),
            entrypoint: Some(s(&["/ep"])),
            cmd: Some(s(&["a"])),
            ..Default::default()
        };
        let accounts = Accounts {
            passwd: Some("root:x:0:0:root:/root:/bin/sh\nbob:x:1000:100::/:/bin/sh\n".into()),
            group: Some("root:x:0:\nusers:x:100:\nwheel:x:10:bob,root\n".into()),
        };
        with_image_config(&mut spec, &cfg, &[], &accounts).unwrap();
        assert_eq!(spec["process"]["env"], json!(["PATH=/x", "FOO=bar"]));
        assert_eq!(spec["process"]["args"], json!(["/ep", "a"]));
        assert_eq!(spec["process"]["cwd"], "/");
        assert_eq!(spec["process"]["user"]["additionalGids"], json!([0, 10]));
        with_image_config(&mut spec, &cfg, &s(&["b", "c"]), &accounts).unwrap();
        assert_eq!(spec["process"]["args"], json!(["/ep", "b", "c"]));

        with_user(&mut spec, "bob", &accounts).unwrap();
        with_additional_gids(&mut spec, "1000", &accounts);
        assert_eq!(spec["process"]["user"]["uid"], 1000);
        assert_eq!(spec["process"]["user"]["gid"], 100);
        assert_eq!(spec["process"]["user"]["additionalGids"], json!([100, 10]));
        with_user(&mut spec, "5:6", &accounts).unwrap();
        assert_eq!(spec["process"]["user"]["uid"], 5);
        assert_eq!(spec["process"]["user"]["gid"], 6);
        assert!(with_user(&mut spec, "nobody", &accounts).is_err());
    }

    #[test]
    fn mount_flag_and_caps() {
        let m = parse_mount_flag("type=bind,src=/a,dst=/b,options=rbind:ro").unwrap();
        assert_eq!(
            m,
            json!({"type": "bind", "source": "/a", "destination": "/b", "options": ["rbind", "ro"]})
        );
        assert!(parse_mount_flag("bogus").is_err());
        let mut spec = default_spec("n", "i");
        edit_capabilities(&mut spec, &s(&["CAP_SYS_ADMIN"]), &s(&["CAP_KILL"])).unwrap();
        let b = strings(&spec["process"]["capabilities"]["bounding"]);
        assert!(b.contains(&"CAP_SYS_ADMIN".to_owned()) && !b.contains(&"CAP_KILL".to_owned()));
        assert!(edit_capabilities(&mut spec, &s(&["SYS_ADMIN"]), &[]).is_err());
    }
}
