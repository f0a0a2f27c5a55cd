//! Scale: many running containers, their shims' memory, list latencies, and the time a restarted
//! daemon takes to answer Tasks.List again (issue 20, part 5).
//!
//! The section starts a Berth and a containerd daemon of its own (it crashes and restarts them),
//! imports the busybox image into both and starts N `sleep` containers on each through `ctr`,
//! several at once. With both fleets running it reads the shims' PSS and the daemons' RSS, times
//! Containers.List and Tasks.List (the median of several calls per run), and then, alternating,
//! SIGKILLs each daemon and times from the new process's spawn until Tasks.List lists all N
//! running. Both daemons keep their shims across a crash. The containers go at the end, in
//! batches; whatever a failure leaves is killed through the shims' processes.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_proto::containerd::services::containers::v1::ListContainersRequest;
use berth_proto::containerd::services::tasks::v1::tasks_client::TasksClient;
use berth_proto::containerd::services::tasks::v1::ListTasksRequest;
use berth_proto::containerd::v1::types::Status as TaskStatus;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use tonic::transport::Channel;

use super::procfs;
use super::report::{def, MetricDef, Report, Target};
use super::servers::{Kind, Server};
use super::stats::Summary;
use super::SectionCx;
use crate::grpc::{channel_at, namespaced};

/// This section's rows, in table order.
pub const METRICS: &[MetricDef] = &[
    def(
        "scale_containers",
        "scale: running sleep containers per daemon",
        "count",
        Target::None,
    ),
    def(
        "scale_start_s",
        "scale: start them (8 ctr run -d at once), wall time",
        "s",
        Target::None,
    ),
    def(
        "scale_shim_processes",
        "scale: shim processes",
        "count",
        Target::None,
    ),
    def(
        "scale_shim_pss_sum_mib",
        "scale: shim PSS, total",
        "MiB",
        Target::Lower,
    ),
    def(
        "scale_daemon_rss_mib",
        "scale: daemon RSS with them running",
        "MiB",
        Target::Lower,
    ),
    def(
        "scale_containers_list_ms",
        "scale: Containers.List latency (median call)",
        "ms",
        Target::Lower,
    ),
    def(
        "scale_tasks_list_ms",
        "scale: Tasks.List latency (median call)",
        "ms",
        Target::Lower,
    ),
    def(
        "scale_restart_ready_ms",
        "scale: SIGKILL + restart until Tasks.List has all running",
        "ms",
        Target::RatioAtMost(0.5),
    ),
    def(
        "scale_daemon_rss_restarted_mib",
        "scale: daemon RSS after the restart",
        "MiB",
        Target::None,
    ),
];

/// Containers per daemon in a full run (the figure).
const FULL_CONTAINERS: usize = 1000;
/// Overrides the number of containers per daemon of a full run (for a quicker look).
const CONTAINERS_ENV: &str = "BERTH_BENCH_SCALE_CONTAINERS";
/// Containers per daemon with `--quick`.
const QUICK_CONTAINERS: usize = 3;
/// Memory one container costs on the two daemons together, for sizing N: the two shims' PSS
/// (2.5 MiB for containerd's, 0.7 MiB for Berth's, measured at 200 each), then the `sleep`, its
/// cgroups, overlay mount and runc state, and the daemons' own growth; 8 MiB per pair leaves room.
const MIB_PER_PAIR: u64 = 8;
/// Kernel tasks (threads) one container costs on both daemons together: containerd's Go shim
/// runs about ten threads, Berth's shim a few, each container one `sleep`; with margin.
const THREADS_PER_PAIR: u64 = 16;
/// `ctr` commands running at once while containers start and go.
const LANES: usize = 8;
/// Container ids per `ctr tasks rm -f` / `ctr containers rm` while cleaning up.
const BATCH: usize = 50;
/// List calls per run; the median is the run's figure.
const LIST_CALLS: usize = 10;
/// How long the shims may settle after the last start before memory is read.
const SETTLE: Duration = Duration::from_secs(2);
/// How long a restarted daemon may take to list every task running.
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a restarting daemon is polled.
const POLL: Duration = Duration::from_millis(5);

/// KiB → MiB.
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The `key:` figure of `/proc/meminfo` in KiB.
fn meminfo_kib(key: &str) -> Result<u64> {
    let text = fs::read_to_string("/proc/meminfo").context("read /proc/meminfo")?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key} in /proc/meminfo"))
}

