//! The daemon's TOML configuration (containerd's `services/server/config/config.go` shape). The
//! top level is strict: an unknown key is an error naming it, and each of containerd's top-level
//! keys is either honoured or refused by name as not supported. Plugin sections stay raw TOML
//! until their plugin loads and decodes them into its own `Config`. `imports` merges further
//! files over the main one, as containerd's `LoadConfig` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::{format_go_duration, parse_go_duration};
use crate::errdefs::{Classify, ErrorKind};

/// Default root for persistent data.
pub const DEFAULT_ROOT: &str = "/var/lib/berth";
/// Default root for runtime state.
pub const DEFAULT_STATE: &str = "/run/berth";
/// Default gRPC socket.
pub const DEFAULT_ADDRESS: &str = "/run/berth/berthd.sock";

/// `[timeouts]` key: how long a restarted daemon waits for a shim to answer.
pub const TIMEOUT_SHIM_LOAD: &str = "io.containerd.timeout.shim.load";
/// `[timeouts]` key: how long a shim's `delete` action may take.
pub const TIMEOUT_SHIM_CLEANUP: &str = "io.containerd.timeout.shim.cleanup";
/// `[timeouts]` key: how long a shim may take to answer `Shutdown`.
pub const TIMEOUT_SHIM_SHUTDOWN: &str = "io.containerd.timeout.shim.shutdown";
/// `[timeouts]` key: how long a shim may take to answer `State`.
pub const TIMEOUT_TASK_STATE: &str = "io.containerd.timeout.task.state";
/// `[timeouts]` key of containerd's bolt database open; Berth's metadata store never waits, so
/// only `0s` (wait forever, containerd's default) is accepted.
pub const TIMEOUT_BOLT_OPEN: &str = "io.containerd.timeout.bolt.open";

/// The timeouts Berth honours and their defaults: containerd's, except the shim cleanup, which
/// gives runc's forced delete of a live container time to finish.
pub const DEFAULT_TIMEOUTS: [(&str, Duration); 5] = [
    (TIMEOUT_BOLT_OPEN, Duration::ZERO),
    (TIMEOUT_SHIM_CLEANUP, Duration::from_secs(10)),
    (TIMEOUT_SHIM_LOAD, Duration::from_secs(5)),
    (TIMEOUT_SHIM_SHUTDOWN, Duration::from_secs(3)),
    (TIMEOUT_TASK_STATE, Duration::from_secs(2)),
];

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("read config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid for this schema.
    #[error("parse config {path}: {source}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The TOML error, naming the key.
        source: toml::de::Error,
    },
    /// A plugin's section did not decode into its `Config`.
    #[error("config section [plugins.\"{uri}\"]: {source}")]
    PluginSection {
        /// The plugin URI.
        uri: String,
        /// The TOML error, naming the key.
        source: toml::de::Error,
    },
    /// A value is present but not acceptable.
    #[error("config: {0}")]
    Invalid(String),
    /// A key containerd knows and Berth deliberately does not support.
    #[error("config: {key} is not supported by berthd: {reason}")]
    Unsupported {
        /// The key, as written in the file.
        key: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// An `imports` entry could not be resolved.
    #[error("config {path}: imports {import:?}: {reason}")]
    Import {
        /// The file that imports it.
        path: PathBuf,
        /// The entry as written.
        import: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Classify for ConfigError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

/// The whole daemon configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Schema version; containerd 1.6 configs say 2.
    pub version: u32,
    /// Persistent data root.
    pub root: PathBuf,
    /// Runtime state root.
    pub state: PathBuf,
    /// Plugin URIs (`<type>.<id>`) never loaded.
    pub disabled_plugins: Vec<String>,
    /// Plugin URIs whose failure stops start-up.
    pub required_plugins: Vec<String>,
    /// The gRPC listener.
    pub grpc: GrpcConfig,
    /// The ttrpc listener (shims forward events to it).
    pub ttrpc: TtrpcConfig,
    /// Logging.
    pub debug: DebugConfig,
    /// Per-plugin sections keyed by plugin URI, decoded when the plugin loads.
    pub plugins: BTreeMap<String, toml::Value>,
    /// External plugins served over their own sockets.
    pub proxy_plugins: BTreeMap<String, ProxyPlugin>,
    /// The daemon's own `oom_score_adj` (-1000..=1000); 0 leaves it alone.
    pub oom_score: i32,
    /// The cgroup the daemon, and so every shim it starts, runs in.
    pub cgroup: CgroupConfig,
    /// Timeouts by containerd's key (`io.containerd.timeout.*`), as Go duration strings.
    pub timeouts: BTreeMap<String, String>,
    /// Files merged over this one, in order (globs with `*` in the file name allowed; relative
    /// paths are relative to the importing file). After loading: every file loaded.
    pub imports: Vec<String>,
    /// containerd's external layer processors: not supported (refused when any is set).
    pub stream_processors: BTreeMap<String, toml::Value>,
    /// containerd's temporary dir: not supported (refused when set).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub temp: String,
    /// containerd's Go plugin dir: not supported (refused when set).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub plugin_dir: String,
    /// The Prometheus metrics listener (containerd's `[metrics]`).
    pub metrics: MetricsConfig,
}

/// `[metrics]`: containerd's `MetricsConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A TCP `host:port` serving `GET /v1/metrics` in the Prometheus text format; empty means
    /// no listener (and nothing added to the gRPC request path).
    pub address: String,
    /// Whether each gRPC call's duration goes into the `grpc_server_handling_seconds`
    /// histograms (grpc-go-prometheus's `EnableHandlingTimeHistogram`).
    pub grpc_histogram: bool,
}

