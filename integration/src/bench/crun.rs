//! crun as the runtime binary: lifecycles through `--runc-binary crun` on both daemons next to the
//! raw `crun run` floor (issue 20, parts 1 and 2). The measurements are the lifecycle section's
//! ([`lifecycle::run_lifecycles`], [`lifecycle::concurrent_walls`]) with crun as the binary.

use anyhow::{Context as _, Result};

use super::lifecycle::{self, Oci, Workload};
use super::report::{def, MetricDef, Report, Target};
use super::stats::Summary;
use super::{fixtures, SectionCx};

/// Concurrent lifecycles per daemon and round (2 with `--quick`).
const CONCURRENT: usize = 20;

/// This section's rows, in table order.
pub const METRICS: &[MetricDef] = &[
    def(
        "crun_lifecycle_ctr_ms",
        "crun: ctr run --rm --runc-binary crun IMG id true",
        "ms",
        Target::RatioAtMost(0.5),
    ),
    def(
        "crun_lifecycle_cli_ms",
        "crun: berth run --rm --runc-binary crun (vs ctr on containerd)",
        "ms",
        Target::None,
    ),
    MetricDef {
        id: "crun_floor_ms",
        title: "crun floor: raw crun run of the same bundle",
        unit: "ms",
        target: Target::None,
        ratio: false,
    },
    def(
        "crun_overhead_cli_ms",
        "crun: berth run above raw crun (containerd: ctr run)",
        "ms",
        Target::BerthAtMost(15.0),
    ),
    def(
        "crun_overhead_ctr_ms",
        "crun: ctr run above raw crun",
        "ms",
        Target::None,
    ),
    def(
        "crun_concurrent_ms",
        "crun: concurrent lifecycles, total wall time",
        "ms",
        Target::RatioAtMost(0.5),
    ),
];

/// Runs the section's measurements into `report`.
pub(crate) fn measure(report: &mut Report, cx: &SectionCx<'_>) -> Result<()> {
    let crun = berth_testutil::find_executable("crun")
        .context("crun not found on PATH (scripts/install-prereqs.sh installs it)")?;
    let bundle = fixtures::build_runc_bundle(&cx.bins.runc, &cx.scratch.join("bundle"))?;
    let w = Workload {
        namespace: cx.namespace,
        image: cx.image,
    };
    let oci = Oci {
        flag: Some("crun"),
        binary: &crun,
        tag: "crun-",
    };
    let l = lifecycle::run_lifecycles(
        cx.bins,
        cx.servers,
        w,
        oci,
        &bundle,
        &cx.scratch.join("crun-root"),
        cx.runs,
    )?;
    report.set(
        "crun_lifecycle_ctr_ms",
        Summary::of(&l.ctr_berth),
        Summary::of(&l.ctr_containerd),
    );
    report.set(
        "crun_floor_ms",
        Summary::of(&l.floor),
        Summary::of(&l.floor),
    );
    report.set(
        "crun_lifecycle_cli_ms",
        Summary::of(&l.cli),
        Summary::of(&l.ctr_containerd),
    );
    report.set(
        "crun_overhead_cli_ms",
        Summary::of(&l.above_floor(&l.cli)),
        Summary::of(&l.above_floor(&l.ctr_containerd)),
    );
    report.set(
        "crun_overhead_ctr_ms",
        Summary::of(&l.above_floor(&l.ctr_berth)),
        Summary::of(&l.above_floor(&l.ctr_containerd)),
    );
    if let Some(reason) = &l.cli_unavailable {
        report.not_applicable("crun_lifecycle_cli_ms", reason);
        report.not_applicable("crun_overhead_cli_ms", reason);
    }
    let count = if cx.quick { 2 } else { CONCURRENT };
    let [berth, containerd] = lifecycle::concurrent_walls(cx.servers, w, oci, count, cx.runs)?;
    report.set(
        "crun_concurrent_ms",
        Summary::of(&berth),
        Summary::of(&containerd),
    );
    Ok(())
}
