//! The command tree, one module per resource and one file per verb, mirroring ctr's
//! `cmd/ctr/commands/<resource>/`.

pub mod containers;
pub mod content;
pub mod events;
pub mod images;
pub mod inspect;
pub mod internal;
pub mod leases;
pub mod logs;
pub mod namespaces;
pub mod network;
pub mod plugins;
pub mod ps;
pub mod run;
pub mod snapshots;
pub mod tasks;
pub mod version;
pub mod volumes;

use std::collections::HashMap;

use anyhow::Result;
use clap::Subcommand;

use crate::client::Client;

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the client and server versions.
    Version(version::Args),
    /// Provides information about daemon plugins.
    #[command(subcommand, visible_alias = "plugin")]
    Plugins(plugins::Command),
    /// Manage namespaces.
    #[command(subcommand, visible_aliases = ["namespace", "ns"])]
    Namespaces(namespaces::Command),
    /// Manage content.
    #[command(subcommand)]
    Content(content::Command),
    /// Manage images.
    #[command(subcommand, visible_aliases = ["image", "i"])]
    Images(images::Command),
    /// Manage snapshots.
    #[command(visible_alias = "snapshot")]
    Snapshots(snapshots::Group),
    /// Manage containers.
    #[command(subcommand, visible_aliases = ["c", "container"])]
    Containers(containers::Command),
    /// Manage leases.
    #[command(subcommand)]
    Leases(leases::Command),
    /// Display daemon events.
    #[command(visible_alias = "event")]
    Events(events::Args),
    /// Run a container: [flags] IMAGE|ROOTFS ID [COMMAND] [ARG...].
    Run(Box<run::Args>),
    /// Manage tasks.
    #[command(subcommand, visible_aliases = ["t", "task"])]
    Tasks(tasks::Command),
    /// Manage volumes (named directories containers mount).
    #[command(subcommand, visible_alias = "volume")]
    Volumes(volumes::Command),
    /// List containers as Docker does (running ones; all with -a).
    Ps(ps::Args),
    /// Print containers as JSON: mounts, volumes, network, restart policy, log location.
    Inspect(inspect::Args),
    /// Print a container's json-file log (`run --log-driver json-file`).
    Logs(logs::Args),
    /// Manage CNI networks (`run --net`).
    #[command(subcommand, visible_alias = "networks")]
    Network(network::Command),
}

impl Command {
    /// Runs the command on a connected client.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Self::Version(args) => version::run(client, args).await,
            Self::Plugins(cmd) => cmd.run(client).await,
            Self::Namespaces(cmd) => cmd.run(client).await,
            Self::Content(cmd) => cmd.run(client).await,
            Self::Images(cmd) => cmd.run(client).await,
            Self::Snapshots(group) => group.run(client).await,
            Self::Containers(cmd) => cmd.run(client).await,
            Self::Leases(cmd) => cmd.run(client).await,
            Self::Events(args) => events::run(client, args).await,
            Self::Run(args) => run::run(client, *args).await,
            Self::Tasks(cmd) => cmd.run(client).await,
            Self::Volumes(cmd) => cmd.run(client).await,
            Self::Ps(args) => ps::run(client, args).await,
            Self::Logs(args) => logs::run(client, args).await,
            Self::Inspect(args) => inspect::run(client, args).await,
            Self::Network(cmd) => cmd.run(client).await,
        }
    }
}

/// `k=v` arguments as labels; a bare `k` maps to an empty value (ctr `ObjectWithLabelArgs`).
pub fn parse_labels(args: &[String]) -> HashMap<String, String> {
    args.iter()
        .map(|arg| match arg.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (arg.clone(), String::new()),
        })
        .collect()
}

/// Labels from repeated `--label k=v` flags.
pub fn label_flags(flags: &[String]) -> HashMap<String, String> {
    parse_labels(flags)
}

/// Errors of a verb applied to several objects: all but the last are printed as they come, the
/// last is returned so that the exit status is non-zero.
#[derive(Debug, Default)]
pub struct Failures {
    last: Option<anyhow::Error>,
}

impl Failures {
    /// Records a failure, printing the previous one.
    pub fn add(&mut self, err: anyhow::Error) {
        if let Some(prev) = self.last.replace(err) {
            eprintln!("berth: {}", crate::error::render(&prev));
        }
    }

    /// `Err` with the last failure, if any.
    pub fn finish(self) -> Result<()> {
        match self.last {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_like_ctr() {
        let labels = parse_labels(&["a=1".into(), "b=".into(), "c".into(), "d=x=y".into()]);
        assert_eq!(labels["a"], "1");
        assert_eq!(labels["b"], "");
        assert_eq!(labels["c"], "");
        assert_eq!(labels["d"], "x=y");
    }
}