/// `[cgroup]`: containerd's `CgroupConfig`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CgroupConfig {
    /// A cgroup path (`/berth` or `berth/daemon`, below the root of every hierarchy) that
    /// berthd moves itself into at start; empty leaves it where it was started.
    pub path: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: 2,
            root: DEFAULT_ROOT.into(),
            state: DEFAULT_STATE.into(),
            disabled_plugins: Vec::new(),
            required_plugins: Vec::new(),
            grpc: GrpcConfig::default(),
            ttrpc: TtrpcConfig::default(),
            debug: DebugConfig::default(),
            plugins: BTreeMap::new(),
            proxy_plugins: BTreeMap::new(),
            oom_score: 0,
            cgroup: CgroupConfig::default(),
            timeouts: DEFAULT_TIMEOUTS
                .iter()
                .map(|(k, d)| ((*k).to_owned(), format_go_duration(*d)))
                .collect(),
            imports: Vec::new(),
            stream_processors: BTreeMap::new(),
            temp: String::new(),
            plugin_dir: String::new(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// The gRPC listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Unix socket path.
    pub address: PathBuf,
    /// Owner uid of the socket.
    pub uid: u32,
    /// Owner gid of the socket.
    pub gid: u32,
    /// A TCP `host:port` serving the same API as the socket; empty means none (containerd's
    /// `tcp_address`).
    pub tcp_address: String,
    /// PEM CA bundle: when set, TCP clients must present a certificate it signed.
    pub tcp_tls_ca: String,
    /// PEM server certificate chain: with `tcp_tls_key`, the TCP listener speaks TLS.
    pub tcp_tls_cert: String,
    /// PEM private key of `tcp_tls_cert`.
    pub tcp_tls_key: String,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            address: DEFAULT_ADDRESS.into(),
            uid: 0,
            gid: 0,
            tcp_address: String::new(),
            tcp_tls_ca: String::new(),
            tcp_tls_cert: String::new(),
            tcp_tls_key: String::new(),
        }
    }
}

/// The ttrpc listener.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TtrpcConfig {
    /// Unix socket path; empty means `<grpc.address>.ttrpc`.
    pub address: PathBuf,
}

