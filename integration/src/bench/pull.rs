//! Registry pulls: `berth images pull` against `ctr images pull` on containerd from a local registry over HTTP, throughput and peak daemon RSS (issue 20, part 3).
//!
//! Not measured yet: the section has no rows until its measurement lands.

use anyhow::Result;

use super::report::{MetricDef, Report};
use super::SectionCx;

/// This section's rows, in table order.
pub const METRICS: &[MetricDef] = &[];

/// Runs the section's measurements into `report`.
pub(crate) fn measure(_report: &mut Report, _cx: &SectionCx<'_>) -> Result<()> {
    Ok(())
}
