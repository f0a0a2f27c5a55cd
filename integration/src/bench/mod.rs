//! `berth-bench`: Berth and containerd 1.6 measured side by side in one run, on the same host,
//! images and clients, with the daemons alternating (A B A B ...) so that drift in the machine
//! (page cache, CPU frequency, other load) falls on both alike.
//!
//! Sections, in run order: daemon memory at idle and after imports; import + unpack of a large
//! generated image on fresh roots; single lifecycles through the real `ctr` (and `berth run`)
//! next to the raw `runc run` floor; concurrent lifecycles; the gRPC API under load; shim memory
//! with many containers running. docs/PERFORMANCE.md explains the figures.

mod api;
mod crun;
mod fixtures;
mod lifecycle;
mod memory;
mod pods;
mod procfs;
mod pull;
mod report;
mod scale;
mod servers;
mod stats;
mod unpack;

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

pub use report::{MetricDef, Report, Target, METRICS};
pub use stats::Summary;

use servers::{Bins, Kind, Server};

/// The busybox image both daemons run containers from.
const IMAGE: &str = "docker.io/library/berth-bench-busybox:latest";
/// The large image of the unpack measurement.
const BIG_IMAGE: &str = "docker.io/library/berth-bench-big:latest";

/// Where both shims keep runc's state, one directory per namespace.
const RUNC_ROOT: &str = "/run/containerd/runc";
/// The cgroup mount; ctr puts containers in `/<namespace>/<id>`.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Command-line options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// CI mode: tiny sizes, one run each; only checks that every metric has a number.
    pub quick: bool,
    /// Alternating runs per timed measurement (default 5, or 1 with `quick`).
    pub runs: Option<usize>,
    /// Where to write the JSON report.
    pub out: Option<PathBuf>,
    /// Sections to run (names from [`SECTIONS`]); empty means all.
    pub only: Vec<String>,
}

/// Names of the sections, for `--only`.
pub const SECTIONS: [&str; 10] = [
    "memory",
    "unpack",
    "lifecycle",
    "concurrent",
    "api",
    "shims",
    "crun",
    "pull",
    "pods",
    "scale",
];

/// What every newer section (crun, pull, pods, scale) gets: each sizes itself from `quick` and
/// `runs`, and may start daemons of its own under `scratch`.
pub(crate) struct SectionCx<'a> {
    /// CI mode: tiny sizes.
    pub quick: bool,
    /// Alternating runs per timed measurement.
    pub runs: usize,
    /// Binaries under test.
    pub bins: &'a Bins,
    /// The two shared daemons, Berth first, with the busybox image imported in `namespace`.
    pub servers: &'a [Server; 2],
    /// The namespace holding the busybox image.
    pub namespace: &'a str,
    /// The busybox image's name.
    pub image: &'a str,
    /// The busybox image's OCI archive.
    pub image_archive: &'a Path,
    /// A directory of this run's scratch space for the section's own files.
    pub scratch: PathBuf,
}

impl Options {
    /// Whether the section `name` (one of [`SECTIONS`]) runs.
    fn runs_section(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == name)
    }
}

/// Sizes of every measurement.
#[derive(Debug, Clone, Copy)]
struct Plan {
    runs: usize,
    memory_containers: usize,
    concurrent: usize,
    unpack_bytes: u64,
    api_duration: Duration,
    list_containers: usize,
}

impl Plan {
    fn new(options: &Options) -> Plan {
        let base = if options.quick {
            Plan {
                runs: 1,
                memory_containers: 3,
                concurrent: 2,
                unpack_bytes: 5_000_000,
                api_duration: Duration::from_secs(1),
                list_containers: 50,
            }
        } else {
            Plan {
                runs: 5,
                memory_containers: 50,
                concurrent: 20,
                unpack_bytes: 200_000_000,
                api_duration: Duration::from_secs(3),
                list_containers: 1000,
            }
        };
        Plan {
            runs: options.runs.unwrap_or(base.runs).max(1),
            ..base
        }
    }
}

/// Prints a progress line to stderr (stdout carries the table).
fn progress(message: &str) {
    eprintln!("berth-bench: {message}");
}

/// Runs one section (unless `--only` leaves it out), recording its error instead of stopping the
/// benchmark.
fn section(
    options: &Options,
    key: &str,
    report: &mut Report,
    name: &str,
    f: impl FnOnce(&mut Report) -> Result<()>,
) {
    if !options.runs_section(key) {
        return;
    }
    progress(name);
    let start = Instant::now();
    match f(report) {
        Ok(()) => progress(&format!(
            "{name}: done in {:.1} s",
            start.elapsed().as_secs_f64()
        )),
        Err(e) => {
            progress(&format!("{name} FAILED: {e:#}"));
            report.errors.push(format!("{name}: {e:#}"));
        }
    }
}

