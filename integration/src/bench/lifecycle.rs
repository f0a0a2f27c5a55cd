//! Container lifecycles: one `ctr run --rm IMG id true` against each daemon, the same through
//! Berth's own CLI, the raw `runc run` floor, and many lifecycles at once; with runc or another
//! OCI runtime binary ([`Oci`], the `crun` section).

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Instant;

use anyhow::{ensure, Context as _, Result};

use super::report::Report;
use super::servers::{Bins, Server, COMMAND_TIMEOUT};
use super::stats::Summary;
use crate::command::run_with_timeout;

/// Runs `cmd` to completion and returns its wall time in milliseconds; fails unless it exits 0.
fn timed_ms(cmd: Command) -> Result<f64> {
    let start = Instant::now();
    let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
    let ms = start.elapsed().as_secs_f64() * 1e3;
    ensure!(out.success(), "{out}");
    Ok(ms)
}

/// Why `berth run` cannot be measured, or `None` when the CLI has the verb.
fn berth_run_unavailable(bins: &Bins) -> Option<String> {
    if !bins.berth_cli.is_file() {
        return Some("berth CLI not built".to_owned());
    }
    let mut cmd = Command::new(&bins.berth_cli);
    cmd.args(["run", "--help"]);
    let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
    (!out.success()).then(|| "berth run not implemented".to_owned())
}

/// What every lifecycle runs.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    /// The namespace used on both daemons.
    pub namespace: &'a str,
    /// The image both daemons imported.
    pub image: &'a str,
}

/// The OCI runtime binary of a lifecycle measurement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Oci<'a> {
    /// Given as `--runc-binary` to `ctr run` and `berth run`; `None` for the daemons' default
    /// (runc).
    pub flag: Option<&'a str>,
    /// The binary whose own `run` of the bundle is the floor.
    pub binary: &'a Path,
    /// Prefix of the container ids, so that sections do not share ids.
    pub tag: &'a str,
}

/// `ctr run --rm [--runc-binary B] IMG id true` against `server`.
fn ctr_lifecycle(server: &Server, w: Workload<'_>, oci: Oci<'_>, id: &str) -> Command {
    let mut args = vec!["run", "--rm"];
    if let Some(binary) = oci.flag {
        args.extend(["--runc-binary", binary]);
    }
    args.extend([w.image, id, "true"]);
    server.ctr_command(w.namespace, &args)
}

/// Per-round wall times (ms) of the alternating single lifecycles, warm-up round excluded.
#[derive(Debug, Default)]
pub(crate) struct Lifecycles {
    /// `ctr run --rm` against berthd.
    pub ctr_berth: Vec<f64>,
    /// `ctr run --rm` against containerd.
    pub ctr_containerd: Vec<f64>,
    /// The raw runtime's `run` of the bundle.
    pub floor: Vec<f64>,
    /// `berth run --rm` against berthd; empty when [`Lifecycles::cli_unavailable`] says why.
    pub cli: Vec<f64>,
    /// Why `berth run` was not measured.
    pub cli_unavailable: Option<String>,
}

impl Lifecycles {
    /// Each of `xs` minus the floor of the same round (rounds are paired, so this is fairer
    /// than a difference of medians).
    pub fn above_floor(&self, xs: &[f64]) -> Vec<f64> {
        xs.iter().zip(&self.floor).map(|(x, f)| x - f).collect()
    }
}

/// Rounds of single lifecycles per requested run. One round is four commands of 20–90 ms, whose
/// times vary by ±30 % from round to round on a 2-vCPU VM, so medians need more samples than the
/// slower sections; three rounds per run cost about a second.
pub(crate) const ROUNDS_PER_RUN: usize = 3;

