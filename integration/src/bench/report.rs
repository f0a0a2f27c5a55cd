//! The catalogue of metrics with their targets, the collected figures, and the two outputs: a
//! human-readable table and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use serde_json::{json, Value};

use super::stats::Summary;

/// What a metric's Berth figure should achieve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Nothing: the figure is context for another row.
    None,
    /// berth / containerd at most this.
    RatioAtMost(f64),
    /// berth / containerd at least this.
    RatioAtLeast(f64),
    /// The Berth figure itself at most this (in the metric's unit).
    BerthAtMost(f64),
    /// berth strictly below containerd.
    Lower,
}

impl Target {
    /// The target as printed in the table.
    pub fn describe(self, unit: &str) -> String {
        match self {
            Target::None => String::new(),
            Target::Lower => "lower".to_owned(),
            Target::RatioAtMost(r) => format!("<={r}x"),
            Target::RatioAtLeast(r) => format!(">={r}x"),
            Target::BerthAtMost(v) => format!("berth <={v} {unit}"),
        }
    }

    /// Whether `berth` (and the ratio to containerd) meets the target; `None` without a target or
    /// figures.
    fn holds(self, berth: Option<f64>, ratio: Option<f64>) -> Option<bool> {
        match self {
            Target::None => None,
            Target::Lower => ratio.map(|x| x < 1.0),
            Target::RatioAtMost(r) => ratio.map(|x| x <= r),
            Target::RatioAtLeast(r) => ratio.map(|x| x >= r),
            Target::BerthAtMost(v) => berth.map(|b| b <= v),
        }
    }
}

/// One row of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// Stable key in the JSON output.
    pub id: &'static str,
    /// Row label in the table.
    pub title: &'static str,
    /// Unit of both figures.
    pub unit: &'static str,
    /// What Berth should achieve.
    pub target: Target,
    /// Whether the ratio berth / containerd means anything (not for the shared runc floor).
    pub ratio: bool,
}

pub const fn def(
    id: &'static str,
    title: &'static str,
    unit: &'static str,
    target: Target,
) -> MetricDef {
    MetricDef {
        id,
        title,
        unit,
        target,
        ratio: true,
    }
}

/// Every metric the benchmark reports, in table order: the core sections' rows, then each newer
/// section's own catalogue. `--quick` fails unless each has numbers (or an explicit "n/a" reason).
pub static METRICS: LazyLock<Vec<MetricDef>> = LazyLock::new(|| {
    [
        CORE_METRICS,
        super::crun::METRICS,
        super::pull::METRICS,
        super::pods::METRICS,
        super::scale::METRICS,
    ]
    .concat()
});

