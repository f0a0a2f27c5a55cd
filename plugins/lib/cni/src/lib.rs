//! CNI: network configs from `conf_dir`, plugins from `bin_dir`, ADD and DEL per pod or
//! container (the CNI spec's protocol as libcni drives it, with go-cni's loopback network). One
//! implementation for the CRI plugin (pods, containerd's `CNI_ARGS`) and for `berth run`
//! (containers, through its OCI hooks).
//!
//! What a pod's ADD used (each network's list, interface, args, capability args) is written to
//! `<cri state>/cni/<sandbox id>.json` before the first plugin runs, and each network's result
//! is added when its ADD succeeds; DEL replays exactly that (prevResult and all) in reverse
//! order and removes the record last. So DEL works after a restart, after a crash between ADD
//! and DEL, after the config changed, and a second DEL is a no-op. Everything here blocks:
//! callers run it on the blocking pool.

pub mod config;
pub mod netns;
pub mod result;

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use self::config::{load_networks, NetworkList};

/// A CNI failure.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// A CNI plugin failed, or a config is invalid or missing.
    #[error("{0}")]
    Network(String),
    /// A file or system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

impl CniError {
    /// An I/O failure on `path`.
    pub fn io(op: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> CniError {
        CniError::Io {
            op,
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// This crate's result.
pub type Result<T> = std::result::Result<T, CniError>;

/// How long one plugin may run before it is killed.
const PLUGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The interface name of the pod's first (default) network, as containerd's.
pub const DEFAULT_IFNAME: &str = "eth0";

/// A host port mapped to a pod port (the `portMappings` capability's entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host port.
    #[serde(rename = "hostPort")]
    pub host_port: i32,
    /// The pod port.
    #[serde(rename = "containerPort")]
    pub container_port: i32,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The host address ("" for all).
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// What a pod's or container's network is set up for.
#[derive(Debug, Clone)]
pub struct Target {
    /// The id (`CNI_CONTAINERID`).
    pub id: String,
    /// The network namespace (`CNI_NETNS`).
    pub netns: PathBuf,
    /// `CNI_ARGS`, in order.
    pub args: Vec<(String, String)>,
    /// Host ports (the `portMappings` capability).
    pub port_mappings: Vec<PortMapping>,
}

impl Target {
    fn capability_args(&self) -> Map<String, Value> {
        let mut caps = Map::new();
        if !self.port_mappings.is_empty() {
            caps.insert(
                "portMappings".into(),
                serde_json::to_value(&self.port_mappings).unwrap_or(Value::Null),
            );
        }
        caps
    }
}

/// Where the plugins and configs are, and where results are kept.
#[derive(Debug, Clone)]
pub struct Cni {
    /// The plugin binaries.
    pub bin_dir: PathBuf,
    /// The network configs.
    pub conf_dir: PathBuf,
    /// How many configs to use.
    pub max_conf_num: usize,
    /// `<cri state>/cni`: one record per pod.
    pub cache_dir: PathBuf,
}

/// One network of a pod as ADD ran it (the cache entry).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Attachment {
    /// The list, as a conflist document.
    config: Value,
    #[serde(rename = "ifName")]
    ifname: String,
    #[serde(rename = "cniArgs")]
    args: Vec<(String, String)>,
    #[serde(rename = "capabilityArgs")]
    capability_args: Map<String, Value>,
    /// The last plugin's result; `None` until ADD of the whole list succeeded.
    result: Option<Value>,
}

/// A pod's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    kind: String,
    #[serde(rename = "containerId")]
    id: String,
    attachments: Vec<Attachment>,
}

const RECORD_KIND: &str = "berthCniRecordV1";

/// What ADD gave the pod.
#[derive(Debug, Clone, Default)]
pub struct SetupResult {
    /// The addresses on the default interface, in the plugin's order.
    pub ips: Vec<IpAddr>,
    /// The default network's result, as its last plugin printed it.
    pub result: Option<Value>,
}

impl Cni {
    /// Whether a network config is there (the NetworkReady condition).
    pub fn status(&self) -> Result<()> {
        load_networks(&self.conf_dir, self.max_conf_num).map(|_| ())
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.cache_dir.join(format!("{id}.json"))
    }

    /// Whether ADD started for pod `id` and DEL has not finished.
    pub fn has_record(&self, id: &str) -> bool {
        self.record_path(id).exists()
    }

    /// The ids of every pod with a record (for recovery).
    pub fn recorded_ids(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.cache_dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".json").map(str::to_owned)
            })
            .collect()
    }

    /// ADD: the loopback network, then each configured network (the first on `eth0`, the
    /// others `eth1`...). On failure the networks already added stay recorded: the caller
    /// undoes them with [`Cni::teardown`].
    pub fn setup(&self, pod: &Target) -> Result<SetupResult> {
        let networks = load_networks(&self.conf_dir, self.max_conf_num)?;
        self.setup_networks(pod, networks)
    }

    /// ADD as [`Cni::setup`] does, of the given network lists instead of those in `conf_dir`.
    pub fn setup_networks(&self, pod: &Target, networks: Vec<NetworkList>) -> Result<SetupResult> {
        let args = pod.args.clone();
        let caps = pod.capability_args();
        let mut lists = vec![(NetworkList::loopback(), "lo".to_owned())];
        for (i, list) in networks.into_iter().enumerate() {
            lists.push((list, format!("eth{i}")));
        }
        let mut record = Record {
            kind: RECORD_KIND.into(),
            id: pod.id.clone(),
            attachments: lists
                .iter()
                .map(|(list, ifname)| Attachment {
                    config: list.to_json(),
                    ifname: ifname.clone(),
                    args: args.clone(),
                    capability_args: caps.clone(),
                    result: None,
                })
                .collect(),
        };
        self.write_record(&record)?;
        let mut out = SetupResult::default();
        for (i, (list, ifname)) in lists.iter().enumerate() {
            let invocation = Invocation {
                command: "ADD",
                id: &pod.id,
                netns: &pod.netns.display().to_string(),
                ifname,
                args: &args,
                capability_args: &caps,
            };
            let result = self.add_list(list, &invocation)?;
            if ifname == DEFAULT_IFNAME {
                out.ips = result::pod_ips(&result, ifname);
                out.result = Some(result.clone());
            }
            record.attachments[i].result = Some(result);
            self.write_record(&record)?;
        }
        Ok(out)
    }

    /// DEL of everything the record of pod `id` says was (or may have been) added, in reverse
    /// order; `netns` is `None` when the namespace is gone (plugins then only release what they
    /// hold outside it). No record: nothing to do.
    pub fn teardown(&self, id: &str, netns: Option<&Path>) -> Result<()> {
        let path = self.record_path(id);
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(CniError::io("read CNI record", &path, e)),
        };
        let record: Record = serde_json::from_slice(&data).map_err(|e| {
            CniError::Network(format!("CNI record {} is unreadable: {e}", path.display()))
        })?;
        let netns = netns.map(|p| p.display().to_string()).unwrap_or_default();
        for att in record.attachments.iter().rev() {
            let data = serde_json::to_vec(&att.config).unwrap_or_default();
            let list = NetworkList::from_conflist(&data, &path)?;
            if list.plugins.is_empty() {
                continue;
            }
            let invocation = Invocation {
                command: "DEL",
                id: &record.id,
                netns: &netns,
                ifname: &att.ifname,
                args: &att.args,
                capability_args: &att.capability_args,
            };
            // Cached results on DEL came with CNI 0.4.0.
            let prev = att
                .result
                .as_ref()
                .filter(|_| version_at_least(&list.cni_version, (0, 4, 0)));
            for plugin in list.plugins.iter().rev() {
                // A plugin that cannot be found never ran (or cannot ever be asked to undo
                // what it did): retrying would keep the pod from going away.
                if self.find_plugin(plugin_type(plugin)).is_none() {
                    tracing::warn!(
                        id,
                        plugin = plugin_type(plugin),
                        "CNI plugin not found for DEL, skipped"
                    );
                    continue;
                }
                self.exec(&list, plugin, prev, &invocation)?;
            }
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::io("remove CNI record", &path, e)),
        }
    }

    /// The default network's result recorded for `id` (`None`: no record, or ADD did not
    /// finish).
    pub fn recorded_result(&self, id: &str) -> Option<Value> {
        let data = std::fs::read(self.record_path(id)).ok()?;
        let record: Record = serde_json::from_slice(&data).ok()?;
        record
            .attachments
            .into_iter()
            .find(|a| a.ifname == DEFAULT_IFNAME)
            .and_then(|a| a.result)
    }

    fn add_list(&self, list: &NetworkList, inv: &Invocation<'_>) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for plugin in &list.plugins {
            let out = self.exec(list, plugin, prev.as_ref(), inv)?;
            if !out.is_empty() {
                let result: Value = serde_json::from_slice(&out).map_err(|e| {
                    CniError::Network(format!(
                        "plugin type={:?} (add) printed no result: {e}",
                        plugin_type(plugin)
                    ))
                })?;
                prev = Some(result);
            }
        }
        Ok(prev.unwrap_or_else(|| Value::Object(Map::new())))
    }

    /// Runs one plugin; its stdout on success.
    fn exec(
        &self,
        list: &NetworkList,
        plugin: &Map<String, Value>,
        prev: Option<&Value>,
        inv: &Invocation<'_>,
    ) -> Result<Vec<u8>> {
        let kind = plugin_type(plugin);
        let op = inv.command.to_lowercase();
        let binary = self.find_plugin(kind).ok_or_else(|| {
            CniError::Network(format!(
                "plugin type={kind:?} failed ({op}): failed to find plugin {kind:?} in path [{}]",
                self.bin_dir.display()
            ))
        })?;
        let stdin = plugin_config(list, plugin, prev, inv.capability_args);
        let args = inv
            .args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        tracing::debug!(
            plugin = kind,
            command = inv.command,
            id = inv.id,
            ifname = inv.ifname,
            "cni"
        );
        let mut child = Command::new(&binary)
            .env("CNI_COMMAND", inv.command)
            .env("CNI_CONTAINERID", inv.id)
            .env("CNI_NETNS", inv.netns)
            .env("CNI_IFNAME", inv.ifname)
            .env("CNI_ARGS", args)
            .env("CNI_PATH", &self.bin_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CniError::io("run CNI plugin", &binary, e))?;
        if let Some(mut input) = child.stdin.take() {
            // A plugin that exits without reading its config fails below with its own message.
            let _ = input.write_all(&stdin);
        }
        // A watchdog kills a plugin that hangs: a pod must not wait on it forever.
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            let hung = matches!(
                finished.recv_timeout(PLUGIN_TIMEOUT),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            );
            if hung {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            hung
        });
        let output = child.wait_with_output();
        let _ = done.send(());
        if watchdog.join().unwrap_or(false) {
            return Err(CniError::Network(format!(
                "plugin type={kind:?} name={:?} failed ({op}): killed after {PLUGIN_TIMEOUT:?}",
                list.name
            )));
        }
        let output = output.map_err(|e| CniError::io("wait for CNI plugin", &binary, e))?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        let why = result::error_message(&output.stdout).unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            if text.is_empty() {
                format!("{}", output.status)
            } else {
                text
            }
        });
        Err(CniError::Network(format!(
            "plugin type={kind:?} name={:?} failed ({op}): {why}",
            list.name
        )))
    }

    fn find_plugin(&self, kind: &str) -> Option<PathBuf> {
        if kind.is_empty() || kind.contains('/') {
            return None;
        }
        let path = self.bin_dir.join(kind);
        path.is_file().then_some(path)
    }

    fn write_record(&self, record: &Record) -> Result<()> {
        std::fs::create_dir_all(&self.cache_dir)
            .map_err(|e| CniError::io("create CNI record dir", &self.cache_dir, e))?;
        let path = self.record_path(&record.id);
        let tmp = self.cache_dir.join(format!(".{}.tmp", record.id));
        let data = serde_json::to_vec(record)
            .map_err(|e| CniError::Internal(format!("encode CNI record: {e}")))?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| CniError::io("write CNI record", &path, e))
    }
}

