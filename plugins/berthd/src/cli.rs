//! Command line: flags override the config file, which overrides the defaults.

mod process;

use std::path::{Path, PathBuf};

use anyhow::Context;
use berth_registry::{Config, Registry};
use clap::{Parser, Subcommand};

use crate::{builtins, logging, server};

/// Where the config is read from when `--config` is not given and the file exists.
const DEFAULT_CONFIG_PATH: &str = "/etc/berth/config.toml";

/// berthd: a containerd-compatible container supervisor.
#[derive(Debug, Parser)]
#[command(name = "berthd", version = berth_services::version::VERSION)]
pub struct Cli {
    /// Path to the TOML config (default /etc/berth/config.toml when it exists).
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// Persistent data root.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Runtime state root.
    #[arg(long)]
    state: Option<PathBuf>,
    /// gRPC unix socket.
    #[arg(long, short = 'a')]
    address: Option<PathBuf>,
    /// Log level or tracing filter directive.
    #[arg(long, short = 'l')]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print the full default configuration, every plugin section included.
    Default,
    /// Print the configuration in effect (file plus flags).
    Dump,
}

fn registry(config: &Config) -> anyhow::Result<Registry> {
    let mut registry = Registry::new();
    builtins::register_all(&mut registry)?;
    berth_snapshotters::proxy::plugin::register_from_config(&mut registry, config)?;
    Ok(registry)
}

/// The config with every plugin's default section filled in where the file has none.
fn with_plugin_defaults(mut config: Config, registry: &Registry) -> Config {
    for (uri, section) in registry.default_sections() {
        config.plugins.entry(uri).or_insert(section);
    }
    config
}

impl Cli {
    fn load_config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                Config::load(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => Config::default(),
        };
        if let Some(root) = &self.root {
            config.root = absolute(root)?;
        }
        if let Some(state) = &self.state {
            config.state = absolute(state)?;
        }
        if let Some(address) = &self.address {
            config.grpc.address = absolute(address)?;
        }
        if let Some(level) = &self.log_level {
            config.debug.level = level.clone();
        }
        Ok(config)
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolve {}", path.display()))
}

/// Runs the chosen command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Some(Command::Config {
            action: ConfigAction::Default,
        }) => {
            let config = Config::default();
            let config = with_plugin_defaults(config.clone(), &registry(&config)?);
            print!("{}", config.to_toml());
            Ok(())
        }
        Some(Command::Config {
            action: ConfigAction::Dump,
        }) => {
            let config = cli.load_config()?;
            let config = with_plugin_defaults(config.clone(), &registry(&config)?);
            print!("{}", config.to_toml());
            Ok(())
        }
        None => {
            let config = cli.load_config()?;
            let telemetry = logging::init(&config)?;
            process::apply(&config)?;
            let registry = registry(&config)?;
            let result = server::run(config, registry);
            telemetry.finish();
            result
        }
    }
}
