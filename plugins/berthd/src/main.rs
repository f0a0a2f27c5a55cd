//! `berthd`: parse the command line, run, print one error line.

mod authority;
mod builtins;
mod cli;
mod logging;
mod notify;
mod remote;
mod server;
mod tracing_otel;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    notify::init();
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("berthd: {err:#}");
            ExitCode::FAILURE
        }
    }
}
