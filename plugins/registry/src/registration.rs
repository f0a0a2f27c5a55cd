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

/// A plugin's init function. It may run more than once: a plugin that failed is initialised
/// again until it loads (see [`crate::Plugins::retry_failed`]).
pub type InitFn = Box<dyn Fn(&mut InitContext<'_>) -> Result<Instance, PluginError> + Send>;

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
    /// A plugin this one needs failed to load; its own error says why. Retried with it.
    #[error("plugin {dependency} needed by {uri} did not load: {reason}")]
    DependencyFailed {
        /// The plugin asking.
        uri: String,
        /// The URI of the plugin that failed.
        dependency: String,
        /// That plugin's error, as introspection lists it.
        reason: String,
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

    /// True when initialising the plugin again may succeed: its own error came from the host
    /// (a directory, a database, a plugin it needs that failed the same way). A skip, a bad
    /// config section, a missing or mistyped dependency stay as they are until a restart.
    pub fn is_retryable(&self) -> bool {
        match self {
            PluginError::DependencyFailed { .. }
            | PluginError::CreateDir { .. }
            | PluginError::Init { .. } => true,
            PluginError::Skip(_)
            | PluginError::Config { .. }
            | PluginError::Dependency { .. }
            | PluginError::WrongType { .. } => false,
        }
    }
}

impl Classify for PluginError {
    fn kind(&self) -> ErrorKind {
        match self {
            PluginError::Skip(_) => ErrorKind::NotImplemented,
            PluginError::Config { .. } => ErrorKind::InvalidArgument,
            PluginError::Dependency { .. } => ErrorKind::NotFound,
            PluginError::DependencyFailed { .. } => ErrorKind::Unavailable,
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
    /// The gRPC services it serves once loaded, fully qualified (e.g.
    /// `containerd.services.images.v1.Images`), so that a call to one of them while the plugin
    /// is not loaded can be told why.
    pub serves: Vec<&'static str>,
    /// Whether it is initialised anew, its new instance taking the old one's place, when a
    /// plugin it requires loads after it (on a retry): see [`RegistrationBuilder::reloadable`].
    pub reloadable: bool,
    /// The init function.
    pub init: InitFn,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("type", &self.plugin_type)
            .field("id", &self.id)
            .field("requires", &self.requires)
            .field("serves", &self.serves)
            .field("reloadable", &self.reloadable)
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
            serves: Vec::new(),
            reloadable: false,
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
    serves: Vec<&'static str>,
    reloadable: bool,
}

impl RegistrationBuilder {
    /// Types that must load first.
    pub fn requires(mut self, types: &[&'static str]) -> Self {
        self.requires.extend_from_slice(types);
        self
    }

    /// The gRPC services (fully qualified names) the plugin serves once loaded.
    pub fn serves(mut self, services: &[&'static str]) -> Self {
        self.serves.extend_from_slice(services);
        self
    }

    /// Marks a plugin whose instance owns nothing a second instance would contend for (a thin
    /// service over other plugins): when a plugin it requires loads on a retry, after it, it
    /// is initialised anew so that it uses that plugin, and the new instance replaces the old.
    /// Plugins owning a database, a port or processes stay as they loaded until a restart.
    pub fn reloadable(mut self) -> Self {
        self.reloadable = true;
        self
    }

    /// Declares the plugin's config type, whose `Default` is printed by `config default`.
    pub fn config<C: Serialize + DeserializeOwned + Default>(mut self) -> Self {
        self.default_config =
            Some(|| toml::Value::try_from(C::default()).expect("plugin configs serialize to TOML"));
        self
    }

    /// Sets the init function and finishes the registration. The function may be called again
    /// after it failed, so it must leave nothing behind that a second call would trip on.
    pub fn init<F>(self, init: F) -> Registration
    where
        F: Fn(&mut InitContext<'_>) -> Result<Instance, PluginError> + Send + 'static,
    {
        Registration {
            plugin_type: self.plugin_type,
            id: self.id,
            requires: self.requires,
            default_config: self.default_config,
            serves: self.serves,
            reloadable: self.reloadable,
            init: Box::new(init),
        }
    }
}
