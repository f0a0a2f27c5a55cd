//! What a plugin declares: its type, id, the types it needs, its config and its init function
//! (containerd/plugin `Registration`).

use std::any::Any;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::InitContext;
use crate::errdefs::{Classify, ErrorKind};

/// A loaded plugin's instance, shared with the plugins that require it.
pub type Instance = Arc<dyn Any + Send + Sync>;

/// A plugin's init function.
pub type InitFn = Box<dyn FnOnce(&mut InitContext<'_>) -> Result<Instance, PluginError> + Send>;

/// Produces a plugin's default config section for `berthd config default`.
pub type DefaultConfigFn = fn() -> toml::Value;

/// Why a plugin did not load.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Not possible on this host; listed as `skip` with the reason.
    #[error("{0}: skip plugin")]
    Skip(String),
    /// The plugin's config section did not decode.
    #[error("invalid config for plugin {uri}: {message}")]
    Config {
        /// The plugin URI.
        uri: String,
        /// The decoder's message, naming the key.
        message: String,
    },
    /// A plugin this one needs is not loaded.
    #[error("no plugin {wanted} loaded for {uri}")]
    Dependency {
        /// The plugin asking.
        uri: String,
        /// The type or URI it asked for.
        wanted: String,
    },
    /// A loaded plugin is not of the Rust type the caller expected (a wiring bug).
    #[error("plugin {wanted} is not a {expected}")]
    WrongType {
        /// The plugin URI.
        wanted: String,
        /// The Rust type expected.
        expected: &'static str,
    },
    /// A directory of the plugin could not be created.
    #[error("create {}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The file system's error.
        source: std::io::Error,
    },
    /// Init failed; the plugin's own error says why.
    #[error("{source}")]
    Init {
        /// The plugin's error, typed by the plugin.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl PluginError {
    /// Wraps a plugin's own error as an init failure.
    pub fn init(err: impl std::error::Error + Send + Sync + 'static) -> PluginError {
        PluginError::Init {
            source: Box::new(err),
        }
    }

    /// The display followed by each cause not already in it, `: `-separated: what
    /// introspection lists and the log says for a plugin that did not load.
    pub fn display_chain(&self) -> String {
        let mut msg = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let text = s.to_string();
            if !msg.contains(&text) {
                msg.push_str(": ");
                msg.push_str(&text);
            }
            source = s.source();
        }
        msg
    }

    /// True for a skip.
    pub fn is_skip(&self) -> bool {
        matches!(self, PluginError::Skip(_))
    }
}

impl Classify for PluginError {
    fn kind(&self) -> ErrorKind {
        match self {
            PluginError::Skip(_) => ErrorKind::NotImplemented,
            PluginError::Config { .. } => ErrorKind::InvalidArgument,
            PluginError::Dependency { .. } => ErrorKind::NotFound,
            PluginError::WrongType { .. }
            | PluginError::CreateDir { .. }
            | PluginError::Init { .. } => ErrorKind::Internal,
        }
    }
}

/// One plugin's declaration.
pub struct Registration {
    /// Plugin type, one of [`crate::types`].
    pub plugin_type: &'static str,
    /// Plugin id, unique within its type.
    pub id: String,
    /// Types loaded before this one (`*` for all others).
    pub requires: Vec<&'static str>,
    /// The default config section, if the plugin has a config.
    pub default_config: Option<DefaultConfigFn>,
    /// The init function.
    pub init: InitFn,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("type", &self.plugin_type)
            .field("id", &self.id)
            .field("requires", &self.requires)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// Starts a registration; finish it with [`RegistrationBuilder::init`]. Reads as
    /// `Registration::new(type, id).requires(..).config::<C>().init(..)`, hence the name.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(plugin_type: &'static str, id: impl Into<String>) -> RegistrationBuilder {
        RegistrationBuilder {
            plugin_type,
            id: id.into(),
            requires: Vec::new(),
            default_config: None,
        }
    }

    /// `<type>.<id>`.
    pub fn uri(&self) -> String {
        format!("{}.{}", self.plugin_type, self.id)
    }
}

/// Builder for a [`Registration`].
#[derive(Debug)]
pub struct RegistrationBuilder {
    plugin_type: &'static str,
    id: String,
    requires: Vec<&'static str>,
    default_config: Option<DefaultConfigFn>,
}

impl RegistrationBuilder {
    /// Types that must load first.
    pub fn requires(mut self, types: &[&'static str]) -> Self {
        self.requires.extend_from_slice(types);
        self
    }

    /// Declares the plugin's config type, whose `Default` is printed by `config default`.
    pub fn config<C: Serialize + DeserializeOwned + Default>(mut self) -> Self {
        self.default_config =
            Some(|| toml::Value::try_from(C::default()).expect("plugin configs serialize to TOML"));
        self
    }

    /// Sets the init function and finishes the registration.
    pub fn init<F>(self, init: F) -> Registration
    where
        F: FnOnce(&mut InitContext<'_>) -> Result<Instance, PluginError> + Send + 'static,
    {
        Registration {
            plugin_type: self.plugin_type,
            id: self.id,
            requires: self.requires,
            default_config: self.default_config,
            init: Box::new(init),
        }
    }
}