/// The 1, 5 and 15 minute load averages: other work on the host skews every figure.
fn loadavg() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The host, for the report.
fn machine() -> serde_json::Value {
    let nproc = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({ "nproc": nproc, "kernel": kernel.trim(), "loadavg_at_start": loadavg() })
}

/// Kills shims still serving `address` (a section failed halfway), unmounts whatever is left
/// under `scratch` and removes it, and removes the empty per-namespace directories both shims
/// leave in the runc root and the cgroup hierarchies.
fn clean_up(scratch: &Path, addresses: &[PathBuf], namespaces: &[String]) {
    for address in addresses {
        for kind in Kind::BOTH {
            for pid in procfs::shim_pids(kind.shim(), address) {
                if let Ok(pid) = i32::try_from(pid) {
                    // Only shims started for our private sockets match; they may exit meanwhile.
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
    for mount in procfs::mounts_under(scratch) {
        if let Err(e) = umount2(&mount, MntFlags::MNT_DETACH) {
            progress(&format!("cannot unmount {}: {e}", mount.display()));
        }
    }
    if let Err(e) = fs::remove_dir_all(scratch) {
        progress(&format!("cannot remove {}: {e}", scratch.display()));
    }
    let hierarchies: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    for ns in namespaces {
        let mut dirs = vec![
            Path::new(RUNC_ROOT).join(ns),
            Path::new(CGROUP_ROOT).join(ns),
        ];
        dirs.extend(hierarchies.iter().map(|h| h.join(ns)));
        for dir in dirs {
            // remove_dir only takes empty directories: anything still in use stays.
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Runs every section and returns the report; `Err` only when the benchmark cannot start at all.
fn measure_all(
    options: &Options,
    plan: Plan,
    scratch: &Path,
    namespace: &str,
) -> Result<(Report, Vec<PathBuf>)> {
    let bins = Bins::locate()?;
    let mut report = Report::default();
    report.context.insert("machine".into(), machine());
    report.context.insert(
        "command".into(),
        json!(std::env::args().collect::<Vec<_>>().join(" ")),
    );
    report.context.insert(
        "plan".into(),
        json!({
            "quick": options.quick,
            "runs": plan.runs,
            "memory_containers": plan.memory_containers,
            "concurrent_lifecycles": plan.concurrent,
            "unpack_bytes": plan.unpack_bytes,
            "api_seconds_per_run": plan.api_duration.as_secs_f64(),
            "api_clients": api::CLIENTS,
            "list_containers": plan.list_containers,
        }),
    );

    progress("building test images (once)");
    let images = scratch.join("images");
    fs::create_dir_all(&images).with_context(|| format!("create {}", images.display()))?;
    let busybox = crate::image::build_busybox_image(&images, IMAGE);
    let bundle = fixtures::build_runc_bundle(&bins.runc, &scratch.join("bundle"))?;
    let started = Instant::now();
    let unpack_bytes = if options.runs_section("unpack") {
        plan.unpack_bytes
    } else {
        // Not measured: a token image keeps the report's context complete.
        1_000_000
    };
    let big = fixtures::build_big_image(&images, BIG_IMAGE, unpack_bytes)?;
    progress(&format!(
        "big image: {:.1} MB uncompressed, {:.1} MB gzip, built in {:.1} s",
        big.uncompressed as f64 / 1e6,
        big.compressed as f64 / 1e6,
        started.elapsed().as_secs_f64()
    ));
    report.context.insert(
        "unpack_image".into(),
        json!({ "uncompressed_bytes": big.uncompressed, "gzip_bytes": big.compressed, "layers": 3 }),
    );

    progress("starting berthd and containerd");
    let servers = [
        Server::start(Kind::Berth, &bins, scratch.join("berth"))?,
        Server::start(Kind::Containerd, &bins, scratch.join("containerd"))?,
    ];
    let addresses: Vec<PathBuf> = servers.iter().map(|s| s.address().to_owned()).collect();
    // Let start-up allocations settle before reading the idle figure.
    thread::sleep(Duration::from_secs(1));
    let archive = busybox.archive.to_string_lossy();
    let import_busybox = || -> Result<()> {
        for server in &servers {
            server.ctr_ok(namespace, &["images", "import", &archive])?;
        }
        Ok(())
    };
    section(options, "memory", &mut report, "daemon memory", |report| {
        report.set(
            "daemon_rss_idle_mib",
            Summary::one(memory::daemon_rss_mib(&servers[0])?),
            Summary::one(memory::daemon_rss_mib(&servers[1])?),
        );
        import_busybox()?;
        report.set(
            "daemon_rss_imported_mib",
            Summary::one(memory::daemon_rss_mib(&servers[0])?),
            Summary::one(memory::daemon_rss_mib(&servers[1])?),
        );
        Ok(())
    });
    if !options.runs_section("memory") {
        import_busybox()?;
    }
    section(
        options,
        "unpack",
        &mut report,
        "import + unpack",
        |report| {
            unpack::measure(
                report,
                &bins,
                &scratch.join("unpack"),
                namespace,
                &big,
                plan.runs,
            )
        },
    );
    let workload = lifecycle::Workload {
        namespace,
        image: IMAGE,
    };
    section(options, "lifecycle", &mut report, "lifecycles", |report| {
        let runc_root = scratch.join("runc-root");
        lifecycle::measure(
            report, &bins, &servers, workload, &bundle, &runc_root, plan.runs,
        )
    });
    section(
        options,
        "concurrent",
        &mut report,
        "concurrent lifecycles",
        |report| {
            lifecycle::measure_concurrent(report, &servers, workload, plan.concurrent, plan.runs)
        },
    );
    section(options, "api", &mut report, "API load", |report| {
        api::measure(
            report,
            &servers,
            &format!("{namespace}-api"),
            plan.list_containers,
            plan.api_duration,
            plan.runs,
        )
    });
    section(options, "shims", &mut report, "shim memory", |report| {
        memory::measure(report, &servers, namespace, IMAGE, plan.memory_containers)
    });
    let cx = |name: &str| -> Result<SectionCx<'_>> {
        let dir = scratch.join(name);
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(SectionCx {
            quick: options.quick,
            runs: plan.runs,
            bins: &bins,
            servers: &servers,
            namespace,
            image: IMAGE,
            image_archive: &busybox.archive,
            scratch: dir,
        })
    };
    section(options, "crun", &mut report, "crun lifecycles", |report| {
        crun::measure(report, &cx("crun")?)
    });
    section(options, "pull", &mut report, "registry pulls", |report| {
        pull::measure(report, &cx("pull")?)
    });
    section(options, "pods", &mut report, "CRI pods", |report| {
        pods::measure(report, &cx("pods")?)
    });
    section(
        options,
        "scale",
        &mut report,
        "scale and restart",
        |report| scale::measure(report, &cx("scale")?),
    );
    report
        .context
        .insert("loadavg_at_end".into(), json!(loadavg()));
    for mut server in servers {
        if let Err(e) = server.stop() {
            progress(&format!("{e:#}"));
        }
    }
    Ok((report, addresses))
}

/// Runs the benchmark: prints the table, writes the JSON with `--out`, and fails when any metric
/// lacks a number.
pub fn run(options: &Options) -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "berth-bench must run as root (it starts daemons, mounts overlays and runs runc)"
    );
    let plan = Plan::new(options);
    let scratch = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir_in("/tmp")
        .context("create the scratch directory under /tmp")?
        .keep();
    let namespace = format!("bench-{}", std::process::id());
    let outcome = measure_all(options, plan, &scratch, &namespace);
    let addresses = outcome.as_ref().map(|(_, a)| a.clone()).unwrap_or_default();
    // Stores are deleted only now, after the last measurement.
    progress(&format!("removing {}", scratch.display()));
    clean_up(
        &scratch,
        &addresses,
        &[format!("{namespace}-api"), namespace],
    );
    let (report, _) = outcome?;

    for key in ["machine", "plan", "loadavg_at_end"] {
        if let Some(value) = report.context.get(key) {
            println!("{key}: {value}");
        }
    }
    println!("{}", report.table());
    if let Some(out) = &options.out {
        let text = serde_json::to_string_pretty(&report.to_json())?;
        fs::write(out, text + "\n").with_context(|| format!("write {}", out.display()))?;
    }
    let missing: Vec<_> = if options.only.is_empty() {
        report.missing()
    } else {
        Vec::new()
    };
    if !missing.is_empty() {
        bail!(
            "{} metric(s) without a number: {}; errors: {}",
            missing.len(),
            missing.join(", "),
            report.errors.join("; ")
        );
    }
    Ok(())
}