/// The rows of the original sections (memory, unpack, lifecycle, concurrent, api, shims).
const CORE_METRICS: &[MetricDef] = &[
    def(
        "lifecycle_ctr_ms",
        "lifecycle: ctr run --rm IMG id true",
        "ms",
        Target::RatioAtMost(0.5),
    ),
    def(
        "lifecycle_cli_ms",
        "lifecycle: berth run --rm (vs ctr on containerd)",
        "ms",
        Target::RatioAtMost(0.5),
    ),
    MetricDef {
        id: "runc_floor_ms",
        title: "floor: raw runc run of the same bundle",
        unit: "ms",
        target: Target::None,
        ratio: false,
    },
    def(
        "overhead_cli_ms",
        "berth run above raw runc (containerd: ctr run)",
        "ms",
        Target::BerthAtMost(15.0),
    ),
    def(
        "overhead_ctr_ms",
        "ctr run above raw runc",
        "ms",
        Target::None,
    ),
    def(
        "concurrent_lifecycles_ms",
        "concurrent lifecycles, total wall time",
        "ms",
        Target::RatioAtMost(0.5),
    ),
    def(
        "daemon_rss_idle_mib",
        "daemon RSS, idle",
        "MiB",
        Target::RatioAtMost(0.2),
    ),
    def(
        "daemon_rss_imported_mib",
        "daemon RSS, after imports",
        "MiB",
        Target::None,
    ),
    def(
        "daemon_rss_containers_mib",
        "daemon RSS, with the containers running",
        "MiB",
        Target::None,
    ),
    def(
        "shim_processes",
        "shim processes for the containers",
        "count",
        Target::None,
    ),
    def(
        "shim_rss_per_container_mib",
        "shim RSS per container (sum / containers)",
        "MiB",
        Target::RatioAtMost(0.15),
    ),
    def(
        "shim_pss_per_container_mib",
        "shim PSS per container (sum / containers)",
        "MiB",
        Target::RatioAtMost(0.2),
    ),
    def(
        "shim_rss_median_mib",
        "shim RSS, median shim",
        "MiB",
        Target::None,
    ),
    def(
        "shim_pss_median_mib",
        "shim PSS, median shim",
        "MiB",
        Target::None,
    ),
    def("shim_rss_sum_mib", "shim RSS, sum", "MiB", Target::None),
    def("shim_pss_sum_mib", "shim PSS, sum", "MiB", Target::None),
    def(
        "unpack_mb_per_s",
        "import + unpack throughput (uncompressed)",
        "MB/s",
        Target::RatioAtLeast(2.0),
    ),
    def("unpack_s", "import + unpack time", "s", Target::None),
    def(
        "version_rps",
        "Version: requests/s (16 clients)",
        "req/s",
        Target::None,
    ),
    def("version_p50_us", "Version: p50 latency", "us", Target::None),
    def(
        "version_p99_us",
        "Version: p99 latency",
        "us",
        Target::Lower,
    ),
    def(
        "version_daemon_cpu_us",
        "Version: daemon CPU per call",
        "us",
        Target::RatioAtMost(0.4),
    ),
    def(
        "version_client_cpu_us",
        "Version: load generator CPU per call",
        "us",
        Target::None,
    ),
    def(
        "list_rps",
        "Containers.List: requests/s (16 clients)",
        "req/s",
        Target::RatioAtLeast(10.0),
    ),
    def(
        "list_p50_us",
        "Containers.List: p50 latency",
        "us",
        Target::None,
    ),
    def(
        "list_p99_us",
        "Containers.List: p99 latency",
        "us",
        Target::None,
    ),
    def(
        "list_daemon_cpu_us",
        "Containers.List: daemon CPU per call",
        "us",
        Target::None,
    ),
    def(
        "list_client_cpu_us",
        "Containers.List: load generator CPU per call",
        "us",
        Target::None,
    ),
];

/// The figures of one metric.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Berth's samples.
    pub berth: Option<Summary>,
    /// containerd's samples.
    pub containerd: Option<Summary>,
    /// Why there is no Berth figure, when that is expected (say, a CLI verb not written yet).
    pub not_applicable: Option<String>,
}

/// Everything measured, keyed by metric id, plus context for the reader.
#[derive(Debug, Default)]
pub struct Report {
    figures: BTreeMap<&'static str, Figures>,
    /// Failed sections and their errors.
    pub errors: Vec<String>,
    /// Free-form context lines (machine, sizes, notes), printed above the table.
    pub context: BTreeMap<String, Value>,
}

impl Report {
    /// Records both figures of `id`. Panics on an id missing from [`METRICS`] (a programming
    /// error in the benchmark itself).
    pub fn set(&mut self, id: &'static str, berth: Option<Summary>, containerd: Option<Summary>) {
        assert!(METRICS.iter().any(|m| m.id == id), "unknown metric {id}");
        let f = self.figures.entry(id).or_default();
        f.berth = berth;
        f.containerd = containerd;
    }

    /// Marks the Berth side of `id` as not applicable, with the reason shown in its place.
    pub fn not_applicable(&mut self, id: &'static str, reason: &str) {
        assert!(METRICS.iter().any(|m| m.id == id), "unknown metric {id}");
        self.figures.entry(id).or_default().not_applicable = Some(reason.to_owned());
    }

    /// The figures of `id`, if any were recorded.
    pub fn get(&self, id: &str) -> Option<&Figures> {
        self.figures.get(id)
    }