/// Logging options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// Log level (`trace`, `debug`, `info`, `warn`, `error`) or a tracing filter directive.
    pub level: String,
    /// Log format on stderr: `text` (also when empty) or `json` (one object a line), as
    /// containerd's `[debug] format`; berthd refuses any other value at start.
    pub format: String,
}

impl Default for DebugConfig {
    fn default() -> Self {
        DebugConfig {
            level: "info".into(),
            format: String::new(),
        }
    }
}

/// An external plugin reached over a unix socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyPlugin {
    /// `snapshot` or `content`.
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The unix socket serving the plugin's gRPC API.
    pub address: PathBuf,
}

/// Top-level maps whose entries an imported file replaces one by one (containerd
/// `mergeConfig`); every other table merges key by key.
const REPLACED_BY_ENTRY: [&str; 4] = ["plugins", "proxy_plugins", "stream_processors", "timeouts"];

/// At most this many files are loaded through `imports`, so a glob cannot pull in a tree.
const MAX_IMPORTS: usize = 64;

impl Config {
    /// Reads a config file and the files it imports, each merged over the ones before it
    /// (containerd `LoadConfig`): a non-zero scalar replaces, an array appends, a plugin
    /// section, proxy plugin or timeout replaces its entry, other tables merge key by key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut merged = toml::Table::new();
        let mut loaded: Vec<PathBuf> = Vec::new();
        // Absolute, so that relative imports and the loaded-once check see one spelling.
        let start = std::path::absolute(path).map_or_else(|_| path.to_path_buf(), |p| clean(&p));
        let mut pending = vec![start];
        while !pending.is_empty() {
            let file = pending.remove(0);
            // A file already loaded is skipped: imports may be circular.
            if loaded.contains(&file) {
                continue;
            }
            if loaded.len() == MAX_IMPORTS {
                return Err(ConfigError::Import {
                    path: path.to_owned(),
                    import: file.display().to_string(),
                    reason: format!("more than {MAX_IMPORTS} files"),
                });
            }
            let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
                path: file.clone(),
                source,
            })?;
            // Each file must be a valid config on its own, so errors name the file.
            let single = Config::parse_unchecked(&text, &file)?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: file.clone(),
                    source,
                })?;
            merge_table(&mut merged, table, true);
            for import in &single.imports {
                pending.extend(resolve_import(&file, import)?);
            }
            loaded.push(file);
        }
        let mut config: Config =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source,
                })?;
        config.imports = loaded.iter().map(|p| p.display().to_string()).collect();
        config.check()?;
        Ok(config)
    }

    /// Parses config text; `origin` names it in errors. `imports` are not followed (see
    /// [`Config::load`]).
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config = Config::parse_unchecked(text, origin)?;
        config.check()?;
        Ok(config)
    }

    fn parse_unchecked(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_owned(),
            source,
        })
    }

    /// The timeout under containerd's `key` (`io.containerd.timeout.*`): the configured one,
    /// else Berth's default; `None` for a key Berth does not know.
    pub fn timeout(&self, key: &str) -> Option<Duration> {
        self.timeouts
            .get(key)
            .and_then(|v| parse_go_duration(v))
            .or_else(|| {
                DEFAULT_TIMEOUTS
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, d)| *d)
            })
    }

    /// Refuses, by name, each containerd key that Berth does not support.
    fn check_unsupported(&self) -> Result<(), ConfigError> {
        let unsupported = |key: &str, reason: &str| {
            Err(ConfigError::Unsupported {
                key: key.to_owned(),
                reason: reason.to_owned(),
            })
        };
        if let Some(name) = self.stream_processors.keys().next() {
            return unsupported(
                &format!("stream_processors.{name:?}"),
                "layers are unpacked in process; external stream processors (e.g. ocicrypt's \
                 ctd-decoder) are not run",
            );
        }
        if !self.temp.is_empty() {
            return unsupported(
                "temp",
                "berthd keeps its temporary files under root and state",
            );
        }
        if !self.plugin_dir.is_empty() {
            return unsupported(
                "plugin_dir",
                "Go plugins cannot be loaded; use proxy_plugins",
            );
        }
        if !(-1000..=1000).contains(&self.oom_score) {
            return Err(ConfigError::Invalid(format!(
                "oom_score {} is out of range (-1000 to 1000)",
                self.oom_score
            )));
        }
        for (key, value) in &self.timeouts {
            let Some(d) = parse_go_duration(value) else {
                return Err(ConfigError::Invalid(format!(
                    "timeouts.{key:?}: {value:?} is not a duration (like \"5s\" or \"1m30s\")"
                )));
            };
            match key.as_str() {
                TIMEOUT_BOLT_OPEN if !d.is_zero() => {
                    return unsupported(
                        &format!("timeouts.{key:?}"),
                        "the metadata store is not bolt and never waits to open; only \"0s\"",
                    );
                }
                _ if DEFAULT_TIMEOUTS.iter().any(|(k, _)| k == key) => {}
                _ => {
                    let known: Vec<&str> = DEFAULT_TIMEOUTS.iter().map(|(k, _)| *k).collect();
                    return unsupported(
                        &format!("timeouts.{key:?}"),
                        &format!("the timeouts berthd has are {}", known.join(", ")),
                    );
                }
            }
        }
        let cgroup = &self.cgroup.path;
        if cgroup.split('/').any(|part| part == "..") || cgroup.contains('\0') {
            return Err(ConfigError::Invalid(format!(
                "cgroup.path {cgroup:?} must not contain \"..\""
            )));
        }
        Ok(())
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.check_unsupported()?;
        if self.version != 2 {
            return Err(ConfigError::Invalid(format!(
                "unsupported config version {} (expected 2)",
                self.version
            )));
        }
        for uri in self.disabled_plugins.iter().chain(&self.required_plugins) {
            // A plugin URI is `<type>.<id>`, and every type has at least three dots.
            if uri.split('.').count() < 4 {
                return Err(ConfigError::Invalid(format!(
                    "invalid plugin URI {uri:?}: expected <type>.<id>"
                )));
            }
        }
        if !self.root.is_absolute() || !self.state.is_absolute() {
            return Err(ConfigError::Invalid(
                "root and state must be absolute paths".into(),
            ));
        }
        Ok(())
    }

    /// The ttrpc address, defaulted from the gRPC one.
    pub fn ttrpc_address(&self) -> PathBuf {
        if self.ttrpc.address.as_os_str().is_empty() {
            let mut s = self.grpc.address.clone().into_os_string();
            s.push(".ttrpc");
            s.into()
        } else {
            self.ttrpc.address.clone()
        }
    }

    /// Renders the config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config types always serialize")
    }
}

