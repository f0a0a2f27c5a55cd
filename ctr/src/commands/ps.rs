//! `berth ps [--all] [-q] [--no-trunc] [--format json]`: Docker's container table (CONTAINER ID,
//! IMAGE, COMMAND, CREATED, STATUS, PORTS, NAMES, plus RESTARTS) from one Containers.List and one
//! Tasks.List.
//!
//! STATUS is Docker's: `Up 5 seconds` (the uptime read from `/proc/<pid>/stat` of the task's
//! process, berth running on the daemon's host; `Up` alone when it cannot be read), `Up … (Paused)`,
//! `Exited (0) 3 minutes ago` for a stopped task, `Created` for a created task or none (a
//! container whose task was deleted shows `Created`, as nerdctl shows it). Without `--all` only
//! running and paused containers are listed, as Docker does. NAMES is the `nerdctl/name` label or
//! the id; an id of 64 hex digits is shortened to 12 unless `--no-trunc`. PORTS reads the
//! published ports the networking part records (`berth/ports` or `nerdctl/ports`: JSON of
//! go-cni `PortMapping`s), RESTARTS the restart monitor's `containerd.io/restart.count`.
//! `--format json` prints one JSON object a line, as `docker ps --format json`.

use std::collections::HashMap;

use anyhow::Result;
use berth_proto::containerd::services::containers::v1::Container;
use berth_proto::containerd::services::tasks::v1::ListTasksRequest;
use berth_proto::containerd::v1::types::{Process, Status};
use serde_json::{json, Value};

use crate::client::{spec, volumes, Client};
use crate::error::{Object, RpcResultExt};
use crate::output::{human_duration, Table};
use crate::timefmt;

/// Container label with the restart count the restart monitor keeps.
pub const RESTART_COUNT_LABEL: &str = "containerd.io/restart.count";
/// Labels holding published ports (JSON array of go-cni `PortMapping`).
pub const PORTS_LABELS: [&str; 2] = ["berth/ports", "nerdctl/ports"];
/// nerdctl's container name label.
pub const NAME_LABEL: &str = "nerdctl/name";
/// Linux's USER_HZ: the unit of `/proc/<pid>/stat` start times.
const CLOCK_TICKS: i64 = 100;

/// Output format of `ps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Docker's table.
    #[default]
    Table,
    /// One JSON object a line.
    Json,
}

/// Flags of `ps`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show all containers (default: running ones only). Docker's `-a` is berth's global
    /// `--address` (ctr's), so this flag has no short form.
    #[arg(long)]
    pub all: bool,
    /// Only print container ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not shorten ids and commands.
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// The state of a container's task, as Docker words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    /// Docker's `State`: `running`, `paused`, `exited`, `created`.
    pub state: &'static str,
    /// Docker's `Status` text.
    pub status: String,
    pub pid: u32,
    pub exit_code: Option<u32>,
    /// When it exited (RFC 3339), for stopped tasks.
    pub finished_at: Option<String>,
    /// When it started (RFC 3339), when `/proc` tells.
    pub started_at: Option<String>,
}

/// Seconds since the epoch at which process `pid` started, from `/proc`.
fn process_start(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let ticks: i64 = rest.split(' ').nth(19)?.parse().ok()?;
    let btime: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime + ticks / CLOCK_TICKS)
}

