//! The tracing subscriber: structured logs on stderr, level from the flag or the config.

use std::io::IsTerminal;

use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

/// Set to `1` to log every span's close with its busy and idle time (per-RPC timings).
const SPAN_TIMINGS_ENV: &str = "BERTH_LOG_SPANS";

/// Installs the global subscriber. `level` is a level name or a full filter directive;
/// `RUST_LOG` wins when set; `BERTH_LOG_SPANS=1` adds span timings.
pub fn init(level: &str) {
    let spans = if std::env::var(SPAN_TIMINGS_ENV).is_ok_and(|v| v == "1") {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_span_events(spans)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
