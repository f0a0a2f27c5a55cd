//! Scale: many running containers, their shims' memory, list latencies, and the time a restarted daemon takes to answer Tasks.List again (issue 20, part 5).
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