/// Docker's state and status text of a task (`None`: the container has no task) of a container
/// created at `created` (the task cannot be older: `/proc` times are whole seconds after a
/// boot time that is one too).
pub fn task_state(task: Option<&Process>, created: Option<&prost_types::Timestamp>) -> TaskState {
    let Some(p) = task else {
        return TaskState {
            state: "created",
            status: "Created".to_owned(),
            pid: 0,
            exit_code: None,
            finished_at: None,
            started_at: None,
        };
    };
    let now = timefmt::now().0;
    let started = (p.pid != 0)
        .then(|| process_start(p.pid))
        .flatten()
        .map(|t| match created {
            Some(c) if c.seconds > t => c.seconds,
            _ => t,
        });
    let up = match started {
        Some(t) => format!("Up {}", human_duration(now - t)),
        None => "Up".to_owned(),
    };
    let (state, status) = match Status::try_from(p.status).unwrap_or(Status::Unknown) {
        Status::Running => ("running", up),
        Status::Paused | Status::Pausing => ("paused", format!("{up} (Paused)")),
        Status::Stopped => {
            let ago = timefmt::age_secs(p.exited_at.as_ref());
            (
                "exited",
                format!("Exited ({}) {} ago", p.exit_status, human_duration(ago)),
            )
        }
        Status::Created => ("created", "Created".to_owned()),
        Status::Unknown => ("unknown", "Unknown".to_owned()),
    };
    let stopped = state == "exited";
    TaskState {
        state,
        status,
        pid: if stopped { 0 } else { p.pid },
        exit_code: stopped.then_some(p.exit_status),
        finished_at: stopped.then(|| timefmt::timestamp(p.exited_at.as_ref())),
        started_at: started.map(timefmt::rfc3339),
    }
}

/// Every task of the namespace by container id (Tasks.List, one call).
pub async fn list_tasks(client: &Client) -> Result<HashMap<String, Process>> {
    Ok(client
        .tasks()
        .list(client.req(ListTasksRequest::default()))
        .await
        .rpc(client, "list", Object::kind("tasks"))?
        .into_inner()
        .tasks
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect())
}

/// The process args of a container's spec.
pub fn command_args(c: &Container) -> Vec<String> {
    spec::from_any(c.spec.as_ref())
        .map(|s| spec::strings(&s["process"]["args"]))
        .unwrap_or_default()
}

