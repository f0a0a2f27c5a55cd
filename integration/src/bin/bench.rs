//! `berth-bench`: Berth and containerd measured side by side (see docs/PERFORMANCE.md).

use std::path::PathBuf;
use std::process::ExitCode;

use berth_integration::bench::{self, Options};
use clap::Parser;

/// Benchmark berthd against containerd 1.6 on this host, alternating the daemons.
#[derive(Debug, Parser)]
#[command(name = "berth-bench")]
struct Args {
    /// CI mode: tiny sizes and one run each; fails only if a measurement produced no number.
    #[arg(long)]
    quick: bool,
    /// Alternating runs per timed measurement (default 5; 1 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run only these sections (comma-separated, of the possible values); the figures of the
    /// others are left out and not required.
    #[arg(long, value_delimiter = ',', value_parser = bench::SECTIONS)]
    only: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = Options {
        quick: args.quick,
        runs: args.runs,
        out: args.out,
        only: args.only,
    };
    match bench::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