/// True for the values containerd's merge treats as unset: `""`, `0`, `false`, empty arrays
/// and tables.
fn is_zero(v: &toml::Value) -> bool {
    match v {
        toml::Value::String(s) => s.is_empty(),
        toml::Value::Integer(i) => *i == 0,
        toml::Value::Float(f) => *f == 0.0,
        toml::Value::Boolean(b) => !b,
        toml::Value::Array(a) => a.is_empty(),
        toml::Value::Table(t) => t.is_empty(),
        toml::Value::Datetime(_) => false,
    }
}

/// Merges `from` over `to` (containerd `mergeConfig`: mergo with override and appended
/// slices, then whole entries of the plugin, proxy, stream processor and timeout maps).
fn merge_table(to: &mut toml::Table, from: toml::Table, top: bool) {
    for (key, value) in from {
        let by_entry = top && REPLACED_BY_ENTRY.contains(&key.as_str());
        match (to.get_mut(&key), value) {
            (Some(toml::Value::Table(old)), toml::Value::Table(new)) if by_entry => {
                old.extend(new);
            }
            (Some(toml::Value::Table(old)), toml::Value::Table(new)) => {
                merge_table(old, new, false);
            }
            (Some(toml::Value::Array(old)), toml::Value::Array(new)) => old.extend(new),
            (Some(_), new) if is_zero(&new) => {}
            (_, new) => {
                to.insert(key, new);
            }
        }
    }
}

