//! `berth`: a debugging CLI for berthd (and any containerd 1.6 API server), mirroring containerd's `ctr`.

mod archive;
mod cli;
mod client;
mod commands;
mod error;
mod oci;
mod output;
mod timefmt;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if error::exit_status(&err).is_none() {
                eprintln!("berth: {}", error::render(&err));
            }
            ExitCode::from(error::exit_code(&err))
        }
    }
}
