//! Global options (`--address`, `--namespace`, `--timeout`, ...) and the top-level dispatch.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Parser};

use crate::client::Client;
use crate::commands::Command;

/// Default socket of berthd (containerd's is `/run/containerd/containerd.sock`).
pub const DEFAULT_ADDRESS: &str = "/run/berth/berthd.sock";

/// `berth`: talk to berthd or containerd over the containerd API v1, like `ctr`.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command, as ctr's global flags.
#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// Address of the daemon: its unix socket (`unix://` accepted) or `tcp://host:port`
    /// [env: BERTH_ADDRESS, else CONTAINERD_ADDRESS] [default: /run/berth/berthd.sock].
    #[arg(short = 'a', long = "address", global = true, env = "BERTH_ADDRESS")]
    pub address_flag: Option<String>,
    // The three TLS flags are Docker's global ones and, unlike the others, go before the verb
    // only: `images pull/push` and `content fetch` have ctr's own `--tlscacert`, `--tlscert` and
    // `--tlskey` for the registry, which a global flag of the same name would take over.
    /// CA certificate (PEM) that berthd's TCP certificate must chain to.
    #[arg(long, env = "BERTH_TLS_CACERT")]
    pub tlscacert: Option<PathBuf>,
    /// Client certificate (PEM) presented to berthd over TCP; needs --tlskey.
    #[arg(long, env = "BERTH_TLS_CERT")]
    pub tlscert: Option<PathBuf>,
    /// Private key (PEM) of --tlscert.
    #[arg(long, env = "BERTH_TLS_KEY")]
    pub tlskey: Option<PathBuf>,
    /// Namespace to use with commands.
    #[arg(
        short = 'n',
        long,
        global = true,
        env = "CONTAINERD_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
    /// Total timeout for the command (e.g. `30s`, `1m`; 0 = none).
    #[arg(long, global = true, default_value = "0", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Timeout for connecting to the daemon.
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Print debug details (gRPC codes) with errors.
    #[arg(long, global = true)]
    pub debug: bool,
}

impl GlobalOpts {
    /// The daemon's address: `--address` or `BERTH_ADDRESS`, else `CONTAINERD_ADDRESS`, else
    /// the default socket.
    pub fn address(&self) -> String {
        self.address_flag
            .clone()
            .or_else(|| std::env::var("CONTAINERD_ADDRESS").ok())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| DEFAULT_ADDRESS.to_owned())
    }
}

/// Builds the runtime, connects and runs the command under the global timeout.
pub fn run(cli: Cli) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    crate::error::set_debug(cli.global.debug);
    rt.block_on(async move {
        let timeout = cli.global.timeout;
        let work = async {
            let client = Client::connect(&cli.global).await?;
            cli.command.run(&client).await
        };
        if timeout.is_zero() {
            work.await
        } else {
            tokio::time::timeout(timeout, work)
                .await
                .map_err(|_| anyhow::anyhow!("command timed out after {timeout:?} (--timeout)"))?
        }
    })
}

/// Parses a Go-style duration: `300ms`, `10s`, `1m30s`, `2h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err("empty duration".to_owned());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {text:?}"))?;
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => return Err(format!("unknown unit {unit:?} in duration {text:?}")),
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs_f64(value * scale);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn cli_parses_globals_after_the_verb() {
        let cli = Cli::try_parse_from(["berth", "images", "ls", "-n", "ns1", "-q"]).unwrap();
        assert_eq!(cli.global.namespace, "ns1");
    }

    /// `--tlscacert` after `images pull` is the registry's (ctr's flag), before the verb it is
    /// berthd's.
    #[test]
    fn tls_flags_before_the_verb_are_berthds_after_it_the_registrys() {
        let cli = Cli::try_parse_from([
            "berth",
            "--tlscacert",
            "/daemon-ca.pem",
            "images",
            "pull",
            "--tlscacert",
            "/registry-ca.pem",
            "r.example/img:1",
        ])
        .unwrap();
        assert_eq!(
            cli.global.tlscacert.as_deref(),
            Some(std::path::Path::new("/daemon-ca.pem"))
        );
        let rendered = format!("{:?}", cli.command);
        assert!(rendered.contains("/registry-ca.pem"), "{rendered}");
    }
}