struct Invocation<'a> {
    command: &'static str,
    id: &'a str,
    netns: &'a str,
    ifname: &'a str,
    args: &'a [(String, String)],
    capability_args: &'a Map<String, Value>,
}

fn plugin_type(plugin: &Map<String, Value>) -> &str {
    plugin
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// One plugin's stdin (libcni `buildOneConfig`): its config with the list's `name` and
/// `cniVersion`, the previous result, and `runtimeConfig` holding the capability arguments the
/// plugin declares in `capabilities`.
fn plugin_config(
    list: &NetworkList,
    plugin: &Map<String, Value>,
    prev: Option<&Value>,
    caps: &Map<String, Value>,
) -> Vec<u8> {
    let mut conf = plugin.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    let declared = plugin.get("capabilities").and_then(Value::as_object);
    let runtime: Map<String, Value> = caps
        .iter()
        .filter(|(k, _)| {
            declared
                .and_then(|d| d.get(*k))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    serde_json::to_vec(&conf).unwrap_or_default()
}

/// Whether `version` (`major.minor.patch`, missing parts 0) is at least `min`.
fn version_at_least(version: &str, min: (u64, u64, u64)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let v = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    v >= min
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A fake plugin: logs its command, env and stdin to `<log>/<type>.log`, prints a result
    /// whose address depends on the plugin, or fails when the config says `"fail": true`.
    fn fake_plugin(bin: &Path, name: &str, log: &Path) {
        let script = format!(
            r#"#!/bin/sh
input=$(cat)
{{
  echo "CMD=$CNI_COMMAND ID=$CNI_CONTAINERID NETNS=$CNI_NETNS IF=$CNI_IFNAME ARGS=$CNI_ARGS PATH=$CNI_PATH"
  echo "$input"
}} >> {log}/{name}.log
case "$input" in
  *'"fail":true'*)
    echo '{{"cniVersion":"1.0.0","code":11,"msg":"failed on purpose","details":"{name}"}}'
    exit 1;;
esac
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{{"cniVersion":"1.0.0","interfaces":[{{"name":"'$CNI_IFNAME'","sandbox":"'$CNI_NETNS'"}}],"ips":[{{"address":"10.9.0.{n}/24","interface":0}}]}}'
fi
"#,
            log = log.display(),
            n = name.len(),
        );
        let path = bin.join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        cni: Cni,
        log: PathBuf,
    }

    fn fixture(conflist: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (bin, conf, log) = (
            dir.path().join("bin"),
            dir.path().join("conf"),
            dir.path().join("log"),
        );
        for d in [&bin, &conf, &log] {
            std::fs::create_dir_all(d).unwrap();
        }
        for name in ["loopback", "first", "second"] {
            fake_plugin(&bin, name, &log);
        }
        std::fs::write(conf.join("10-test.conflist"), conflist).unwrap();
        let cni = Cni {
            bin_dir: bin,
            conf_dir: conf,
            max_conf_num: 1,
            cache_dir: dir.path().join("state/cni"),
        };
        Fixture {
            _dir: dir,
            cni,
            log,
        }
    }

    fn pod() -> Target {
        Target {
            id: "abc".into(),
            netns: "/run/netns/x".into(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAMESPACE".into(), "ns".into()),
                ("K8S_POD_NAME".into(), "p".into()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), "abc".into()),
                ("K8S_POD_UID".into(), "u1".into()),
            ],
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
        }
    }

    /// The JSON documents a fake plugin received, with the env line before each.
    fn calls(log: &Path, name: &str) -> Vec<(String, Value)> {
        let text = std::fs::read_to_string(log.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks(2)
            .map(|c| (c[0].to_owned(), serde_json::from_str(c[1]).unwrap()))
            .collect()
    }

    const LIST: &str = r#"{"cniVersion":"1.0.0","name":"net","plugins":[
        {"type":"first","bridge":"b0"},
        {"type":"second","capabilities":{"portMappings":true}}]}"#;

    #[test]
    fn add_chains_results_and_del_replays_in_reverse() {
        let f = fixture(LIST);
        let out = f.cni.setup(&pod()).unwrap();
        // The last plugin's result is the list's: `second` has 6 letters.
        assert_eq!(out.ips, vec!["10.9.0.6".parse::<IpAddr>().unwrap()]);
        let first = calls(&f.log, "first");
        assert_eq!(first.len(), 1);
        let (env, conf) = &first[0];
        assert!(
            env.contains("CMD=ADD ID=abc NETNS=/run/netns/x IF=eth0"),
            "{env}"
        );
        assert!(
            env.contains("ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u1"),
            "{env}"
        );
        assert_eq!(conf["name"], "net");
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["bridge"], "b0");
        assert!(conf.get("prevResult").is_none());
        assert!(
            conf.get("runtimeConfig").is_none(),
            "first declares no capability"
        );
        let second = calls(&f.log, "second");
        let (_, conf) = &second[0];
        assert_eq!(conf["prevResult"]["ips"][0]["address"], "10.9.0.5/24");
        assert_eq!(conf["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        // The loopback network ran on lo first.
        let lo = calls(&f.log, "loopback");
        assert!(lo[0].0.contains("IF=lo"), "{}", lo[0].0);
        assert!(f.cni.has_record("abc"));

        // DEL runs second, then first, then loopback, each with the cached result.
        f.cni.teardown("abc", None).unwrap();
        let second = calls(&f.log, "second");
        let (env, conf) = &second[1];
        assert!(env.contains("CMD=DEL ID=abc NETNS= IF=eth0"), "{env}");
        assert_eq!(conf["prevResult"]["ips"][0]["address"], "10.9.0.6/24");
        assert_eq!(
            conf["runtimeConfig"]["portMappings"][0]["containerPort"],
            80
        );
        let first = calls(&f.log, "first");
        assert_eq!(first[1].1["prevResult"]["ips"][0]["address"], "10.9.0.6/24");
        assert_eq!(calls(&f.log, "loopback").len(), 2);
        assert!(!f.cni.has_record("abc"));

        // A second DEL does nothing.
        f.cni.teardown("abc", None).unwrap();
        assert_eq!(calls(&f.log, "first").len(), 2);
    }

    #[test]
    fn del_replays_the_recorded_config_after_it_changed() {
        let f = fixture(LIST);
        f.cni.setup(&pod()).unwrap();
        std::fs::remove_file(f.cni.conf_dir.join("10-test.conflist")).unwrap();
        f.cni
            .teardown("abc", Some(Path::new("/run/netns/x")))
            .unwrap();
        assert_eq!(calls(&f.log, "first").len(), 2);
    }

    #[test]
    fn plugin_errors_are_reported_and_recorded_for_del() {
        let f = fixture(
            r#"{"cniVersion":"1.0.0","name":"net","plugins":[
            {"type":"first"},{"type":"second","fail":true}]}"#,
        );
        let err = f.cni.setup(&pod()).unwrap_err().to_string();
        assert!(err.contains("failed on purpose; second (code 11)"), "{err}");
        assert!(err.contains("type=\"second\""), "{err}");
        // The half-done ADD is recorded; DEL then runs (and here fails again on `second`).
        assert!(f.cni.has_record("abc"));
    }

    #[test]
    fn a_missing_plugin_is_named() {
        let f = fixture(r#"{"cniVersion":"0.4.0","name":"net","plugins":[{"type":"nosuch"}]}"#);
        let err = f.cni.setup(&pod()).unwrap_err().to_string();
        assert!(err.contains("failed to find plugin \"nosuch\""), "{err}");
        // DEL of the half-made pod: loopback gets its DEL, `nosuch` is skipped.
        f.cni.teardown("abc", None).unwrap();
        assert_eq!(calls(&f.log, "loopback").len(), 2);
        assert!(!f.cni.has_record("abc"));
    }

    #[test]
    fn versions_compare() {
        assert!(version_at_least("0.4.0", (0, 4, 0)));
        assert!(version_at_least("1.0.0", (0, 4, 0)));
        assert!(!version_at_least("0.3.1", (0, 4, 0)));
        assert!(!version_at_least("", (0, 4, 0)));
    }
}
