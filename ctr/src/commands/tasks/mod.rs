//! `berth tasks`: manage the tasks (running processes) of containers, as ctr's
//! `commands/tasks`.

mod attach;
mod checkpoint;
mod delete;
mod exec;
mod kill;
mod ls;
mod metrics;
mod pause;
mod ps;
mod start;

use anyhow::Result;
use clap::Subcommand;

use crate::client::Client;

/// `tasks` verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to the IO of a running container.
    Attach(attach::Args),
    /// Checkpoint a container.
    Checkpoint(checkpoint::Args),
    /// Delete one or more tasks.
    #[command(visible_aliases = ["del", "remove", "rm"])]
    Delete(delete::Args),
    /// Execute an additional process in a running container.
    Exec(exec::Args),
    /// List tasks.
    #[command(visible_alias = "list")]
    Ls(ls::Args),
    /// Signal a container (default: its stop signal, else SIGTERM).
    Kill(kill::Args),
    /// Get a single data point of a task's cgroup metrics.
    #[command(visible_alias = "metric")]
    Metrics(metrics::Args),
    /// Pause an existing container.
    Pause(pause::Args),
    /// List the processes of a container.
    Ps(ps::Args),
    /// Resume a paused container.
    Resume(pause::Args),
    /// Start a container that has been created.
    Start(start::Args),
}

impl Command {
    /// Dispatches the verb.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Self::Attach(a) => attach::run(client, a).await,
            Self::Checkpoint(a) => checkpoint::run(client, a).await,
            Self::Delete(a) => delete::run(client, a).await,
            Self::Exec(a) => exec::run(client, a).await,
            Self::Ls(a) => ls::run(client, a).await,
            Self::Kill(a) => kill::run(client, a).await,
            Self::Metrics(a) => metrics::run(client, a).await,
            Self::Pause(a) => pause::pause(client, a).await,
            Self::Ps(a) => ps::run(client, a).await,
            Self::Resume(a) => pause::resume(client, a).await,
            Self::Start(a) => start::run(client, a).await,
        }
    }
}

/// Pads every cell but the last of each row by 3 more spaces, so the shared table (one space
/// between columns) lines up as ctr's `tabwriter.NewWriter(w, _, 8, 4, ' ', 0)` with padding 4.
pub fn pad4(cells: Vec<String>) -> Vec<String> {
    let n = cells.len();
    cells
        .into_iter()
        .enumerate()
        .map(|(i, c)| if i + 1 < n { format!("{c}   ") } else { c })
        .collect()
}
