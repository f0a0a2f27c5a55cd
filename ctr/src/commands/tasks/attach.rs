//! `berth tasks attach CONTAINER`: Containers.Get (terminal?), Tasks.Get, open the task's own
//! FIFOs (`cio.NewAttach`), Wait; deletes the task once it exited, like ctr. Exit status = the
//! task's.

use anyhow::Result;

use crate::client::io::{Attached, FifoSet, RawTerminal};
use crate::client::{spec, tasks, Client};
use crate::error::ExitStatus;

/// Arguments of `tasks attach`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// Attaches to the task.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let c = tasks::container(client, &args.id).await?;
    let spec = spec::from_any(c.spec.as_ref())?;
    let tty = spec["process"]["terminal"].as_bool().unwrap_or(false);
    let _raw = if tty {
        Some(RawTerminal::enable()?)
    } else {
        None
    };
    let p = tasks::get(client, &args.id, "").await?;
    let fifos = FifoSet::existing(&p.stdin, &p.stdout, &p.stderr, tty);
    let attached = Attached::start(&fifos);
    let wait = tasks::spawn_wait(client, &args.id, "");
    let code = tasks::wait_exit(client, &args.id, "", wait, attached, tty).await?;
    let _ = tasks::delete(client, &args.id, false).await;
    ExitStatus::result(code)
}
