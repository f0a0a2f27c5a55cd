//! `berth run [flags] IMAGE|ROOTFS ID [COMMAND] [ARG...]`: create a container from an image (or
//! a host directory with `--rootfs`) and run its task, as ctr's `commands/run` does.
//!
//! Call sequence (CONFORMANCE §8): Images.Get → Namespaces.Get → manifest/config reads →
//! Snapshots.Stat(top chain) (unpack when missing) → Leases.Create → Prepare(ID, top chain) →
//! Mounts + a local read-only temp mount to read `/etc/passwd` and `/etc/group` →
//! Containers.Create → Leases.Delete → client FIFOs → Containers.Get, Mounts → Tasks.Create →
//! Wait ∥ Start → Tasks.Get (stopped) → Tasks.Delete → with `--rm` Containers.Get,
//! Snapshots.Remove, Containers.Delete. `-d` returns after Start. The exit status of `berth run`
//! is the container's.

mod container;
mod network;
mod restart;
mod volumes;

use anyhow::{bail, Result};

pub use container::{new_container, read_accounts, ref_and_id, ContainerFlags, NewContainer};

use crate::client::io::{Attached, FifoSet, RawTerminal};
use crate::client::{tasks, Client};
use crate::error::ExitStatus;

/// How a task's stdio is wired (`--null-io`, `--log-uri`, `--fifo-dir`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct IoFlags {
    /// Send all IO to /dev/null.
    #[arg(long)]
    pub null_io: bool,
    /// Log URI for the process's stdout and stderr (`file:///path`, `binary:///path`).
    #[arg(long)]
    pub log_uri: Option<String>,
    /// Directory used for storing IO FIFOs (default /run/containerd/fifo).
    #[arg(long)]
    pub fifo_dir: Option<String>,
}

impl IoFlags {
    /// The FIFO set for a process of container `id` (`cio.NewCreator` / `NullIO` / `LogURI`).
    pub fn fifos(&self, id: &str, terminal: bool) -> Result<FifoSet> {
        if terminal && self.null_io {
            bail!("tty and null-io cannot be used together");
        }
        if self.null_io {
            return Ok(FifoSet::default());
        }
        if let Some(uri) = self.log_uri.as_deref().filter(|u| !u.is_empty()) {
            if terminal {
                bail!("can't use log-uri with tty");
            }
            if !uri.contains("://") {
                bail!("invalid log-uri {uri:?}: want file:///path or binary:///path");
            }
            return Ok(FifoSet {
                stdout: uri.to_owned(),
                stderr: uri.to_owned(),
                ..Default::default()
            });
        }
        FifoSet::create(self.fifo_dir.as_deref(), id, terminal)
    }
}

/// Flags and arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remove the container after running (cannot be used with --detach).
    #[arg(long)]
    pub rm: bool,
    /// Detach from the task after it has started execution (cannot be used with --rm).
    #[arg(short = 'd', long)]
    pub detach: bool,
    #[command(flatten)]
    pub io: IoFlags,
    #[command(flatten)]
    pub restart_log: restart::RestartLogFlags,
    #[command(flatten)]
    pub container: ContainerFlags,
    #[command(flatten)]
    pub network: network::NetFlags,
    /// Image reference (or, with --rootfs, a host directory; with --config, the container id).
    #[arg(value_name = "IMAGE|ROOTFS")]
    pub image: String,
    /// Container id.
    pub id: Option<String>,
    /// Command and arguments (default: the image's entrypoint and cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs a container.
