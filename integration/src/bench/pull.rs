//! Registry pulls: `berth images pull` against `ctr images pull` on containerd, from a local
//! registry over plain HTTP (issue 20, part 3).
//!
//! A private `docker-registry` gets the large three-layer image once (imported into containerd
//! and pushed with `ctr images push`). Each run then starts a fresh daemon root for each side,
//! alternating (berth, containerd, berth, ...), and times one pull that fetches and unpacks
//! (`ctr images pull --plain-http` unpacks by default, as `berth images pull` does). A fresh
//! root per run means no blob or snapshot is already there (both daemons share content across
//! namespaces, so a fresh namespace alone would not do), and the daemon's `VmHWM` after the
//! pull is the peak resident memory of a daemon that did nothing but this pull. Roots are kept
//! until the benchmark ends, as in the unpack section (ext4 is slow right after bulk deletes).
//!
//! Besides the wall time, each run records the CPU time of the daemon (`/proc/<pid>/stat`) and
//! of the client (`RUSAGE_CHILDREN` around the command): the breakdown of where a pull's time
//! goes on a 2-core host.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use nix::sys::resource::{getrusage, UsageWho};

use super::fixtures::{build_big_image, BigImage};
use super::procfs;
use super::report::{def, MetricDef, Report, Target};
use super::servers::{Kind, Server, COMMAND_TIMEOUT};
use super::stats::Summary;
use super::SectionCx;
use crate::command::run_with_timeout;
use crate::registry::{Registry, REGISTRY_BIN};

/// This section's rows, in table order.
pub const METRICS: &[MetricDef] = &[
    def(
        "pull_mb_per_s",
        "registry pull + unpack throughput (uncompressed)",
        "MB/s",
        Target::RatioAtLeast(2.0),
    ),
    def("pull_s", "registry pull + unpack time", "s", Target::None),
    def(
        "pull_daemon_peak_rss_mib",
        "registry pull: peak daemon RSS (VmHWM)",
        "MiB",
        Target::None,
    ),
    def(
        "pull_daemon_cpu_s",
        "registry pull: daemon CPU (user + sys)",
        "s",
        Target::None,
    ),
    def(
        "pull_client_cpu_s",
        "registry pull: client CPU (berth / ctr)",
        "s",
        Target::None,
    ),
];

/// The image's name in the source daemon and its reference in the registry.
const SOURCE_NAME: &str = "docker.io/library/berth-bench-pull:latest";
const REPOSITORY: &str = "bench/pull";
/// Bytes of file content of the image: the 200 MB, or a token size for `--quick`.
const FULL_BYTES: u64 = 200_000_000;
const QUICK_BYTES: u64 = 5_000_000;

/// One pull's figures.
#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    peak_rss_mib: f64,
    daemon_cpu_s: f64,
    client_cpu_s: f64,
}

/// The figures of one daemon kind over every run.
#[derive(Debug, Default)]
struct Samples(Vec<Sample>);

impl Samples {
    fn summary(&self, f: impl Fn(&Sample) -> f64) -> Option<Summary> {
        Summary::of(&self.0.iter().map(f).collect::<Vec<_>>())
    }
}

/// `VmHWM` (peak resident set) of `pid` in MiB.
fn peak_rss_mib(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("no VmHWM line in {path}"))?
        .parse()
        .with_context(|| format!("parse VmHWM in {path}"))?;
    Ok(kib as f64 / 1024.0)
}

/// User plus system CPU seconds of every child reaped so far.
fn children_cpu_s() -> Result<f64> {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage(RUSAGE_CHILDREN)")?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(usage.user_time()) + secs(usage.system_time()))
}

/// Pushes `image` (an OCI archive) to `remote` through the shared containerd.
fn push_once(server: &Server, namespace: &str, image: &BigImage, remote: &str) -> Result<()> {
    let archive = image.archive.to_string_lossy();
    server
        .ctr_ok(namespace, &["images", "import", "--no-unpack", &archive])
        .context("import the pull image into containerd")?;
    server
        .ctr_ok(
            namespace,
            &["images", "push", "--plain-http", remote, SOURCE_NAME],
        )
        .context("push the pull image to the registry")?;
    Ok(())
}