/// The published ports a container's labels record, as Docker prints them
/// (`127.0.0.1:8080->80/tcp`).
pub fn ports(labels: &HashMap<String, String>) -> Vec<String> {
    let Some(list) = PORTS_LABELS
        .iter()
        .find_map(|k| labels.get(*k))
        .and_then(|t| serde_json::from_str::<Vec<Value>>(t).ok())
    else {
        return Vec::new();
    };
    list.iter()
        .map(|p| {
            let host_ip = p["HostIP"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("0.0.0.0");
            let proto = p["Protocol"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("tcp");
            format!(
                "{host_ip}:{}->{}/{}",
                p["HostPort"],
                p["ContainerPort"],
                proto.to_ascii_lowercase()
            )
        })
        .collect()
}

/// The container's name: `nerdctl/name`, else its id.
pub fn name(c: &Container) -> String {
    c.labels
        .get(NAME_LABEL)
        .cloned()
        .unwrap_or_else(|| c.id.clone())
}

/// The restart count the restart monitor recorded.
pub fn restarts(c: &Container) -> u64 {
    c.labels
        .get(RESTART_COUNT_LABEL)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn short_id(id: &str, no_trunc: bool) -> String {
    if !no_trunc && id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        id[..12].to_owned()
    } else {
        id.to_owned()
    }
}

/// Docker's `Ellipsis(command, 20)` then `strconv.Quote`.
fn command_column(args: &[String], no_trunc: bool) -> String {
    let command = args.join(" ");
    let shown = if !no_trunc && command.chars().count() > 20 {
        let mut s: String = command.chars().take(19).collect();
        s.push('…');
        s
    } else {
        command
    };
    serde_json::to_string(&shown).unwrap_or_default()
}

/// Lists the containers.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let mut containers = volumes::list_containers(client).await?;
    let tasks = list_tasks(client).await?;
    // Newest first, as Docker lists them.
    containers.sort_by_key(|c| {
        std::cmp::Reverse(
            c.created_at
                .as_ref()
                .map(|t| (t.seconds, t.nanos))
                .unwrap_or_default(),
        )
    });
    let mut table = Table::new(&[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
        "RESTARTS",
    ]);
    let mut out = String::new();
    for c in &containers {
        let state = task_state(tasks.get(&c.id), c.created_at.as_ref());
        if !args.all && !matches!(state.state, "running" | "paused") {
            continue;
        }
        let id = short_id(&c.id, args.no_trunc);
        let created = format!(
            "{} ago",
            human_duration(timefmt::age_secs(c.created_at.as_ref()))
        );
        let ports = ports(&c.labels).join(", ");
        if args.quiet {
            out.push_str(&id);
            out.push('\n');
            continue;
        }
        match args.format {
            Format::Table => table.row(vec![
                id,
                c.image.clone(),
                command_column(&command_args(c), args.no_trunc),
                created,
                state.status.clone(),
                ports,
                name(c),
                restarts(c).to_string(),
            ]),
            Format::Json => {
                let mounts: Vec<String> = volumes::recorded_mounts(&c.labels)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|m| if m.name.is_empty() { m.source } else { m.name })
                    .collect();
                let line = json!({
                    "ID": id,
                    "Image": c.image,
                    "Command": command_column(&command_args(c), args.no_trunc),
                    "CreatedAt": timefmt::timestamp(c.created_at.as_ref()),
                    "RunningFor": created,
                    "State": state.state,
                    "Status": state.status,
                    "Ports": ports,
                    "Names": name(c),
                    "Mounts": mounts.join(","),
                    "Labels": crate::output::sorted_labels(&c.labels).join(","),
                    "Restarts": restarts(c),
                });
                out.push_str(&line.to_string());
                out.push('\n');
            }
        }
    }
    if !args.quiet && args.format == Format::Table {
        out = table.render();
    }
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_read_like_docker() {
        let args: Vec<String> = ["sh", "-c", "sleep 1000; echo done"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(command_column(&args, false), "\"sh -c sleep 1000; e…\"");
        assert_eq!(command_column(&args[..1], false), "\"sh\"");
        let hex = "a".repeat(64);
        assert_eq!(short_id(&hex, false), "a".repeat(12));
        assert_eq!(short_id("web", false), "web");
        let labels = HashMap::from([(
            "nerdctl/ports".to_owned(),
            r#"[{"HostPort":18080,"ContainerPort":80,"Protocol":"tcp","HostIP":"127.0.0.1"}]"#
                .to_owned(),
        )]);
        assert_eq!(ports(&labels), ["127.0.0.1:18080->80/tcp"]);
    }

    #[test]
    fn flags_do_not_clash_with_the_globals() {
        use clap::CommandFactory as _;
        crate::cli::Cli::command().debug_assert();
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(["berth", "ps", "--all", "-q"])
            .unwrap();
        assert!(matches!(cli.command, crate::commands::Command::Ps(_)));
    }

    #[test]
    fn states_read_like_docker() {
        assert_eq!(task_state(None, None).status, "Created");
        let p = Process {
            status: Status::Stopped as i32,
            exit_status: 3,
            exited_at: Some(prost_types::Timestamp {
                seconds: timefmt::now().0 - 180,
                nanos: 0,
            }),
            ..Default::default()
        };
        let s = task_state(Some(&p), None);
        assert_eq!(s.status, "Exited (3) 3 minutes ago");
        assert_eq!(s.state, "exited");
        let me = Process {
            status: Status::Running as i32,
            pid: std::process::id(),
            ..Default::default()
        };
        let up = task_state(Some(&me), None);
        assert!(up.status.starts_with("Up "), "{up:?}");
        // Never older than its container.
        let now = timefmt::now().0;
        let created = prost_types::Timestamp {
            seconds: now + 3600,
            nanos: 0,
        };
        let up = task_state(Some(&me), Some(&created));
        assert_eq!(up.started_at, Some(timefmt::rfc3339(now + 3600)));
    }
}
