//! The introspection record of every plugin, filled in as plugins load and read by the
//! introspection service at request time (so it also shows plugins that loaded after it).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use crate::errdefs::ErrorKind;

/// An OCI platform.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `v8`, often empty.
    pub variant: String,
}

impl Platform {
    /// The platform this daemon runs on, in OCI spelling.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: String::new(),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// How a plugin's init ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginStatus {
    /// Loaded.
    Ok,
    /// Skipped or failed; the message of a skip ends in `skip plugin`, which ctr looks for.
    Error {
        /// The error class.
        kind: ErrorKind,
        /// The error text.
        message: String,
    },
}

impl PluginStatus {
    /// True for a skip: the plugin cannot work on this host and is not retried.
    pub fn is_skip(&self) -> bool {
        match self {
            PluginStatus::Ok => false,
            PluginStatus::Error { kind, message } => {
                *kind == ErrorKind::NotImplemented && message.ends_with(SKIP_SUFFIX)
            }
        }
    }
}

/// What a skip's message ends with (containerd's `ErrSkipPlugin` text, which ctr looks for).
const SKIP_SUFFIX: &str = "skip plugin";

/// One plugin as introspection reports it.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// Plugin type.
    pub plugin_type: String,
    /// Plugin id.
    pub id: String,
    /// Types it required.
    pub requires: Vec<String>,
    /// Platforms it serves.
    pub platforms: Vec<Platform>,
    /// Facts it exports.
    pub exports: BTreeMap<String, String>,
    /// Its capabilities.
    pub capabilities: Vec<String>,
    /// How init ended.
    pub status: PluginStatus,
}

/// Shared, growing list of plugin records.
#[derive(Debug, Clone, Default)]
pub struct Inventory(Arc<RwLock<Vec<PluginInfo>>>);

impl Inventory {
    /// Adds a record.
    pub fn push(&self, info: PluginInfo) {
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(info);
    }

    /// Replaces the record of the same type and id (a plugin initialised again), keeping its
    /// place in load order; adds it when there is none.
    pub fn set(&self, info: PluginInfo) {
        let mut records = self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match records
            .iter_mut()
            .find(|p| p.plugin_type == info.plugin_type && p.id == info.id)
        {
            Some(record) => *record = info,
            None => records.push(info),
        }
    }

    /// The record of one plugin.
    pub fn get(&self, plugin_type: &str, id: &str) -> Option<PluginInfo> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .find(|p| p.plugin_type == plugin_type && p.id == id)
            .cloned()
    }

    /// A copy of all records, in load order.
    pub fn snapshot(&self) -> Vec<PluginInfo> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}