/// Threads on the host now (the 4th field of `/proc/loadavg` is `running/total`).
fn host_threads() -> Result<u64> {
    let text = fs::read_to_string("/proc/loadavg").context("read /proc/loadavg")?;
    text.split_whitespace()
        .nth(3)
        .and_then(|f| f.split_once('/')?.1.parse().ok())
        .context("malformed /proc/loadavg")
}

/// How many containers each daemon runs, and why that many: the 1,000 unless free memory
/// or the kernel's pid limit allows fewer for both daemons at once (half of each is left for
/// everything else on the host).
fn size(quick: bool) -> Result<(usize, String)> {
    if quick {
        return Ok((QUICK_CONTAINERS, "--quick".to_owned()));
    }
    if let Ok(n) = std::env::var(CONTAINERS_ENV) {
        let n = n
            .parse()
            .with_context(|| format!("{CONTAINERS_ENV}={n:?} is not a count"))?;
        ensure!(n > 0, "{CONTAINERS_ENV} must be at least 1");
        return Ok((n, format!("set by {CONTAINERS_ENV}")));
    }
    let available_mib = meminfo_kib("MemAvailable")? / 1024;
    let by_memory = available_mib / 2 / MIB_PER_PAIR;
    let pid_max: u64 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .context("read pid_max")?
        .trim()
        .parse()
        .context("parse pid_max")?;
    let by_pids = pid_max.saturating_sub(host_threads()?) / 2 / THREADS_PER_PAIR;
    let n = usize::try_from(by_memory.min(by_pids))
        .unwrap_or(usize::MAX)
        .min(FULL_CONTAINERS);
    let why = if n == FULL_CONTAINERS {
        format!(
            "the issue's figure; {available_mib} MiB available allows {by_memory}, pid_max {pid_max} allows {by_pids}"
        )
    } else {
        format!(
            "scaled down from {FULL_CONTAINERS}: {available_mib} MiB available allows {by_memory} \
             at {MIB_PER_PAIR} MiB per pair, pid_max {pid_max} allows {by_pids}"
        )
    };
    ensure!(n > 0, "no room for any container: {why}");
    Ok((n, why))
}

/// Runs `job` on every item of `items`, [`LANES`] at a time; the first error wins.
fn each_in_lanes<T: Sync>(items: &[T], job: impl Fn(&T) -> Result<()> + Sync) -> Result<()> {
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(None::<anyhow::Error>);
    thread::scope(|scope| {
        for _ in 0..LANES {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { return };
                if let Err(e) = job(item) {
                    // Stop handing out work; the other lanes finish their current item.
                    next.store(items.len(), Ordering::Relaxed);
                    failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e);
                    return;
                }
            });
        }
    });
    match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One daemon of this section and its containers.
struct Fleet {
    server: Server,
    ids: Vec<String>,
}

impl Fleet {
    /// Starts the daemon under `dir`, imports the image and runs `n` sleeping containers.
    /// Returns the fleet and the wall time the starts took.
    fn start(cx: &SectionCx<'_>, kind: Kind, n: usize) -> Result<(Fleet, f64)> {
        let server = Server::start(kind, cx.bins, cx.scratch.join(kind.name()))?;
        let archive = cx.image_archive.to_string_lossy();
        server.ctr_ok(cx.namespace, &["images", "import", &archive])?;
        let mut fleet = Fleet {
            server,
            ids: Vec::new(),
        };
        let ids: Vec<String> = (0..n).map(|i| format!("scale-{kind}-{i:04}")).collect();
        let started = Instant::now();
        let created = Mutex::new(Vec::new());
        let result = each_in_lanes(&ids, |id| {
            let out = fleet
                .server
                .ctr(cx.namespace, &["run", "-d", cx.image, id, "sleep", "3600"]);
            // A failed run may still have left its container for the clean-up.
            created
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(id.clone());
            ensure!(out.success(), "{out}\n{}", fleet.server.log_tail());
            Ok(())
        });
        fleet.ids = created.into_inner().unwrap_or_else(|e| e.into_inner());
        fleet.ids.sort();
        let elapsed = started.elapsed().as_secs_f64();
        result.with_context(|| format!("start {n} containers on {kind}"))?;
        Ok((fleet, elapsed))
    }

    fn kind(&self) -> Kind {
        self.server.kind()
    }

    /// Removes every container (tasks killed and deleted first), in batches, several at once;
    /// whatever stays is killed through the shims.
    fn remove(&mut self, namespace: &str) -> Result<()> {
        let batches: Vec<Vec<String>> = self.ids.chunks(BATCH).map(<[String]>::to_vec).collect();
        let server = &self.server;
        let removed = each_in_lanes(&batches, |batch| {
            let ids: Vec<&str> = batch.iter().map(String::as_str).collect();
            // Tasks of failed starts may not exist: their error is not the clean-up's.
            let _ = server.ctr(namespace, &[&["tasks", "rm", "-f"], &ids[..]].concat());
            server
                .ctr_ok(namespace, &[&["containers", "rm"], &ids[..]].concat())
                .map(drop)
        });
        if removed.is_ok() {
            self.ids.clear();
        }
        removed
    }
}

