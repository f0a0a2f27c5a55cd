//! Memory: daemon RSS, and the RSS and PSS of the shims serving many long-running containers.

use std::thread;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context as _, Result};

use super::procfs;
use super::report::Report;
use super::servers::Server;
use super::stats::Summary;

/// How long to let the shims settle after the last container started.
const SETTLE: Duration = Duration::from_secs(2);

/// How many `ctr` commands run at once while starting and removing containers.
const PARALLEL: usize = 4;

/// KiB → MiB.
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Daemon RSS in MiB.
pub fn daemon_rss_mib(server: &Server) -> Result<f64> {
    Ok(mib(procfs::rss_kib(server.pid()?)?))
}

/// Runs `job(i)` for `0..count`, `PARALLEL` at a time; returns the first error.
fn in_parallel(count: usize, job: impl Fn(usize) -> Result<()> + Sync) -> Result<()> {
    let job = &job;
    thread::scope(|scope| {
        let handles: Vec<_> = (0..PARALLEL)
            .map(|lane| {
                scope.spawn(move || -> Result<()> {
                    for i in (lane..count).step_by(PARALLEL) {
                        job(i)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow!("worker thread panicked"))?)
    })
}

/// What one daemon's shims use with `count` containers running.
#[derive(Debug, Clone, Copy)]
struct ShimMemory {
    processes: usize,
    rss_sum: f64,
    pss_sum: f64,
    rss_median: f64,
    pss_median: f64,
    daemon_rss: f64,
}

/// Starts `count` containers running `sleep 300` on `server`, measures its shims and the daemon,
/// then removes the containers again.
fn measure_one(server: &Server, namespace: &str, image: &str, count: usize) -> Result<ShimMemory> {
    let id = |i: usize| format!("mem-{}-{i}", server.kind());
    in_parallel(count, |i| {
        server
            .ctr_ok(namespace, &["run", "-d", image, &id(i), "sleep", "300"])
            .map(drop)
    })?;
    thread::sleep(SETTLE);
    let pids = procfs::shim_pids(server.kind().shim(), server.address());
    let measured = (|| -> Result<ShimMemory> {
        ensure!(
            !pids.is_empty(),
            "no {} process serving {} found",
            server.kind().shim(),
            server.address().display()
        );
        let mut rss = Vec::new();
        let mut pss = Vec::new();
        for &pid in &pids {
            rss.push(mib(procfs::rss_kib(pid)?));
            pss.push(mib(procfs::pss_kib(pid)?));
        }
        let median = |v: &[f64]| Summary::of(v).map_or(f64::NAN, |s| s.median);
        Ok(ShimMemory {
            processes: pids.len(),
            rss_sum: rss.iter().sum(),
            pss_sum: pss.iter().sum(),
            rss_median: median(&rss),
            pss_median: median(&pss),
            daemon_rss: daemon_rss_mib(server)?,
        })
    })();
    // Remove the containers whether or not the measurement worked.
    let removed = in_parallel(count, |i| {
        server.ctr_ok(namespace, &["tasks", "rm", "-f", &id(i)])?;
        server
            .ctr_ok(namespace, &["containers", "rm", &id(i)])
            .map(drop)
    });
    let measured = measured?;
    removed.context("remove the memory-test containers")?;
    Ok(measured)
}

/// A metric id and the figure of a [`ShimMemory`] it reports.
type MemoryField = (&'static str, fn(&ShimMemory) -> f64);

/// Measures both daemons, one after the other, with `count` containers each.
pub fn measure(
    report: &mut Report,
    servers: &[Server; 2],
    namespace: &str,
    image: &str,
    count: usize,
) -> Result<()> {
    let [b, c] = [
        measure_one(&servers[0], namespace, image, count)?,
        measure_one(&servers[1], namespace, image, count)?,
    ];
    let n = count as f64;
    let rows: [MemoryField; 6] = [
        ("daemon_rss_containers_mib", |m| m.daemon_rss),
        ("shim_processes", |m| m.processes as f64),
        ("shim_rss_median_mib", |m| m.rss_median),
        ("shim_pss_median_mib", |m| m.pss_median),
        ("shim_rss_sum_mib", |m| m.rss_sum),
        ("shim_pss_sum_mib", |m| m.pss_sum),
    ];
    for (id, f) in rows {
        report.set(id, Summary::one(f(&b)), Summary::one(f(&c)));
    }
    // containerd starts one shim per container here (no grouping labels), so per-container
    // figures compare like with like whatever Berth's grouping.
    report.set(
        "shim_rss_per_container_mib",
        Summary::one(b.rss_sum / n),
        Summary::one(c.rss_sum / n),
    );
    report.set(
        "shim_pss_per_container_mib",
        Summary::one(b.pss_sum / n),
        Summary::one(c.pss_sum / n),
    );
    Ok(())
}
