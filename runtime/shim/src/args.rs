//! Command-line flags in Go `flag` syntax, as containerd passes them to every v2 shim.
//!
//! `-name value`, `-name=value` and `--name` are all accepted; boolean flags take no value
//! unless written `-name=true|false`; parsing stops at the first non-flag word, the action
//! (`start`, `delete`, or none for the daemonised shim), as `runtime/v2/shim/shim.go` `parseFlags`.

use std::fmt;

/// Parsed shim flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// `-namespace`: required for every action.
    pub namespace: String,
    /// `-id`: the task id.
    pub id: String,
    /// `-address`: the daemon's gRPC address.
    pub address: String,
    /// `-publish-binary`: the daemon binary, for the `publish` fallback.
    pub publish_binary: String,
    /// `-bundle`: the bundle path (the `delete` action; otherwise the cwd).
    pub bundle: String,
    /// `-socket`: abstract socket path (unused by 1.6 shims; accepted).
    pub socket: String,
    /// `-debug`: verbose logs.
    pub debug: bool,
    /// `-v`: print the version and exit.
    pub version: bool,
    /// The action word, if any.
    pub action: Option<Action>,
}

/// The one positional argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Launch (or reuse) a shim server and print its address.
    Start,
    /// Clean up after a shim that is gone.
    Delete,
}

/// Why the command line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgsError {
    /// A flag Go's `flag` package would not know.
    UnknownFlag(String),
    /// A value flag at the end of the line.
    MissingValue(String),
    /// `-debug=maybe`.
    BadBool(String, String),
    /// An action other than `start` or `delete`.
    UnknownAction(String),
    /// `-namespace` missing or empty.
    NamespaceRequired,
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgsError::UnknownFlag(name) => write!(f, "flag provided but not defined: -{name}"),
            ArgsError::MissingValue(name) => write!(f, "flag needs an argument: -{name}"),
            ArgsError::BadBool(name, value) => {
                write!(f, "invalid boolean value {value:?} for -{name}")
            }
            ArgsError::UnknownAction(action) => write!(f, "invalid action {action:?}"),
            ArgsError::NamespaceRequired => write!(f, "shim namespace cannot be empty"),
        }
    }
}

impl std::error::Error for ArgsError {}

fn parse_bool(name: &str, value: &str) -> Result<bool, ArgsError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ArgsError::BadBool(name.to_owned(), value.to_owned())),
    }
}

impl Args {
    /// Parses the arguments after the program name.
    pub fn parse<I, S>(argv: I) -> Result<Args, ArgsError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut args = Args::default();
        let mut words = argv.into_iter().map(Into::into);
        let mut positional = None;
        while let Some(word) = words.next() {
            if word == "--" {
                positional = words.next();
                break;
            }
            let Some(flag) = word
                .strip_prefix("--")
                .or_else(|| word.strip_prefix('-'))
                .filter(|f| !f.is_empty())
            else {
                positional = Some(word);
                break;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (flag, None),
            };
            match name {
                "debug" | "v" => {
                    let value = match &inline {
                        Some(v) => parse_bool(name, v)?,
                        None => true,
                    };
                    if name == "debug" {
                        args.debug = value;
                    } else {
                        args.version = value;
                    }
                }
                "namespace" | "id" | "address" | "publish-binary" | "bundle" | "socket" => {
                    let value = match inline {
                        Some(v) => v,
                        None => words
                            .next()
                            .ok_or_else(|| ArgsError::MissingValue(name.to_owned()))?,
                    };
                    let slot = match name {
                        "namespace" => &mut args.namespace,
                        "id" => &mut args.id,
                        "address" => &mut args.address,
                        "publish-binary" => &mut args.publish_binary,
                        "bundle" => &mut args.bundle,
                        _ => &mut args.socket,
                    };
                    *slot = value;
                }
                other => return Err(ArgsError::UnknownFlag(other.to_owned())),
            }
        }
        args.action = match positional.as_deref() {
            None | Some("") => None,
            Some("start") => Some(Action::Start),
            Some("delete") => Some(Action::Delete),
            Some(other) => return Err(ArgsError::UnknownAction(other.to_owned())),
        };
        if !args.version && args.namespace.is_empty() {
            return Err(ArgsError::NamespaceRequired);
        }
        Ok(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_line_as_containerd_sends_it() {
        let a = Args::parse([
            "-namespace",
            "default",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "t1",
            "-debug",
            "start",
        ])
        .unwrap();
        assert_eq!(a.namespace, "default");
        assert_eq!(a.address, "/run/containerd/containerd.sock");
        assert_eq!(a.publish_binary, "/usr/bin/containerd");
        assert_eq!(a.id, "t1");
        assert!(a.debug);
        assert_eq!(a.action, Some(Action::Start));
    }

    #[test]
    fn delete_and_equals_forms() {
        let a = Args::parse([
            "--namespace=ns",
            "-id=x",
            "-bundle",
            "/b",
            "-debug=false",
            "delete",
        ])
        .unwrap();
        assert_eq!(a.namespace, "ns");
        assert_eq!(a.id, "x");
        assert_eq!(a.bundle, "/b");
        assert!(!a.debug);
        assert_eq!(a.action, Some(Action::Delete));
    }

    #[test]
    fn serve_mode_has_no_action() {
        let a = Args::parse(["-namespace", "n", "-id", "i", "-address", "/a"]).unwrap();
        assert_eq!(a.action, None);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            Args::parse(["-id", "x", "start"]),
            Err(ArgsError::NamespaceRequired)
        );
        assert_eq!(
            Args::parse(["-namespace", "n", "-bogus"]),
            Err(ArgsError::UnknownFlag("bogus".into()))
        );
        assert_eq!(
            Args::parse(["-namespace"]),
            Err(ArgsError::MissingValue("namespace".into()))
        );
        assert_eq!(
            Args::parse(["-namespace", "n", "frobnicate"]),
            Err(ArgsError::UnknownAction("frobnicate".into()))
        );
        assert!(matches!(
            Args::parse(["-namespace", "n", "-debug=maybe"]),
            Err(ArgsError::BadBool(..))
        ));
        // -v needs no namespace.
        assert!(Args::parse(["-v"]).unwrap().version);
    }
}
