//! `containerd-shim-berth-v2`: Berth's runtime v2 shim for containerd 1.6 and berthd, driving
//! runc. Parses the Go-style flags and dispatches to the `start` or `delete` action, or serves.

mod args;
mod bundle;
mod cgroup;
mod console;
mod constants;
mod daemon;
mod delete;
mod error;
mod events;
mod io;
mod mount;
mod own;
mod process;
mod reaper;
mod runc;
mod service;
mod socket;
mod start;

use std::io::Write as _;
use std::process::ExitCode;

use args::{Action, Args};

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("containerd-shim-berth-v2: {err}");
            return ExitCode::from(2);
        }
    };
    if args.version {
        println!(
            "containerd-shim-berth-v2:\n  Version: {}",
            constants::VERSION
        );
        return ExitCode::SUCCESS;
    }
    let result = match args.action {
        Some(Action::Start) => start::run(&args, &mut std::io::stdout()).map_err(|e| e.to_string()),
        Some(Action::Delete) => {
            delete::run(&args, &mut std::io::stdout()).map_err(|e| e.to_string())
        }
        None => daemon::run(&args).map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Not `eprintln!`: the served shim's stderr may be a FIFO nobody reads any more,
            // and `eprintln!` panics when the write fails.
            let _ = writeln!(std::io::stderr(), "containerd-shim-berth-v2: {err}");
            ExitCode::FAILURE
        }
    }
}
