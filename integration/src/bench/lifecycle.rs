//! Container lifecycles: one `ctr run --rm IMG id true` against each daemon, the same through
//! Berth's own CLI, the raw `runc run` floor, and many lifecycles at once.

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

/// `ctr run --rm IMG id true` against `server`.
fn ctr_lifecycle(server: &Server, w: Workload<'_>, id: &str) -> Command {
    server.ctr_command(w.namespace, &["run", "--rm", w.image, id, "true"])
}

/// Alternates berth, containerd, raw runc and (when it exists) `berth run`, `runs` times after
/// one warm-up round, and records lifecycle times, the floor and the overhead above it.
pub fn measure(
    report: &mut Report,
    bins: &Bins,
    servers: &[Server; 2],
    w: Workload<'_>,
    bundle: &Path,
    runc_root: &Path,
    runs: usize,
) -> Result<()> {
    let cli_unavailable = berth_run_unavailable(bins);
    let [berth, containerd] = servers;
    let runc = |id: &str| {
        let mut cmd = Command::new(&bins.runc);
        cmd.arg("--root")
            .arg(runc_root)
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(id);
        cmd
    };
    let cli = |id: &str| {
        let mut cmd = Command::new(&bins.berth_cli);
        cmd.arg("--address").arg(berth.address()).args([
            "--namespace",
            w.namespace,
            "run",
            "--rm",
            w.image,
            id,
            "true",
        ]);
        cmd
    };
    let (mut b, mut c, mut r, mut cl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Round 0 warms caches (page cache of the binaries, first snapshot) and is not recorded.
    for round in 0..=runs {
        let bt = timed_ms(ctr_lifecycle(berth, w, &format!("lc-berth-{round}")))
            .with_context(|| berth.log_tail())?;
        let ct = timed_ms(ctr_lifecycle(
            containerd,
            w,
            &format!("lc-containerd-{round}"),
        ))
        .with_context(|| containerd.log_tail())?;
        let rt = timed_ms(runc(&format!("lc-runc-{round}")))?;
        let clt = match cli_unavailable {
            None => {
                Some(timed_ms(cli(&format!("lc-cli-{round}"))).with_context(|| berth.log_tail())?)
            }
            Some(_) => None,
        };
        if round > 0 {
            b.push(bt);
            c.push(ct);
            r.push(rt);
            cl.extend(clt);
        }
    }
    report.set("lifecycle_ctr_ms", Summary::of(&b), Summary::of(&c));
    report.set("runc_floor_ms", Summary::of(&r), Summary::of(&r));
    // Rounds are paired, so subtract per round rather than median from median.
    let above = |xs: &[f64]| -> Vec<f64> { xs.iter().zip(&r).map(|(x, f)| x - f).collect() };
    report.set(
        "overhead_above_runc_ms",
        Summary::of(&above(&b)),
        Summary::of(&above(&c)),
    );
    report.set("lifecycle_cli_ms", Summary::of(&cl), Summary::of(&c));
    if let Some(reason) = cli_unavailable {
        report.not_applicable("lifecycle_cli_ms", &reason);
    }
    Ok(())
}

/// Starts `count` lifecycles on `server` at once and returns the wall time until the last one
/// finished; fails if any failed.
fn concurrent_once(server: &Server, w: Workload<'_>, count: usize, round: usize) -> Result<f64> {
    let start = Instant::now();
    let results: Vec<Result<f64>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .map(|i| {
                let id = format!("cc-{}-{round}-{i}", server.kind());
                scope.spawn(move || timed_ms(ctr_lifecycle(server, w, &id)))
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
/// times.
pub fn measure_concurrent(
    report: &mut Report,
    servers: &[Server; 2],
    w: Workload<'_>,
    count: usize,
    runs: usize,
) -> Result<()> {
    let mut walls = [Vec::new(), Vec::new()];
    for round in 0..runs {
        for (server, wall) in servers.iter().zip(walls.iter_mut()) {
            wall.push(concurrent_once(server, w, count, round)?);
        }
    }
    report.set(
        "concurrent_lifecycles_ms",
        Summary::of(&walls[0]),
        Summary::of(&walls[1]),
    );
    Ok(())
}