impl Drop for Fleet {
    /// Containers still listed (a failure cut the section short) go the hard way: every shim of
    /// this daemon is SIGKILLed with its children (the containers' processes). The mounts and
    /// directories go with the scratch space.
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let shims = procfs::shim_pids(self.kind().shim(), self.server.address());
        for pid in shims
            .iter()
            .flat_map(|&shim| children(shim).into_iter().chain([shim]))
        {
            if let Ok(pid) = i32::try_from(pid) {
                // Each may have exited meanwhile.
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// The children of `pid` (`/proc/<pid>/task/*/children`).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The shims' PSS sum (MiB) and how many there are.
fn shim_pss(server: &Server) -> Result<(f64, usize)> {
    let pids = procfs::shim_pids(server.kind().shim(), server.address());
    ensure!(!pids.is_empty(), "no {} found", server.kind().shim());
    let mut sum = 0.0;
    for &pid in &pids {
        sum += mib(procfs::pss_kib(pid)?);
    }
    Ok((sum, pids.len()))
}

/// Tasks.List in `namespace`: how many tasks are listed and how many of them run.
async fn list_tasks(channel: &Channel, namespace: &str) -> Result<(usize, usize)> {
    let listed = TasksClient::new(channel.clone())
        .list(namespaced(namespace, ListTasksRequest::default()))
        .await
        .map_err(|s| anyhow!("Tasks.List: {s}"))?
        .into_inner()
        .tasks;
    let running = listed
        .iter()
        .filter(|t| t.status == TaskStatus::Running as i32)
        .count();
    Ok((listed.len(), running))
}

/// The median latency (ms) of [`LIST_CALLS`] Containers.List and Tasks.List calls, each checked
/// to list all `n`.
async fn list_latencies(address: &Path, namespace: &str, n: usize) -> Result<(f64, f64)> {
    let channel = channel_at(address).await;
    let mut containers = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..LIST_CALLS {
        let t = Instant::now();
        let listed = ContainersClient::new(channel.clone())
            .list(namespaced(namespace, ListContainersRequest::default()))
            .await
            .map_err(|s| anyhow!("Containers.List: {s}"))?
            .into_inner()
            .containers
            .len();
        containers.push(t.elapsed().as_secs_f64() * 1e3);
        ensure!(listed == n, "Containers.List listed {listed}, expected {n}");
        let t = Instant::now();
        let (listed, running) = list_tasks(&channel, namespace).await?;
        tasks.push(t.elapsed().as_secs_f64() * 1e3);
        ensure!(
            listed == n && running == n,
            "Tasks.List listed {listed} ({running} running), expected {n} running"
        );
    }
    let median = |v: &[f64]| Summary::of(v).map_or(f64::NAN, |s| s.median);
    Ok((median(&containers), median(&tasks)))
}

/// Crashes the daemon (SIGKILL), starts it again and returns the milliseconds from the new
/// process's spawn until Tasks.List lists all `n` tasks running.
async fn restart_to_ready(server: &mut Server, namespace: &str, n: usize) -> Result<f64> {
    let spawned = server.crash_and_respawn()?;
    let deadline = spawned + READY_TIMEOUT;
    let mut last = String::from("the socket never accepted");
    loop {
        ensure!(
            Instant::now() < deadline,
            "{} not ready {READY_TIMEOUT:?} after the restart: {last}\n{}",
            server.kind(),
            server.log_tail()
        );
        // A connect refused (the stale socket of the killed daemon) means not serving yet.
        if UnixStream::connect(server.address()).is_ok() {
            let channel = channel_at(server.address()).await;
            loop {
                match list_tasks(&channel, namespace).await {
                    Ok((listed, running)) if listed == n && running == n => {
                        return Ok(spawned.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok((listed, running)) => last = format!("{listed} listed, {running} running"),
                    Err(e) => last = format!("{e:#}"),
                }
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Samples of every row, per daemon.
#[derive(Default)]
struct Samples {
    containers_list: Vec<f64>,
    tasks_list: Vec<f64>,
    restart: Vec<f64>,
}

/// A metric id and the samples of a [`Samples`] it reports.
type SampleRow = (&'static str, fn(&Samples) -> &Vec<f64>);

/// Runs the section's measurements into `report`.
pub(crate) fn measure(report: &mut Report, cx: &SectionCx<'_>) -> Result<()> {
    let (n, why) = size(cx.quick)?;
    super::progress(&format!("scale: {n} containers per daemon ({why})"));
    report.context.insert(
        "scale".into(),
        json!({ "containers": n, "why": why, "lanes": LANES, "list_calls": LIST_CALLS }),
    );
    let mut fleets = Vec::new();
    let measured = (|| -> Result<()> {
        for kind in Kind::BOTH {
            let (fleet, secs) = Fleet::start(cx, kind, n)?;
            super::progress(&format!("scale: {n} containers on {kind} in {secs:.1} s"));
            fleets.push((fleet, secs));
        }
        thread::sleep(SETTLE);
        measure_fleets(report, cx, &mut fleets, n)
    })();
    let mut removed = Ok(());
    for (fleet, _) in &mut fleets {
        let started = Instant::now();
        let r = fleet.remove(cx.namespace);
        super::progress(&format!(
            "scale: removed {} containers in {:.1} s",
            fleet.kind(),
            started.elapsed().as_secs_f64()
        ));
        removed = removed.and(r);
    }
    measured?;
    removed.context("remove the scale containers")
}

/// Everything measured while both fleets run.
fn measure_fleets(
    report: &mut Report,
    cx: &SectionCx<'_>,
    fleets: &mut [(Fleet, f64)],
    n: usize,
) -> Result<()> {
    let [(b, b_secs), (c, c_secs)] = fleets else {
        bail!("the section needs both daemons");
    };
    let (b_pss, b_procs) = shim_pss(&b.server)?;
    let (c_pss, c_procs) = shim_pss(&c.server)?;
    let rss = |s: &Server| -> Result<f64> { Ok(mib(procfs::rss_kib(s.pid()?)?)) };
    let once: [(&'static str, f64, f64); 5] = [
        ("scale_containers", n as f64, n as f64),
        ("scale_start_s", *b_secs, *c_secs),
        ("scale_shim_processes", b_procs as f64, c_procs as f64),
        ("scale_shim_pss_sum_mib", b_pss, c_pss),
        ("scale_daemon_rss_mib", rss(&b.server)?, rss(&c.server)?),
    ];
    for (id, berth, containerd) in once {
        report.set(id, Summary::one(berth), Summary::one(containerd));
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the client runtime")?;
    let mut samples = [Samples::default(), Samples::default()];
    let mut servers = [&mut b.server, &mut c.server];
    rt.block_on(async {
        for _ in 0..cx.runs {
            for (server, s) in servers.iter().zip(samples.iter_mut()) {
                let (containers, tasks) =
                    list_latencies(server.address(), cx.namespace, n)
                        .await
                        .with_context(|| format!("list latencies on {}", server.kind()))?;
                s.containers_list.push(containers);
                s.tasks_list.push(tasks);
            }
        }
        for run in 0..cx.runs {
            for (server, s) in servers.iter_mut().zip(samples.iter_mut()) {
                let ms = restart_to_ready(server, cx.namespace, n).await?;
                super::progress(&format!(
                    "scale: run {}: {} restart to ready in {ms:.0} ms",
                    run + 1,
                    server.kind()
                ));
                s.restart.push(ms);
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let timed: [SampleRow; 3] = [
        ("scale_containers_list_ms", |s| &s.containers_list),
        ("scale_tasks_list_ms", |s| &s.tasks_list),
        ("scale_restart_ready_ms", |s| &s.restart),
    ];
    for (id, f) in timed {
        report.set(id, Summary::of(f(&samples[0])), Summary::of(f(&samples[1])));
    }
    report.set(
        "scale_daemon_rss_restarted_mib",
        Summary::one(rss(&b.server)?),
        Summary::one(rss(&c.server)?),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_figures_parse() {
        assert!(meminfo_kib("MemAvailable").unwrap() > 0);
        assert!(host_threads().unwrap() > 0);
        assert_eq!(size(true).unwrap().0, QUICK_CONTAINERS);
    }

    #[test]
    fn lanes_run_every_item_and_report_a_failure() {
        let seen = Mutex::new(Vec::new());
        let items: Vec<usize> = (0..20).collect();
        each_in_lanes(&items, |&i| {
            seen.lock().unwrap().push(i);
            Ok(())
        })
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort_unstable();
        assert_eq!(seen, items);
        let err = each_in_lanes(&items, |&i| {
            ensure!(i != 7, "item {i}");
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "item 7");
    }
}