/// The files an `imports` entry of `parent` names: a path relative to `parent`'s directory
/// unless absolute; `*` and `?` match in the file name (not in directories), sorted.
fn resolve_import(parent: &Path, import: &str) -> Result<Vec<PathBuf>, ConfigError> {
    let err = |reason: &str| ConfigError::Import {
        path: parent.to_owned(),
        import: import.to_owned(),
        reason: reason.to_owned(),
    };
    let path = Path::new(import);
    let path = clean(&if path.is_absolute() {
        path.to_path_buf()
    } else {
        parent.parent().unwrap_or(Path::new("/")).join(path)
    });
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| err("not a file name"))?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err(err("wildcards are supported in the file name only"));
    }
    if !name.contains(['*', '?']) {
        return Ok(vec![path]);
    }
    // No match is no file, as with Go's `filepath.Glob`.
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| wildcard(name, n)))
        .map(|e| e.path())
        .collect();
    found.sort();
    Ok(found)
}

/// `path` with `.` and `..` resolved lexically (Go's `filepath.Clean`), so that a file
/// imported by two spellings is loaded once.
fn clean(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Shell-style match of `name` against `pattern` with `*` (any run) and `?` (one character).
fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Hidden files match only a pattern that starts with a dot, as with a shell glob.
    if n.first() == Some(&'.') && p.first() != Some(&'.') {
        return false;
    }
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip() {
        let text = Config::default().to_toml();
        let back = Config::parse(&text, Path::new("x")).unwrap();
        assert_eq!(back.root, PathBuf::from(DEFAULT_ROOT));
        assert_eq!(back.grpc.address, PathBuf::from(DEFAULT_ADDRESS));
        assert_eq!(
            back.ttrpc_address(),
            PathBuf::from("/run/berth/berthd.sock.ttrpc")
        );
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let err = Config::parse("version = 2\nbogus = 1\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn plugin_sections_stay_raw() {
        let c = Config::parse(
            "version = 2\n[plugins.\"io.containerd.grpc.v1.x\"]\nanything = 1\n",
            Path::new("c"),
        )
        .unwrap();
        assert!(c.plugins.contains_key("io.containerd.grpc.v1.x"));
    }

    #[test]
    fn containerd_keys_are_honoured_or_refused_by_name() {
        let c = Config::parse(
            "version = 2\noom_score = -500\n[cgroup]\npath = \"/berth\"\n\
             [timeouts]\n\"io.containerd.timeout.shim.load\" = \"1m30s\"\n\
             \"io.containerd.timeout.bolt.open\" = \"0s\"\n[stream_processors]\n",
            Path::new("c"),
        )
        .unwrap();
        assert_eq!((c.oom_score, c.cgroup.path.as_str()), (-500, "/berth"));
        assert_eq!(c.timeout(TIMEOUT_SHIM_LOAD), Some(Duration::from_secs(90)));
        // Keys not set keep Berth's defaults.
        assert_eq!(c.timeout(TIMEOUT_TASK_STATE), Some(Duration::from_secs(2)));
        assert_eq!(c.timeout("io.containerd.timeout.nope"), None);

        for (text, needle) in [
            (
                "[stream_processors.\"x\"]\naccepts = [\"a\"]\npath = \"p\"\n",
                "stream_processors.\"x\" is not supported",
            ),
            (
                "[timeouts]\n\"io.containerd.timeout.nope\" = \"1s\"\n",
                "timeouts.\"io.containerd.timeout.nope\" is not supported",
            ),
            (
                "[timeouts]\n\"io.containerd.timeout.bolt.open\" = \"1s\"\n",
                "bolt.open\" is not supported",
            ),
            (
                "[timeouts]\n\"io.containerd.timeout.shim.load\" = \"soon\"\n",
                "\"soon\" is not a duration",
            ),
            ("temp = \"/tmp/x\"\n", "temp is not supported"),
            ("plugin_dir = \"/p\"\n", "plugin_dir is not supported"),
            ("[metrics]\nport = 1338\n", "unknown field `port`"),
            ("oom_score = -1001\n", "out of range"),
            ("[cgroup]\npath = \"/a/../b\"\n", "must not contain"),
            ("[cgroup]\nweight = 1\n", "unknown field `weight`"),
        ] {
            let err = Config::parse(text, Path::new("c")).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        // containerd's default [metrics] section is accepted, and a listener is taken as set.
        let c = Config::parse(
            "[metrics]\naddress = \"\"\ngrpc_histogram = false\n",
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(c.metrics, MetricsConfig::default());
        let c = Config::parse(
            "[metrics]\naddress = \"127.0.0.1:1338\"\ngrpc_histogram = true\n",
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(c.metrics.address, "127.0.0.1:1338");
        assert!(c.metrics.grpc_histogram);
    }

    #[test]
    fn imports_merge_over_the_main_file() {
        let d = tempfile::tempdir().unwrap();
        let main = d.path().join("config.toml");
        std::fs::create_dir(d.path().join("conf.d")).unwrap();
        std::fs::write(
            &main,
            "version = 2\noom_score = 3\nimports = [\"conf.d/*.toml\", \"/nonexistent/*.toml\"]\n\
             disabled_plugins = [\"io.containerd.a.v1.a\"]\n\
             [grpc]\nuid = 5\ngid = 6\n\
             [plugins.\"io.containerd.x.v1.x\"]\nkeep = 1\n\
             [plugins.\"io.containerd.y.v1.y\"]\nreplaced = 1\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("conf.d/10-a.toml"),
            "version = 2\noom_score = 0\nroot = \"/var/lib/other\"\n\
             disabled_plugins = [\"io.containerd.b.v1.b\"]\nimports = [\"../config.toml\"]\n\
             [grpc]\ngid = 7\n[plugins.\"io.containerd.y.v1.y\"]\nnew = 2\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("conf.d/20-b.toml"),
            "[debug]\nlevel = \"debug\"\n",
        )
        .unwrap();
        std::fs::write(d.path().join("conf.d/ignored.txt"), "bogus = 1\n").unwrap();
        let c = Config::load(&main).unwrap();
        // A zero value does not override; a non-zero one does; arrays append.
        assert_eq!(c.oom_score, 3);
        assert_eq!(c.root, PathBuf::from("/var/lib/other"));
        assert_eq!(c.debug.level, "debug");
        assert_eq!((c.grpc.uid, c.grpc.gid), (5, 7));
        assert_eq!(
            c.disabled_plugins,
            ["io.containerd.a.v1.a", "io.containerd.b.v1.b"]
        );
        // Plugin sections are replaced whole.
        assert!(c.plugins["io.containerd.x.v1.x"].get("keep").is_some());
        let y = &c.plugins["io.containerd.y.v1.y"];
        assert!(y.get("replaced").is_none() && y.get("new").is_some());
        assert_eq!(c.imports.len(), 3, "{:?}", c.imports);

        std::fs::write(d.path().join("conf.d/30-bad.toml"), "bogus = 1\n").unwrap();
        let err = Config::load(&main).unwrap_err().to_string();
        assert!(
            err.contains("30-bad.toml") && err.contains("bogus"),
            "{err}"
        );
        std::fs::write(&main, "imports = [\"missing.toml\"]\n").unwrap();
        let err = Config::load(&main).unwrap_err().to_string();
        assert!(err.contains("missing.toml"), "{err}");
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("*.toml", "a.toml"));
        assert!(wildcard("a?c*", "abcdef"));
        assert!(!wildcard("*.toml", "a.tom"));
        assert!(!wildcard("*.toml", ".hidden.toml"));
        assert!(wildcard("*", "x"));
    }

    #[test]
    fn bad_plugin_uri_is_refused() {
        let err = Config::parse("disabled_plugins = [\"btrfs\"]\n", Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("btrfs"));
    }
}