    /// Metric ids lacking a number on either side (a Berth side marked not applicable counts as
    /// present).
    pub fn missing(&self) -> Vec<&'static str> {
        METRICS
            .iter()
            .filter(|m| {
                let f = self.figures.get(m.id);
                let berth = f.is_some_and(|f| f.berth.is_some() || f.not_applicable.is_some());
                let containerd = f.is_some_and(|f| f.containerd.is_some());
                !(berth && containerd)
            })
            .map(|m| m.id)
            .collect()
    }

    /// berth median / containerd median for `m`.
    fn ratio(m: &MetricDef, f: &Figures) -> Option<f64> {
        let (b, c) = (f.berth?, f.containerd?);
        (m.ratio && c.median != 0.0).then(|| b.median / c.median)
    }

    /// The table: metric, berth, containerd, ratio, target (and whether it holds).
    pub fn table(&self) -> String {
        let mut rows = vec![[
            "metric".to_owned(),
            "berth".to_owned(),
            "containerd".to_owned(),
            "ratio".to_owned(),
            "target".to_owned(),
        ]];
        let cell = |s: Option<Summary>| match s {
            None => "MISSING".to_owned(),
            Some(s) if s.n > 1 => format!("{} [{}-{}]", num(s.median), num(s.min), num(s.max)),
            Some(s) => num(s.median),
        };
        for m in METRICS.iter() {
            let f = self.figures.get(m.id).cloned().unwrap_or_default();
            let berth = match (&f.not_applicable, f.berth) {
                (Some(reason), None) => format!("n/a ({reason})"),
                (_, b) => cell(b),
            };
            let ratio = Self::ratio(m, &f).map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
            let mut target = m.target.describe(m.unit);
            match m
                .target
                .holds(f.berth.map(|b| b.median), Self::ratio(m, &f))
            {
                Some(true) => target.push_str(" ok"),
                Some(false) => target.push_str(" MISSED"),
                None => {}
            }
            rows.push([
                format!("{} ({})", m.title, m.unit),
                berth,
                cell(f.containerd),
                ratio,
                target,
            ]);
        }
        let mut widths = [0usize; 5];
        for row in &rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for (i, row) in rows.iter().enumerate() {
            let mut line = String::new();
            for (n, (c, w)) in row.iter().zip(widths).enumerate() {
                if n == 0 {
                    let _ = write!(line, "{c:<w$}  ");
                } else {
                    let _ = write!(line, "{c:>w$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
            if i == 0 {
                out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 8));
                out.push('\n');
            }
        }
        out
    }

    /// The JSON document written by `--out`.
    pub fn to_json(&self) -> Value {
        let metrics: Vec<Value> = METRICS
            .iter()
            .map(|m| {
                let f = self.figures.get(m.id).cloned().unwrap_or_default();
                let ratio = Self::ratio(m, &f);
                json!({
                    "id": m.id,
                    "title": m.title,
                    "unit": m.unit,
                    "berth": f.berth.map(|s| s.to_json()),
                    "containerd": f.containerd.map(|s| s.to_json()),
                    "not_applicable": f.not_applicable,
                    "ratio": ratio,
                    "target": m.target.describe(m.unit),
                    "target_holds": m.target.holds(f.berth.map(|b| b.median), ratio),
                })
            })
            .collect();
        json!({
            "context": self.context,
            "metrics": metrics,
            "missing": self.missing(),
            "errors": self.errors,
        })
    }
}

/// A figure with three significant digits or so, no exponent.
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || v == v.trunc() && a < 1e15 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique() {
        let mut ids: Vec<&str> = METRICS.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), METRICS.len());
    }

    #[test]
    fn missing_until_both_sides_or_na() {
        let mut r = Report::default();
        assert_eq!(r.missing().len(), METRICS.len());
        for m in METRICS.iter() {
            r.set(m.id, Summary::one(2.0), Summary::one(4.0));
        }
        assert!(r.missing().is_empty());
        r.set("lifecycle_cli_ms", None, Summary::one(4.0));
        assert_eq!(r.missing(), ["lifecycle_cli_ms"]);
        r.not_applicable("lifecycle_cli_ms", "berth run not implemented");
        assert!(r.missing().is_empty());
        let table = r.table();
        assert!(table.contains("n/a (berth run not implemented)"), "{table}");
        assert!(table.contains("0.50x"), "{table}");
    }

    #[test]
    fn targets() {
        assert_eq!(Target::RatioAtMost(0.5).holds(None, Some(0.4)), Some(true));
        assert_eq!(Target::Lower.holds(None, Some(1.0)), Some(false));
        assert_eq!(
            Target::RatioAtLeast(2.0).holds(None, Some(1.5)),
            Some(false)
        );
        assert_eq!(Target::BerthAtMost(15.0).holds(Some(9.0), None), Some(true));
        assert_eq!(Target::None.holds(Some(1.0), Some(1.0)), None);
    }

    #[test]
    fn json_has_every_metric() {
        let r = Report::default();
        let v = r.to_json();
        assert_eq!(v["metrics"].as_array().unwrap().len(), METRICS.len());
    }
}
