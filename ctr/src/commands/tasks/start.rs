//! `berth tasks start [flags] CONTAINER`: create the task of a created container and run it
//! (ctr `tasks start`): attached unless `-d`, exit status = the process's.

use anyhow::Result;

use crate::client::{restart, spec, tasks, Client};
use crate::commands::run::{start_task, IoFlags, StartOpts};

/// Flags of `tasks start`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub io: IoFlags,
    /// File path to write the task's pid.
    #[arg(long)]
    pub pid_file: Option<String>,
    /// Detach from the task after it has started execution.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Disable the use of pivot_root.
    #[arg(long)]
    pub no_pivot: bool,
    /// Container id.
    pub id: String,
}

/// Starts the task.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let c = tasks::container(client, &args.id).await?;
    let spec = spec::from_any(c.spec.as_ref())?;
    let tty = spec["process"]["terminal"].as_bool().unwrap_or(false);
    start_task(
        client,
        &args.id,
        &args.io,
        StartOpts {
            tty,
            detach: args.detach,
            no_pivot: args.no_pivot,
            pid_file: args.pid_file.as_deref(),
        },
        Some(tasks::Known {
            container: &c,
            rootfs: None,
        }),
    )
    .await?;
    // A user's start of a restart-managed container: keep it running again (nerdctl `start`).
    if args.detach && restart::is_managed(&c) {
        restart::mark_started(client, &args.id).await?;
    }
    Ok(())
}
