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
    // The shim runs `berth` as a logging binary (`run --log-driver`): no flags, no daemon.
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() == 3 && argv[1] == client::logdriver::MAGIC_ARG {
        return match client::logdriver::run(&argv[2]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("berth logging: {err}");
                ExitCode::FAILURE
            }
        };
    }
    // runc runs `berth internal oci-hook <event>` for `run --net`: no daemon connection.
    if argv.get(1).map(String::as_str) == Some(commands::internal::ARG) {
        return match commands::internal::main(&argv[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("berth oci-hook: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
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
