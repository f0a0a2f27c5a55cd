//! `berth run --restart POLICY --log-driver json-file --log-opt K=V`: the flags nerdctl and
//! Docker users know, on containerd's mechanisms. Everything is checked before anything is
//! made, so a bad policy, driver, option or log URI leaves no container behind.
//!
//! - `--restart`: the policy label (containerd 1.7 `restart.WithPolicy`) at creation; after
//!   the task started, `containerd.io/restart.status=running` (nerdctl's order, so the monitor
//!   never races the first start). Needs `-d` (the monitor, not the CLI, owns the task after
//!   start) and refuses `--rm`, as Docker does.
//! - `--log-driver json-file`: the task's log URI runs `berth` itself as the shim's logging
//!   binary ([`crate::client::logdriver`]) writing `<root>/berth/containers/<ns>/<id>/<id>-json.log`
//!   (`<root>` the daemon's, as for volumes; `--log-opt log-path=` elsewhere), rotated by
//!   `max-size`/`max-file`; the path goes in the `berth/log-path` label for `berth logs`.
//! - A log URI (given or made) is also stored in `containerd.io/restart.loguri`, so a restarted
//!   task writes to the same place.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use berth_restart::policy::{Kind, Policy};

use super::IoFlags;
use crate::client::jsonfile::{parse_count, parse_size};
use crate::client::logdriver::LogConfig;
use crate::client::restart::{label, LOG_PATH_LABEL};
use crate::client::{volumes, Client};

/// Restart and logging flags of `run`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RestartLogFlags {
    /// Restart policy: no, always, on-failure[:max-retries] or unless-stopped (needs -d).
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<String>,
    /// Logging driver: json-file (Docker's format, read by `berth logs`).
    #[arg(long, value_name = "DRIVER")]
    pub log_driver: Option<String>,
    /// Log driver option: max-size=SIZE, max-file=N, log-path=PATH (repeatable).
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    pub log_opts: Vec<String>,
}

/// What the flags add to the container and its task.
#[derive(Debug, Default)]
pub struct Plan {
    /// Labels for the new container.
    pub labels: Vec<(String, String)>,
    /// The task's log URI, when the flags chose one.
    pub log_uri: Option<String>,
    /// Set the desired status once the task has started.
    pub restart: bool,
}

impl Plan {
    /// Adds the labels to `--label` flags and the log URI to the IO flags.
    pub fn apply(&self, io: &mut IoFlags, labels: &mut Vec<String>) {
        labels.extend(self.labels.iter().map(|(k, v)| format!("{k}={v}")));
        if let Some(uri) = &self.log_uri {
            io.log_uri = Some(uri.clone());
        }
    }
}

/// Checks a `--log-uri` as the shim will read it: `file://`, `binary://` or `fifo://` with an
/// absolute path.
pub fn validate_log_uri(uri: &str) -> Result<()> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        bail!("invalid log-uri {uri:?}: want file:///path or binary:///path");
    };
    match scheme {
        "file" | "binary" | "fifo" => {
            let path = rest.split('?').next().unwrap_or("");
            if !path.starts_with('/') {
                bail!("invalid log-uri {uri:?}: the path must be absolute ({scheme}:///path)");
            }
            Ok(())
        }
        _ => {
            bail!("invalid log-uri {uri:?}: unknown scheme {scheme:?} (want file, binary or fifo)")
        }
    }
}

/// `--log-opt` pairs, each known to json-file.
fn log_opts(opts: &[String]) -> Result<BTreeMap<&str, &str>> {
    let mut out = BTreeMap::new();
    for opt in opts {
        let Some((k, v)) = opt.split_once('=') else {
            bail!("invalid --log-opt {opt:?}: want KEY=VALUE");
        };
        if !matches!(k, "max-size" | "max-file" | "log-path") {
            bail!("unknown log opt {k:?} for log driver json-file (want max-size, max-file or log-path)");
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// Checks the flags against each other and the IO flags, and works out the labels and log
/// URI of container `id`.
pub async fn plan(
    client: &Client,
    flags: &RestartLogFlags,
    io: &IoFlags,
    id: &str,
    detach: bool,
    rm: bool,
    tty: bool,
) -> Result<Plan> {
    let mut plan = Plan::default();
    if let Some(uri) = io.log_uri.as_deref().filter(|u| !u.is_empty()) {
        validate_log_uri(uri)?;
        plan.labels
            .push((label::LOG_URI.to_owned(), uri.to_owned()));
    }
    if let Some(text) = &flags.restart {
        let policy = Policy::parse(text)?;
        if policy.kind != Kind::No {
            if rm {
                bail!("conflicting options: --restart {text} and --rm");
            }
            if !detach {
                bail!("--restart {text} needs --detach (-d): the restart monitor owns the task once it runs");
            }
            plan.restart = true;
        }
        plan.labels
            .push((label::POLICY.to_owned(), policy.to_string()));
    }
    match flags.log_driver.as_deref() {
        None => {
            if !flags.log_opts.is_empty() {
                bail!("--log-opt needs --log-driver");
            }
        }
        Some("json-file") => {
            if io.log_uri.as_deref().is_some_and(|u| !u.is_empty()) {
                bail!("--log-driver and --log-uri cannot be used together");
            }
            if io.null_io {
                bail!("--log-driver and --null-io cannot be used together");
            }
            if tty {
                bail!("--log-driver cannot be used with a tty");
            }
            let opts = log_opts(&flags.log_opts)?;
            let max_size = opts.get("max-size").map(|s| parse_size(s)).transpose()?;
            let max_file = opts.get("max-file").map(|s| parse_count(s)).transpose()?;
            if max_file.is_some_and(|n| n > 1) && max_size.is_none() {
                bail!("--log-opt max-file needs max-size");
            }
            let path = match opts.get("log-path") {
                Some(p) if p.starts_with('/') => PathBuf::from(p),
                Some(p) => bail!("invalid --log-opt log-path={p:?}: the path must be absolute"),
                None => volumes::daemon_root(client)
                    .await?
                    .join("berth/containers")
                    .join(&client.namespace)
                    .join(id)
                    .join(format!("{id}-json.log")),
            };
            let exe = std::env::current_exe().context("cannot find the berth binary")?;
            let config = LogConfig {
                driver: "json-file".into(),
                path: path.clone(),
                max_size,
                max_file: max_file.unwrap_or(1),
            };
            let uri = config.uri(&exe)?;
            plan.labels
                .push((LOG_PATH_LABEL.to_owned(), path.display().to_string()));
            plan.labels.push((label::LOG_URI.to_owned(), uri.clone()));
            plan.log_uri = Some(uri);
        }
        Some(other) => bail!("unknown log driver {other:?} (want json-file)"),
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_uris_are_checked_before_anything_is_made() {
        validate_log_uri("file:///var/log/c.log").unwrap();
        validate_log_uri("binary:///usr/bin/logger?a=b").unwrap();
        let e = validate_log_uri("http://example.com/x").unwrap_err();
        assert!(e.to_string().contains("unknown scheme \"http\""), "{e}");
        assert!(validate_log_uri("file://relative").is_err());
        assert!(validate_log_uri("/plain/path").is_err());
    }

    #[test]
    fn log_opts_are_json_files() {
        let given = ["max-size=1m".to_owned(), "max-file=3".to_owned()];
        let opts = log_opts(&given).unwrap();
        assert_eq!(opts["max-size"], "1m");
        assert!(log_opts(&["colour=blue".into()]).is_err());
        assert!(log_opts(&["max-size".into()]).is_err());
    }
}
