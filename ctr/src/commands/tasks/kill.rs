//! `berth tasks kill [-s SIGNAL] [--all | --exec-id E] CONTAINER`: Containers.Get (stop
//! signal), Tasks.Get, Tasks.Kill. The default signal is the container's
//! `io.containerd.image.config.stop-signal` label, else SIGTERM. A container the restart monitor
//! manages gets `containerd.io/restart.explicitly-stopped=true` before the signal.

use anyhow::{bail, Result};

use crate::client::{restart, tasks, Client};

/// Flags of `tasks kill`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Signal to send (name or number).
    #[arg(short = 's', long)]
    pub signal: Option<String>,
    /// Exec process to signal.
    #[arg(long)]
    pub exec_id: Option<String>,
    /// Send the signal to all processes inside the container (ctr's `-a` is taken by the
    /// global `--address` here).
    #[arg(long)]
    pub all: bool,
    /// Container id.
    pub id: String,
}

/// Signals the task.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let exec_id = args.exec_id.unwrap_or_default();
    if args.all && !exec_id.is_empty() {
        bail!("specify an exec-id or all; not both");
    }
    let c = tasks::container_if_any(client, &args.id).await?;
    let signal = match (args.signal.as_deref().filter(|s| !s.is_empty()), &c) {
        (Some(s), _) => tasks::parse_signal(s)?,
        (None, Some(c)) => tasks::stop_signal(c, "SIGTERM")?,
        (None, None) => tasks::parse_signal("SIGTERM")?,
    };
    tasks::get(client, &args.id, "").await?;
    // A user's kill of a restart-managed container: `unless-stopped` leaves it stopped
    // (nerdctl's `kill` marks it the same way). Signals to an exec process do not count.
    if let Some(c) = c
        .as_ref()
        .filter(|c| exec_id.is_empty() && restart::is_managed(c))
    {
        restart::mark_explicitly_stopped(client, &c.id).await?;
    }
    tasks::kill(client, &args.id, &exec_id, signal, args.all).await
}
