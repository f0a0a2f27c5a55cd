//! `berth tasks exec --exec-id E [flags] CONTAINER CMD [ARG...]`: Containers.Get, Tasks.Get,
//! Exec{process spec Any, FIFOs `E-std*`}, Wait ∥ Start, CloseIO on stdin EOF, DeleteProcess.
//! Exit status = the process's.

use anyhow::{bail, Result};
use berth_proto::containerd::services::tasks::v1::ExecProcessRequest;
use serde_json::json;

use crate::client::io::{Attached, RawTerminal};
use crate::client::spec::{self, Accounts, PROCESS_TYPE_URL};
use crate::client::{tasks, Client};
use crate::commands::run::{read_accounts, IoFlags};
use crate::error::{ExitStatus, RpcResultExt};

/// Flags of `tasks exec`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Working directory of the new process.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Allocate a TTY.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Detach from the process after it has started execution.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Exec-specific id for the process.
    #[arg(long, required = true)]
    pub exec_id: String,
    /// Directory used for storing IO FIFOs.
    #[arg(long)]
    pub fifo_dir: Option<String>,
    /// Log URI for the process's output.
    #[arg(long)]
    pub log_uri: Option<String>,
    /// User id or name.
    #[arg(long)]
    pub user: Option<String>,
    /// Container id.
    pub id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs the process.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    if args.log_uri.is_some() && args.fifo_dir.is_some() {
        bail!("can't use log-uri with fifo-dir");
    }
    let c = tasks::container(client, &args.id).await?;
    let mut spec = spec::from_any(c.spec.as_ref())?;
    if let Some(user) = args.user.as_deref().filter(|u| !u.is_empty()) {
        let accounts = if !c.snapshot_key.is_empty() {
            read_accounts(client, &c.snapshotter, &c.snapshot_key).await?
        } else {
            Accounts::read(std::path::Path::new(
                spec["root"]["path"].as_str().unwrap_or("/"),
            ))
        };
        spec::with_user(&mut spec, user, &accounts)?;
    }
    let mut process = spec["process"].take();
    process["terminal"] = json!(args.tty);
    process["args"] = json!(args.args);
    if let Some(cwd) = args.cwd.as_deref().filter(|c| !c.is_empty()) {
        process["cwd"] = json!(cwd);
    }
    tasks::get(client, &args.id, "").await?;

    let io = IoFlags {
        null_io: false,
        log_uri: args.log_uri.clone(),
        fifo_dir: args.fifo_dir.clone(),
    };
    let _raw = if args.tty {
        Some(RawTerminal::enable()?)
    } else {
        None
    };
    let fifos = io.fifos(&args.exec_id, args.tty)?;
    let mut attached = Attached::start(&fifos);
    let object = tasks::task_object(&args.id, &args.exec_id);
    let exec = client
        .tasks()
        .exec(client.req(ExecProcessRequest {
            container_id: args.id.clone(),
            stdin: fifos.stdin.clone(),
            stdout: fifos.stdout.clone(),
            stderr: fifos.stderr.clone(),
            terminal: args.tty,
            spec: Some(prost_types::Any {
                type_url: PROCESS_TYPE_URL.to_owned(),
                value: serde_json::to_vec(&process)?,
            }),
            exec_id: args.exec_id.clone(),
        }))
        .await
        .rpc(client, "exec", object);
    if let Err(err) = exec {
        fifos.remove();
        return Err(err);
    }
    tasks::close_stdin_on_eof(client, &args.id, &args.exec_id, &mut attached);
    let wait = tasks::spawn_wait(client, &args.id, &args.exec_id);
    if let Err(err) = tasks::start(client, &args.id, &args.exec_id).await {
        wait.abort();
        if !args.detach {
            let _ = tasks::delete_process(client, &args.id, &args.exec_id, false).await;
            fifos.remove();
        }
        return Err(err);
    }
    if args.detach {
        wait.abort();
        return Ok(());
    }
    let code = tasks::wait_exit(client, &args.id, &args.exec_id, wait, attached, args.tty).await;
    // ctr defers process.Delete and ignores its error.
    let _ = tasks::delete_process(client, &args.id, &args.exec_id, false).await;
    fifos.remove();
    ExitStatus::result(code?)
}
