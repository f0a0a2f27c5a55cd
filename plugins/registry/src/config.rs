//! The daemon's TOML configuration (containerd's `services/server/config/config.go` shape). The
//! top level is strict: an unknown key is an error naming it. Plugin sections stay raw TOML until
//! their plugin loads and decodes them into its own `Config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::errdefs::{Classify, ErrorKind};

/// Default root for persistent data.
pub const DEFAULT_ROOT: &str = "/var/lib/berth";
/// Default root for runtime state.
pub const DEFAULT_STATE: &str = "/run/berth";
/// Default gRPC socket.
pub const DEFAULT_ADDRESS: &str = "/run/berth/berthd.sock";

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
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            address: DEFAULT_ADDRESS.into(),
            uid: 0,
            gid: 0,
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
}

impl Default for DebugConfig {
    fn default() -> Self {
        DebugConfig {
            level: "info".into(),
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

impl Config {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_owned(),
            source,
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
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
    fn bad_plugin_uri_is_refused() {
        let err = Config::parse("disabled_plugins = [\"btrfs\"]\n", Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("btrfs"));
    }
}
