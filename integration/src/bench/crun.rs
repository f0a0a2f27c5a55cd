//! crun as the runtime binary: lifecycles through `--runc-binary crun` on both daemons next to the raw `crun run` floor (issue 20, part 1 and 2).
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
