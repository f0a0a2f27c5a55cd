//! `[plugins."io.containerd.runtime.v2.task"]`: the runtime v2 plugin's config section
//! (containerd `runtime/v2/manager.go` `Config`, plus Berth's runtime → shim overrides).

use std::collections::BTreeMap;
use std::time::Duration;

use berth_proto::containerd::runc::v1::Options as RuncOptions;
use berth_registry::config as daemon;
use berth_registry::Platform;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::manager::RUNC_OPTIONS_TYPE;

/// The runtime name ctr and the CRI plugin use by default.
pub const RUNC_V2: &str = "io.containerd.runc.v2";

/// Berth's own shim binary.
pub const BERTH_SHIM: &str = "containerd-shim-berth-v2";

/// The runtime v2 plugin's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Platforms served, `os/arch[/variant]`; introspection lists them.
    pub platforms: Vec<String>,
    /// Runtime name → shim binary: a name looked up on PATH and next to the daemon, or an
    /// absolute path used as is. Runtimes not listed follow containerd's naming rule. Or a
    /// table, `{ shim = "...", options = { BinaryName = "crun" } }`: the shim (empty for the
    /// default one) and the runtime's default `containerd.runc.v1.Options`, in the CRI's
    /// spelling (`runtimes.<name>.options`).
    pub runtimes: BTreeMap<String, Runtime>,
}

/// One `runtimes` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Runtime {
    /// The shim binary alone.
    Shim(String),
    /// The shim binary and default options.
    Table(RuntimeTable),
}

/// The table form of a `runtimes` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeTable {
    /// The shim binary, as the string form; empty: Berth's shim for `io.containerd.runc.v2`,
    /// containerd's naming rule for other names.
    pub shim: String,
    /// Options a task of this runtime gets where its container's and the request's options
    /// leave a field empty (or false, or 0).
    pub options: Option<RuncDefaults>,
}

/// `containerd.runc.v1.Options` with containerd's TOML names (the CRI plugin's
/// `runtimes.<name>.options`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "PascalCase")]
pub struct RuncDefaults {
    /// `--no-pivot`.
    pub no_pivot_root: bool,
    /// `--no-new-keyring`.
    pub no_new_keyring: bool,
    /// The shim's own cgroup.
    pub shim_cgroup: String,
    /// Owner of the I/O pipes.
    pub io_uid: u32,
    /// Group of the I/O pipes.
    pub io_gid: u32,
    /// The OCI runtime binary (`runc`, `crun`, or a path).
    pub binary_name: String,
    /// The runtime's state root.
    pub root: String,
    /// criu's path.
    pub criu_path: String,
    /// The systemd cgroup driver.
    pub systemd_cgroup: bool,
    /// Checkpoint image path.
    pub criu_image_path: String,
    /// Checkpoint work path.
    pub criu_work_path: String,
}

impl RuncDefaults {
    /// As the protobuf message.
    pub fn to_options(&self) -> RuncOptions {
        RuncOptions {
            no_pivot_root: self.no_pivot_root,
            no_new_keyring: self.no_new_keyring,
            shim_cgroup: self.shim_cgroup.clone(),
            io_uid: self.io_uid,
            io_gid: self.io_gid,
            binary_name: self.binary_name.clone(),
            root: self.root.clone(),
            criu_path: self.criu_path.clone(),
            systemd_cgroup: self.systemd_cgroup,
            criu_image_path: self.criu_image_path.clone(),
            criu_work_path: self.criu_work_path.clone(),
        }
    }
}

impl Config {
    /// Runtime name → shim binary, for the resolver.
    pub fn shim_overrides(&self) -> BTreeMap<String, String> {
        self.runtimes
            .iter()
            .filter_map(|(name, entry)| {
                let shim = match entry {
                    Runtime::Shim(shim) => shim.clone(),
                    Runtime::Table(t) if !t.shim.is_empty() => t.shim.clone(),
                    Runtime::Table(_) if name == RUNC_V2 => BERTH_SHIM.to_owned(),
                    Runtime::Table(_) => return None,
                };
                Some((name.clone(), shim))
            })
            .collect()
    }

    /// Runtime name → its default options, for the runtimes that have some.
    pub fn default_options(&self) -> BTreeMap<String, RuncOptions> {
        self.runtimes
            .iter()
            .filter_map(|(name, entry)| match entry {
                Runtime::Table(RuntimeTable {
                    options: Some(o), ..
                }) => Some((name.clone(), o.to_options())),
                _ => None,
            })
            .collect()
    }
}

/// `given` (the task's effective options) over `defaults`: every field `given` leaves empty,
/// false or 0 takes the default. Options of another type are returned unchanged.
pub fn apply_defaults(
    defaults: &RuncOptions,
    given: Option<prost_types::Any>,
) -> Result<Option<prost_types::Any>, prost::DecodeError> {
    let mut o = match &given {
        None => RuncOptions::default(),
        Some(any) if any.type_url == RUNC_OPTIONS_TYPE => RuncOptions::decode(&*any.value)?,
        Some(_) => return Ok(given),
    };
    let text = |mine: &mut String, default: &String| {
        if mine.is_empty() {
            mine.clone_from(default);
        }
    };
    text(&mut o.binary_name, &defaults.binary_name);
    text(&mut o.root, &defaults.root);
    text(&mut o.shim_cgroup, &defaults.shim_cgroup);
    text(&mut o.criu_path, &defaults.criu_path);
    text(&mut o.criu_image_path, &defaults.criu_image_path);
    text(&mut o.criu_work_path, &defaults.criu_work_path);
    o.no_pivot_root |= defaults.no_pivot_root;
    o.no_new_keyring |= defaults.no_new_keyring;
    o.systemd_cgroup |= defaults.systemd_cgroup;
    if o.io_uid == 0 {
        o.io_uid = defaults.io_uid;
    }
    if o.io_gid == 0 {
        o.io_gid = defaults.io_gid;
    }
    Ok(Some(prost_types::Any {
        type_url: RUNC_OPTIONS_TYPE.to_owned(),
        value: o.encode_to_vec(),
    }))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            platforms: vec![Platform::host().to_string()],
            runtimes: BTreeMap::from([(RUNC_V2.to_owned(), Runtime::Shim(BERTH_SHIM.to_owned()))]),
        }
    }
}