/// The pull command for `kind` against `server`.
fn pull_command(kind: Kind, cx: &SectionCx<'_>, server: &Server, remote: &str) -> Command {
    let args = ["images", "pull", "--plain-http", remote];
    match kind {
        Kind::Containerd => server.ctr_command(cx.namespace, &args),
        Kind::Berth => {
            let mut cmd = Command::new(&cx.bins.berth_cli);
            cmd.arg("--address")
                .arg(server.address())
                .args(["--namespace", cx.namespace])
                .args(args)
                .env_remove("CONTAINERD_ADDRESS")
                .env_remove("CONTAINERD_NAMESPACE")
                .env_remove("CONTAINERD_SNAPSHOTTER");
            cmd
        }
    }
}

/// One pull on a fresh `kind` daemon under `dir`.
fn once(kind: Kind, cx: &SectionCx<'_>, dir: &Path, remote: &str) -> Result<Sample> {
    let mut server = Server::start(kind, cx.bins, dir.to_owned())?;
    let pid = server.pid()?;
    // Dirty pages of the previous run would otherwise be written back during this one.
    nix::unistd::sync();
    let cmd = pull_command(kind, cx, &server, remote);
    let (cpu0, client0) = (procfs::cpu_ticks(pid)?, children_cpu_s()?);
    let start = Instant::now();
    let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
    let secs = start.elapsed().as_secs_f64();
    let (cpu1, client1) = (procfs::cpu_ticks(pid)?, children_cpu_s()?);
    ensure!(out.success(), "{out}\n{}", server.log_tail());
    let peak_rss_mib = peak_rss_mib(pid)?;
    // The figure only counts if the layers really were unpacked.
    let snapshots = server.ctr_ok(cx.namespace, &["snapshots", "ls"])?;
    let rows = snapshots
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count();
    ensure!(
        rows >= 3,
        "{kind}: expected 3 unpacked layers after the pull, `ctr snapshots ls` shows:\n{snapshots}"
    );
    server.stop().with_context(|| server.log_tail())?;
    Ok(Sample {
        secs,
        peak_rss_mib,
        daemon_cpu_s: cpu1.saturating_sub(cpu0) as f64 / procfs::ticks_per_second(),
        client_cpu_s: client1 - client0,
    })
}

/// Builds and pushes the image, then alternates the daemons `cx.runs` times.
pub(crate) fn measure(report: &mut Report, cx: &SectionCx<'_>) -> Result<()> {
    if !Path::new(REGISTRY_BIN).is_file() {
        bail!("{REGISTRY_BIN} not found: install the Debian `docker-registry` package first");
    }
    let berth_cli = cx.bins.berth_cli.is_file();
    let bytes = if cx.quick { QUICK_BYTES } else { FULL_BYTES };
    let image = build_big_image(&cx.scratch, SOURCE_NAME, bytes)?;
    let registry = Registry::start_plain();
    let remote = format!("{}/{REPOSITORY}:1", registry.host());
    let [_, containerd] = cx.servers;
    push_once(
        containerd,
        &format!("{}-pull-source", cx.namespace),
        &image,
        &remote,
    )?;

    let mut samples = [Samples::default(), Samples::default()];
    for round in 0..cx.runs {
        for (kind, out) in Kind::BOTH.into_iter().zip(samples.iter_mut()) {
            if kind == Kind::Berth && !berth_cli {
                continue;
            }
            let dir = cx.scratch.join(format!("{kind}-{round}"));
            out.0.push(once(kind, cx, &dir, &remote)?);
        }
    }
    if !berth_cli {
        for m in METRICS {
            report.not_applicable(m.id, "berth CLI not built");
        }
    }
    let mb = image.uncompressed as f64 / 1e6;
    let [b, c] = &samples;
    report.set(
        "pull_mb_per_s",
        b.summary(|s| mb / s.secs),
        c.summary(|s| mb / s.secs),
    );
    report.set("pull_s", b.summary(|s| s.secs), c.summary(|s| s.secs));
    report.set(
        "pull_daemon_peak_rss_mib",
        b.summary(|s| s.peak_rss_mib),
        c.summary(|s| s.peak_rss_mib),
    );
    report.set(
        "pull_daemon_cpu_s",
        b.summary(|s| s.daemon_cpu_s),
        c.summary(|s| s.daemon_cpu_s),
    );
    report.set(
        "pull_client_cpu_s",
        b.summary(|s| s.client_cpu_s),
        c.summary(|s| s.client_cpu_s),
    );
    report.context.insert(
        "pull_image".into(),
        serde_json::json!({
            "uncompressed_bytes": image.uncompressed,
            "gzip_bytes": image.compressed,
            "layers": 3,
        }),
    );
    Ok(())
}
