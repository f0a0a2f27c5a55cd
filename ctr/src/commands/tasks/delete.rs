//! `berth tasks delete [-f] [--exec-id E] CONTAINER...`: Tasks.Get, refuse unless stopped
//! (`task must be stopped before deletion: running: failed precondition`), Tasks.Delete;
//! `--force` kills with SIGKILL and waits first.

use anyhow::Result;

use crate::client::{tasks, Client};
use crate::commands::Failures;
use crate::error::ExitStatus;

/// Flags of `tasks delete`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Force delete: kill the process(es) first.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Exec process to delete (only with one container).
    #[arg(long)]
    pub exec_id: Option<String>,
    /// Container ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// Deletes the tasks.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    if let Some(exec_id) = args.exec_id.as_deref().filter(|e| !e.is_empty()) {
        let id = &args.ids[0];
        tasks::container_if_any(client, id).await?;
        let status = tasks::delete_process(client, id, exec_id, args.force).await?;
        return ExitStatus::result(status.exit_status);
    }
    let mut failures = Failures::default();
    for id in &args.ids {
        let deleted = async {
            tasks::container_if_any(client, id).await?;
            tasks::delete(client, id, args.force).await
        }
        .await;
        match deleted {
            Ok(status) if status.exit_status != 0 => {
                eprintln!(
                    "berth: task {id} exit with non-zero exit code {}",
                    status.exit_status
                );
            }
            Ok(_) => {}
            Err(err) => failures.add(err),
        }
    }
    failures.finish()
}
