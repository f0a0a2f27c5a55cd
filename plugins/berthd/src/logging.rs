//! The tracing subscriber: logs on stderr as text or JSON lines (`[debug] format`), level from
//! the flag or the config, and the OpenTelemetry exporter when one is configured
//! ([`crate::tracing_otel`]).

use std::io::IsTerminal;

use anyhow::bail;
use berth_registry::Config;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use crate::tracing_otel::Exporter;

/// Set to `1` to log every span's close with its busy and idle time (per-RPC timings).
const SPAN_TIMINGS_ENV: &str = "BERTH_LOG_SPANS";

/// How log lines are written (containerd's `[debug] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `key=value` text, one event a line.
    Text,
    /// One JSON object a line: timestamp, level, fields (with the message), target, the
    /// current span and the spans above it with their fields.
    Json,
}

impl Format {
    fn parse(value: &str) -> anyhow::Result<Format> {
        match value {
            "" | "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => bail!("[debug] format = {other:?}: unknown log format (\"text\" or \"json\")"),
        }
    }
}

/// What logging holds for the daemon's life: the exporter, if any, which [`Telemetry::finish`]
/// flushes.
#[derive(Debug)]
pub struct Telemetry {
    exporter: Option<Exporter>,
}

impl Telemetry {
    /// Sends the spans still queued; call after the daemon has stopped serving.
    pub fn finish(self) {
        if let Some(exporter) = self.exporter {
            exporter.shutdown();
        }
    }
}

/// Installs the global subscriber for `config`: level from `[debug] level` (`RUST_LOG` wins
/// when set), format from `[debug] format` (an unknown one is an error),
/// `BERTH_LOG_SPANS=1` adds span timings, and an OpenTelemetry exporter when its plugin section
/// names an endpoint. A bad exporter section does not stop berthd: it is logged, and its plugin
/// lists the error (as containerd).
pub fn init(config: &Config) -> anyhow::Result<Telemetry> {
    let format = Format::parse(&config.debug.format)?;
    let spans = if std::env::var(SPAN_TIMINGS_ENV).is_ok_and(|v| v == "1") {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.debug.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (exporter, exporter_error) = match Exporter::from_config(config) {
        Ok(exporter) => (exporter, None),
        Err(e) => (None, Some(e)),
    };
    let otel = exporter.as_ref().map(Exporter::layer);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = match format {
        Format::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .with_span_events(spans)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
        Format::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_span_events(spans)
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_ansi(false),
            )
            .try_init(),
    };
    installed?;
    if let Some(e) = exporter_error {
        tracing::error!(error = %e, "OpenTelemetry export is off");
    }
    if exporter.is_some() {
        berth_services::rpc_span::set_otel_fields(true);
    }
    Ok(Telemetry { exporter })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_containerds() {
        assert_eq!(Format::parse("").unwrap(), Format::Text);
        assert_eq!(Format::parse("text").unwrap(), Format::Text);
        assert_eq!(Format::parse("json").unwrap(), Format::Json);
        let err = Format::parse("xml").unwrap_err().to_string();
        assert!(
            err.contains("[debug] format") && err.contains("\"xml\""),
            "{err}"
        );
    }
}