/// The shim timeouts of the daemon's `[timeouts]` (containerd `runtime/v2/shim.go`,
/// `services/tasks/local.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `io.containerd.timeout.shim.load`: a restarted daemon's wait for a shim's Connect.
    pub load: Duration,
    /// `io.containerd.timeout.shim.cleanup`: a shim's `delete` action.
    pub cleanup: Duration,
    /// `io.containerd.timeout.shim.shutdown`: a shim's Shutdown.
    pub shutdown: Duration,
    /// `io.containerd.timeout.task.state`: a shim's State.
    pub state: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::from_daemon_config(&berth_registry::Config::default())
    }
}

impl Timeouts {
    /// The timeouts the daemon config sets, Berth's defaults for the others.
    pub fn from_daemon_config(config: &berth_registry::Config) -> Timeouts {
        let get = |key: &str| config.timeout(key).unwrap_or(Duration::from_secs(5));
        Timeouts {
            load: get(daemon::TIMEOUT_SHIM_LOAD),
            cleanup: get(daemon::TIMEOUT_SHIM_CLEANUP),
            shutdown: get(daemon::TIMEOUT_SHIM_SHUTDOWN),
            state: get(daemon::TIMEOUT_TASK_STATE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_maps_runc_v2_to_the_berth_shim() {
        let c = Config::default();
        assert_eq!(
            c.shim_overrides().get(RUNC_V2).map(String::as_str),
            Some(BERTH_SHIM)
        );
        assert!(c.default_options().is_empty());
        assert_eq!(c.platforms.len(), 1);
    }

    #[test]
    fn runtimes_take_a_shim_or_a_table_with_default_options() {
        let c: Config = serde_json::from_value(serde_json::json!({
            "runtimes": {
                "io.containerd.runc.v2": { "options": { "BinaryName": "crun", "SystemdCgroup": false } },
                "io.containerd.runsc.v1": "containerd-shim-runsc-v1",
                "io.containerd.other.v1": { "shim": "/opt/shim", "options": { "Root": "/run/o" } },
                "io.containerd.plain.v1": {},
            }
        }))
        .unwrap();
        let shims = c.shim_overrides();
        assert_eq!(shims[RUNC_V2], BERTH_SHIM);
        assert_eq!(shims["io.containerd.runsc.v1"], "containerd-shim-runsc-v1");
        assert_eq!(shims["io.containerd.other.v1"], "/opt/shim");
        assert!(!shims.contains_key("io.containerd.plain.v1"));
        let defaults = c.default_options();
        assert_eq!(defaults[RUNC_V2].binary_name, "crun");
        assert_eq!(defaults["io.containerd.other.v1"].root, "/run/o");
        assert_eq!(defaults.len(), 2);
        let typo = serde_json::from_value::<Config>(serde_json::json!({
            "runtimes": { "io.containerd.runc.v2": { "options": { "Binaryname": "crun" } } }
        }));
        assert!(typo.is_err());
    }

    #[test]
    fn defaults_fill_only_what_the_task_leaves_empty() {
        let defaults = RuncOptions {
            binary_name: "crun".into(),
            root: "/run/crun-root".into(),
            systemd_cgroup: true,
            ..Default::default()
        };
        let decode = |a: Option<prost_types::Any>| {
            let a = a.unwrap();
            assert_eq!(a.type_url, RUNC_OPTIONS_TYPE);
            RuncOptions::decode(&*a.value).unwrap()
        };
        let none = decode(apply_defaults(&defaults, None).unwrap());
        assert_eq!(none, defaults);
        let given = RuncOptions {
            binary_name: "runc".into(),
            ..Default::default()
        };
        let any = prost_types::Any {
            type_url: RUNC_OPTIONS_TYPE.into(),
            value: given.encode_to_vec(),
        };
        let merged = decode(apply_defaults(&defaults, Some(any)).unwrap());
        assert_eq!(merged.binary_name, "runc");
        assert_eq!(merged.root, "/run/crun-root");
        assert!(merged.systemd_cgroup);
        let other = prost_types::Any {
            type_url: "x.Other".into(),
            value: vec![1, 2],
        };
        assert_eq!(
            apply_defaults(&defaults, Some(other.clone())).unwrap(),
            Some(other)
        );
        let broken = prost_types::Any {
            type_url: RUNC_OPTIONS_TYPE.into(),
            value: vec![0xff],
        };
        assert!(apply_defaults(&defaults, Some(broken)).is_err());
    }

    #[test]
    fn timeouts_come_from_the_daemon_config() {
        let d = Timeouts::default();
        assert_eq!(
            (d.load, d.cleanup, d.shutdown, d.state),
            (
                Duration::from_secs(5),
                Duration::from_secs(10),
                Duration::from_secs(3),
                Duration::from_secs(2)
            )
        );
        let config = berth_registry::Config::parse(
            "[timeouts]\n\"io.containerd.timeout.task.state\" = \"500ms\"\n",
            std::path::Path::new("c"),
        )
        .unwrap();
        let t = Timeouts::from_daemon_config(&config);
        assert_eq!(t.state, Duration::from_millis(500));
        assert_eq!(t.load, Duration::from_secs(5));
    }
}