/// Alternates berth, containerd, the raw runtime and (when it exists) `berth run`,
/// `runs` × [`ROUNDS_PER_RUN`] times after one warm-up round. The raw runtime keeps its state
/// under `state_root`.
pub(crate) fn run_lifecycles(
    bins: &Bins,
    servers: &[Server; 2],
    w: Workload<'_>,
    oci: Oci<'_>,
    bundle: &Path,
    state_root: &Path,
    runs: usize,
) -> Result<Lifecycles> {
    let cli_unavailable = berth_run_unavailable(bins);
    let [berth, containerd] = servers;
    let raw = |id: &str| {
        let mut cmd = Command::new(oci.binary);
        cmd.arg("--root")
            .arg(state_root)
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(id);
        cmd
    };
    let cli = |id: &str| {
        let mut cmd = Command::new(&bins.berth_cli);
        cmd.arg("--address")
            .arg(berth.address())
            .args(["--namespace", w.namespace, "run", "--rm"]);
        if let Some(binary) = oci.flag {
            cmd.args(["--runc-binary", binary]);
        }
        cmd.args([w.image, id, "true"]);
        cmd
    };
    let tag = oci.tag;
    let mut out = Lifecycles {
        cli_unavailable,
        ..Lifecycles::default()
    };
    // Round 0 warms caches (page cache of the binaries, first snapshot) and is not recorded.
    for round in 0..=runs * ROUNDS_PER_RUN {
        let bt = timed_ms(ctr_lifecycle(
            berth,
            w,
            oci,
            &format!("lc-{tag}berth-{round}"),
        ))
        .with_context(|| berth.log_tail())?;
        let ct = timed_ms(ctr_lifecycle(
            containerd,
            w,
            oci,
            &format!("lc-{tag}containerd-{round}"),
        ))
        .with_context(|| containerd.log_tail())?;
        let rt = timed_ms(raw(&format!("lc-{tag}raw-{round}")))?;
        let clt = match out.cli_unavailable {
            None => Some(
                timed_ms(cli(&format!("lc-{tag}cli-{round}"))).with_context(|| berth.log_tail())?,
            ),
            Some(_) => None,
        };
        if round > 0 {
            out.ctr_berth.push(bt);
            out.ctr_containerd.push(ct);
            out.floor.push(rt);
            out.cli.extend(clt);
        }
    }
    Ok(out)
}

/// The runc lifecycles: `ctr run --rm` on both daemons, `berth run --rm`, the raw `runc run`
/// floor and the overhead above it.
pub fn measure(
    report: &mut Report,
    bins: &Bins,
    servers: &[Server; 2],
    w: Workload<'_>,
    bundle: &Path,
    runc_root: &Path,
    runs: usize,
) -> Result<()> {
    let oci = Oci {
        flag: None,
        binary: &bins.runc,
        tag: "",
    };
    let l = run_lifecycles(bins, servers, w, oci, bundle, runc_root, runs)?;
    report.set(
        "lifecycle_ctr_ms",
        Summary::of(&l.ctr_berth),
        Summary::of(&l.ctr_containerd),
    );
    report.set(
        "runc_floor_ms",
        Summary::of(&l.floor),
        Summary::of(&l.floor),
    );
    report.set(
        "overhead_cli_ms",
        Summary::of(&l.above_floor(&l.cli)),
        Summary::of(&l.above_floor(&l.ctr_containerd)),
    );
    report.set(
        "overhead_ctr_ms",
        Summary::of(&l.above_floor(&l.ctr_berth)),
        Summary::of(&l.above_floor(&l.ctr_containerd)),
    );
    report.set(
        "lifecycle_cli_ms",
        Summary::of(&l.cli),
        Summary::of(&l.ctr_containerd),
    );
    if let Some(reason) = &l.cli_unavailable {
        report.not_applicable("lifecycle_cli_ms", reason);
        report.not_applicable("overhead_cli_ms", reason);
    }
    Ok(())
}

/// Starts `count` lifecycles on `server` at once and returns the wall time until the last one
/// finished; fails if any failed.
fn concurrent_once(
    server: &Server,
    w: Workload<'_>,
    oci: Oci<'_>,
    count: usize,
    round: usize,
) -> Result<f64> {
    let start = Instant::now();
    let results: Vec<Result<f64>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .map(|i| {
                let id = format!("cc-{}{}-{round}-{i}", oci.tag, server.kind());
                scope.spawn(move || timed_ms(ctr_lifecycle(server, w, oci, &id)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("lifecycle thread panicked")))
            })
            .collect()
    });
    let wall = start.elapsed().as_secs_f64() * 1e3;
    for result in results {
        result.with_context(|| server.log_tail())?;
    }
    Ok(wall)
}

/// `count` concurrent lifecycles, alternating the daemons (`servers` is berth, containerd) `runs`
/// times; the wall times of berth's rounds, then containerd's.
pub(crate) fn concurrent_walls(
    servers: &[Server; 2],
    w: Workload<'_>,
    oci: Oci<'_>,
    count: usize,
    runs: usize,
) -> Result<[Vec<f64>; 2]> {
    let mut walls = [Vec::new(), Vec::new()];
    for round in 0..runs {
        for (server, wall) in servers.iter().zip(walls.iter_mut()) {
            wall.push(concurrent_once(server, w, oci, count, round)?);
        }
    }
    Ok(walls)
}

/// `count` concurrent runc lifecycles on each daemon, `runs` times.
pub fn measure_concurrent(
    report: &mut Report,
    servers: &[Server; 2],
    w: Workload<'_>,
    count: usize,
    runs: usize,
) -> Result<()> {
    let oci = Oci {
        flag: None,
        binary: Path::new("runc"),
        tag: "",
    };
    let [berth, containerd] = concurrent_walls(servers, w, oci, count, runs)?;
    report.set(
        "concurrent_lifecycles_ms",
        Summary::of(&berth),
        Summary::of(&containerd),
    );
    Ok(())
}
