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

    /// A copy of all records, in load order.
    pub fn snapshot(&self) -> Vec<PluginInfo> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}
