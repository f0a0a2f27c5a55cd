//! Debug abort points: crash tests' way into the windows a `kill -9` from outside cannot hit
//! on purpose (between starting a shim and creating its task, between a shim's delete and its
//! shutdown, ...), and hang points, where a test that kills a whole machine (a QEMU guest)
//! stops the process and pulls the plug itself.
//!
//! Code marks a window with [`hit`]`("<crate>.<operation>.<step>")`. The call is compiled into
//! every build and does nothing unless the process was started with
//!
//! ```text
//! BERTH_DEBUG_ABORT_AT=<point>[#<n>][,<point>[#<n>]...]
//! ```
//!
//! in its environment. Then the `n`-th time (1 when not given) the process passes `<point>`, it
//! writes `berth: abort point <point> reached` to stderr and sends itself SIGKILL: no
//! destructor, flush or shutdown code runs, exactly as after `kill -9` (a test can tell from
//! the line which point it hit). The variable is read once, at the first [`hit`].
//!
//! With
//!
//! ```text
//! BERTH_DEBUG_HANG_AT=<point>[#<n>][,<point>[#<n>]...]
//! ```
//!
//! the `n`-th pass of `<point>` writes `berth: hang point <point> reached` to stderr and then
//! sleeps forever, holding whatever it holds: a harness that watches stderr (the devmapper
//! crash test kills its QEMU guest at the line) crashes the machine at exactly that step, with
//! the kernel state the step left. Both variables may be set; they count passes separately.
//!
//! Point names are constants next to the code that passes them, so a test names them through
//! the crate (`berth_runtime::abort_points`). Points so far:
//!
//! | point | where |
//! |---|---|
//! | `runtime.create.shim-started` | task create: the shim runs, its task is not created yet |
//! | `runtime.delete.shim-deleted` | task delete: the shim deleted the task, it is not shut down yet |
//! | `devmapper.create.recorded` | prepare/view: snapshot and device records (state Creating) are durable, no kernel message sent |
//! | `devmapper.create.sent` | prepare/view: the pool made the thin device (`create_snap`), its record still says Creating |
//! | `devmapper.remove.deactivated` | remove: the thin device is deactivated, both records are unchanged |
//! | `devmapper.remove.deleted` | remove: the pool deleted the thin device (`delete`), its record (state Removing) is not gone yet |

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock};

/// The environment variable naming the points to abort at.
pub const ENV: &str = "BERTH_DEBUG_ABORT_AT";

/// The environment variable naming the points to hang at.
pub const HANG_ENV: &str = "BERTH_DEBUG_HANG_AT";

/// One `<point>[#<n>]` of the variable.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    point: String,
    nth: u64,
}

/// What the process was told, and how often each named point has been passed.
#[derive(Debug)]
struct Armed {
    entries: Vec<Entry>,
    passes: Mutex<HashMap<String, u64>>,
}

/// Parses the variable's value; entries that do not parse are ignored (a debug switch never
/// stops a daemon), an empty list disarms.
fn parse(value: &str) -> Vec<Entry> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .filter_map(|s| match s.split_once('#') {
            None => Some(Entry {
                point: s.to_owned(),
                nth: 1,
            }),
            Some((point, n)) => n
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0 && !point.is_empty())
                .map(|nth| Entry {
                    point: point.to_owned(),
                    nth,
                }),
        })
        .collect()
}

/// What the variable `name` arms, read once into `cell`.
fn armed_by(cell: &'static OnceLock<Option<Armed>>, name: &str) -> Option<&'static Armed> {
    cell.get_or_init(|| Armed::from_value(&std::env::var(name).ok()?))
        .as_ref()
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    armed_by(&ARMED, ENV)
}

fn hang_armed() -> Option<&'static Armed> {
    static HANG: OnceLock<Option<Armed>> = OnceLock::new();
    armed_by(&HANG, HANG_ENV)
}

impl Armed {
    /// The points a variable's value names; `None` when it names none.
    fn from_value(value: &str) -> Option<Armed> {
        let entries = parse(value);
        (!entries.is_empty()).then(|| Armed {
            entries,
            passes: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a pass of `point`; true when this pass is one to abort at.
    fn pass(&self, point: &str) -> bool {
        if !self.entries.iter().any(|e| e.point == point) {
            return false;
        }
        let mut passes = self.passes.lock().unwrap_or_else(|e| e.into_inner());
        let count = passes.entry(point.to_owned()).or_insert(0);
        *count += 1;
        let count = *count;
        self.entries
            .iter()
            .any(|e| e.point == point && e.nth == count)
    }
}

/// Marks abort (and hang) point `point`: kills the process with SIGKILL if [`ENV`] names this
/// pass of it, hangs forever if [`HANG_ENV`] does, does nothing otherwise.
pub fn hit(point: &str) {
    if hang_armed().is_some_and(|h| h.pass(point)) {
        let _ = writeln!(std::io::stderr(), "berth: hang point {point} reached");
        loop {
            std::thread::park();
        }
    }
    let Some(armed) = armed() else {
        return;
    };
    if armed.pass(point) {
        let _ = writeln!(std::io::stderr(), "berth: abort point {point} reached");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; should raise ever fail, still never go on.
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_and_counts() {
        assert_eq!(
            parse(" a.b , c#3,bad#x,#2,d#0,,"),
            vec![
                Entry {
                    point: "a.b".into(),
                    nth: 1
                },
                Entry {
                    point: "c".into(),
                    nth: 3
                },
            ]
        );
        assert!(parse("").is_empty());
        let armed = Armed {
            entries: parse("a,c#3"),
            passes: Mutex::new(HashMap::new()),
        };
        assert!(!armed.pass("b"));
        assert!(armed.pass("a"));
        assert!(!armed.pass("a"));
        assert!(!armed.pass("c"));
        assert!(!armed.pass("c"));
        assert!(armed.pass("c"));
        assert!(!armed.pass("c"));
    }

    #[test]
    fn hang_variable_parses_and_counts_like_the_abort_one() {
        assert!(Armed::from_value("").is_none());
        assert!(Armed::from_value(" , #3, x#0").is_none());
        let hang = Armed::from_value("devmapper.create.sent#2, devmapper.remove.deleted")
            .expect("two points");
        assert_eq!(
            hang.entries,
            vec![
                Entry {
                    point: "devmapper.create.sent".into(),
                    nth: 2
                },
                Entry {
                    point: "devmapper.remove.deleted".into(),
                    nth: 1
                },
            ]
        );
        assert!(!hang.pass("devmapper.create.recorded"));
        assert!(!hang.pass("devmapper.create.sent"));
        assert!(hang.pass("devmapper.create.sent"));
        assert!(hang.pass("devmapper.remove.deleted"));
        assert!(!hang.pass("devmapper.remove.deleted"));
    }

    #[test]
    fn inert_without_the_variable() {
        // The test runner sets neither: passing any point returns.
        if std::env::var_os(ENV).is_none() && std::env::var_os(HANG_ENV).is_none() {
            hit("runtime.create.shim-started");
            hit("devmapper.create.recorded");
        }
    }
}