pub async fn run(client: &Client, mut args: Args) -> Result<()> {
    let (image, id) = ref_and_id(&args.container, &args.image, args.id.as_deref())?;
    let (image, id) = (image.to_owned(), id.to_owned());
    if args.rm && args.detach {
        bail!("flags --detach and --rm cannot be specified together");
    }
    // Restart and log flags: checked before anything is made.
    let plan = restart::plan(
        client,
        &args.restart_log,
        &args.io,
        &id,
        args.detach,
        args.rm,
        args.container.tty,
    )
    .await?;
    plan.apply(&mut args.io, &mut args.container.labels);
    // The network: checked (ports free) before anything is made; the hooks do the rest.
    let net = network::plan(client, &args.network, &args.container, &image).await?;
    args.container.labels.extend(net.labels);
    args.container.oci_hooks = net.hooks;
    args.container.net_host |= net.host;
    let mut made = new_container(client, &args.container, &image, &id, &args.args).await?;
    // The temporary lease goes while the task is created (ctr keeps it until it exits and
    // ignores a failure to delete it; a failure here is reported, not fatal).
    let release = NewContainer::release_lease(made.lease.take());
    let task = start_task(
        client,
        &id,
        &args.io,
        StartOpts {
            tty: args.container.tty,
            detach: args.detach,
            no_pivot: args.container.no_pivot,
            pid_file: args.container.pid_file.as_deref(),
        },
        Some(tasks::Known {
            container: &made.container,
            rootfs: made.rootfs.clone(),
        }),
    );
    let (result, released) = tokio::join!(task, release);
    if let Err(err) = released {
        eprintln!(
            "berth: cannot delete the temporary lease: {}",
            crate::error::render(&err)
        );
    }
    if plan.restart && result.is_ok() {
        crate::client::restart::mark_started(client, &id).await?;
    }
    if args.rm && !args.detach {
        let deleted = match container::delete_with_snapshot(client, &made.container).await {
            // Docker's `--rm` takes the container's anonymous volumes along.
            Ok(()) => volumes::remove_anonymous(client, &made.container.labels).await,
            Err(err) => Err(err),
        };
        if let Err(err) = deleted {
            match &result {
                Ok(()) => return Err(err),
                Err(_) => eprintln!("berth: {}", crate::error::render(&err)),
            }
        }
    }
    result
}

/// How [`start_task`] runs the task.
#[derive(Debug, Clone, Copy)]
pub struct StartOpts<'a> {
    pub tty: bool,
    pub detach: bool,
    pub no_pivot: bool,
    pub pid_file: Option<&'a str>,
}

/// Creates the task of container `id` and runs it (ctr's `tasks.NewTask` + Wait/Start), shared
/// by `run` and `tasks start`. Unless `detach`, waits for the exit, deletes the task and returns
/// [`ExitStatus`] for a non-zero status.
pub async fn start_task(
    client: &Client,
    id: &str,
    io: &IoFlags,
    opts: StartOpts<'_>,
    known: Option<tasks::Known<'_>>,
) -> Result<()> {
    let StartOpts {
        tty,
        detach,
        no_pivot,
        pid_file,
    } = opts;
    let _raw = if tty {
        Some(RawTerminal::enable()?)
    } else {
        None
    };
    let fifos = io.fifos(id, tty)?;
    let mut attached = Attached::start(&fifos);
    let pid = match tasks::create(client, id, &fifos, no_pivot, known).await {
        Ok(pid) => pid,
        Err(err) => {
            fifos.remove();
            return Err(err);
        }
    };
    tasks::close_stdin_on_eof(client, id, "", &mut attached);
    let wait = (!detach).then(|| tasks::spawn_wait(client, id, ""));
    let started = async {
        if let Some(path) = pid_file {
            std::fs::write(path, pid.to_string())
                .map_err(|e| anyhow::anyhow!("cannot write the pid file {path}: {e}"))?;
        }
        tasks::start(client, id, "").await
    }
    .await;
    let Some(wait) = wait else {
        return started.map(|_| ());
    };
    let outcome = match started {
        Ok(_) => tasks::wait_exit(client, id, "", wait, attached, tty).await,
        Err(err) => {
            wait.abort();
            Err(err)
        }
    };
    // ctr defers task.Delete; a failed delete after a good run is the command's error. After
    // a Wait that answered, the task is known to have exited: no Tasks.Get to check it.
    let deleted = match &outcome {
        Ok(_) => tasks::delete_exited(client, id).await,
        Err(_) => tasks::delete(client, id, false).await,
    };
    fifos.remove();
    let code = match (outcome, deleted) {
        (Ok(code), Ok(_)) => code,
        (Ok(_), Err(err)) => return Err(err),
        (Err(err), _) => return Err(err),
    };
    ExitStatus::result(code)
}
