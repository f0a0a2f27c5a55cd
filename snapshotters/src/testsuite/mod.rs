//! The snapshotter conformance suite (containerd `snapshots/testsuite/testsuite.go`): named
//! checks run against any [`Snapshotter`] built by a constructor. Checks that mount need root;
//! without it they print `skipped: <reason>` and pass, unless `CI=true`, where they fail.
//!
//! Each driver's test module runs the whole suite as one `#[test]` per check:
//!
//! ```text
//! fn make(root: &Path) -> Arc<dyn Snapshotter> { Arc::new(NativeSnapshotter::new(root).unwrap()) }
//! berth_snapshotters::snapshotter_suite!(make);            // or (make, setup) with a root setup
//! ```
//!
//! Checks run one at a time (a process-wide lock), since they mount and may use loop devices.

mod checks;
mod helpers;

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use berth_testutil::{require_root_for, skip};

use crate::snapshotter::Snapshotter;

/// Builds a snapshotter on a root directory; called again on the same root to reopen.
pub type MakeFn = dyn Fn(&Path) -> Arc<dyn Snapshotter>;

/// Prepares a root before the first [`MakeFn`] call (e.g. mounts a btrfs loop device on it)
/// and returns a guard dropped after the check; `Err` is the reason to skip.
pub type SetupFn = dyn Fn(&Path) -> Result<Option<Box<dyn Any>>, String>;

/// One named check.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// The check's name, also the `#[test]` name [`snapshotter_suite!`](crate::snapshotter_suite)
    /// generates.
    pub name: &'static str,
    /// True when the check mounts (and so needs root).
    pub mounts: bool,
    /// The check.
    pub run: fn(&mut Harness<'_>),
}

/// Every check, in the order [`run_all`] runs them.
pub const CHECKS: &[Check] = &[
    Check {
        name: "basic",
        mounts: true,
        run: checks::basic,
    },
    Check {
        name: "stat_active",
        mounts: false,
        run: checks::stat_active,
    },
    Check {
        name: "stat_committed",
        mounts: false,
        run: checks::stat_committed,
    },
    Check {
        name: "transitivity",
        mounts: true,
        run: checks::transitivity,
    },
    Check {
        name: "deleted_files_in_child",
        mounts: true,
        run: checks::deleted_files_in_child,
    },
    Check {
        name: "view_readonly",
        mounts: true,
        run: checks::view_readonly,
    },
    Check {
        name: "update",
        mounts: false,
        run: checks::update,
    },
    Check {
        name: "remove",
        mounts: false,
        run: checks::remove,
    },
    Check {
        name: "walk",
        mounts: false,
        run: checks::walk,
    },
    Check {
        name: "usage",
        mounts: true,
        run: checks::usage,
    },
    Check {
        name: "layers_128",
        mounts: true,
        run: checks::layers_128,
    },
    Check {
        name: "concurrent_prepare",
        mounts: true,
        run: checks::concurrent_prepare,
    },
    Check {
        name: "crash_recovery",
        mounts: true,
        run: checks::crash_recovery,
    },
    Check {
        name: "missing_parent",
        mounts: false,
        run: checks::missing_parent,
    },
    Check {
        name: "duplicate_key",
        mounts: false,
        run: checks::duplicate_key,
    },
];

/// What a check works with: the snapshotter, its root, a scratch directory, and a way to
/// reopen the snapshotter as after a restart.
pub struct Harness<'a> {
    root: PathBuf,
    work: PathBuf,
    make: &'a MakeFn,
    sn: Option<Arc<dyn Snapshotter>>,
}

impl std::fmt::Debug for Harness<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("root", &self.root)
            .field("sn", &self.sn)
            .finish_non_exhaustive()
    }
}

impl Harness<'_> {
    /// The snapshotter under test.
    pub fn sn(&self) -> &dyn Snapshotter {
        self.sn.as_deref().expect("the snapshotter is open")
    }

    /// A shareable handle on the snapshotter (for threads).
    pub fn shared(&self) -> Arc<dyn Snapshotter> {
        self.sn.clone().expect("the snapshotter is open")
    }

    /// The snapshotter's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A scratch directory outside the root.
    pub fn work(&self) -> &Path {
        &self.work
    }

    /// Drops the snapshotter (as a crash or restart would) and builds a new one on the same
    /// root.
    pub fn reopen(&mut self) {
        self.sn = None;
        self.sn = Some((self.make)(&self.root));
    }
}

static SERIAL: Mutex<()> = Mutex::new(());

/// The process-wide lock that keeps mounting tests serial.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs every check against snapshotters built by `make`, one fresh root each.
pub fn run_all(make: &MakeFn) {
    for check in CHECKS {
        run_check(check.name, make, None);
    }
}

/// Runs the check called `name` on a fresh temp root: `setup` (if any, which implies root)
/// prepares the root, `make` builds the snapshotter. Panics if the check fails.
pub fn run_check(name: &str, make: &MakeFn, setup: Option<&SetupFn>) {
    let check = CHECKS
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no snapshotter check named {name}"));
    let _serial = serial();
    if (check.mounts || setup.is_some()) && !require_root_for(&format!("check {name} (mounts)")) {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("snapshot-suite-")
        .tempdir()
        .expect("create suite temp dir");
    let root = tmp.path().join("root");
    let work = tmp.path().join("work");
    std::fs::create_dir(&root).expect("create root");
    std::fs::create_dir(&work).expect("create work");
    let _guard = match setup.map(|s| s(&root)) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(guard))) => Some(guard),
        Some(Err(reason)) => {
            skip(&format!("check {name}: {reason}"));
            return;
        }
    };
    // Declared after the guard so it drops (closing the snapshotter) before the guard does.
    let mut harness = Harness {
        sn: Some(make(&root)),
        root,
        work,
        make,
    };
    (check.run)(&mut harness);
}

/// Generates one `#[test]` per suite check, named after the check, for the snapshotter that
/// `$make` (a `fn(&Path) -> Arc<dyn Snapshotter>`) builds; `$setup` (a
/// [`SetupFn`](crate::testsuite::SetupFn)-shaped fn) prepares each root first. Attributes
/// after them (`#[cfg(feature = "...")]`, say) go on every generated test.
#[macro_export]
macro_rules! snapshotter_suite {
    ($make:expr) => {
        $crate::snapshotter_suite!(@tests $make, None);
    };
    ($make:expr, $setup:expr $(, #[$attr:meta])*) => {
        $crate::snapshotter_suite!(@tests $make, Some(&$setup as &$crate::testsuite::SetupFn)
            $(, #[$attr])*);
    };
    (@tests $make:expr, $setup:expr $(, #[$attr:meta])*) => {
        $crate::snapshotter_suite!(@each $make, $setup; [$(#[$attr])*]
            basic, stat_active, stat_committed, transitivity, deleted_files_in_child,
            view_readonly, update, remove, walk, usage, layers_128, concurrent_prepare,
            crash_recovery, missing_parent, duplicate_key);
    };
    (@each $make:expr, $setup:expr; $attrs:tt $($check:ident),* $(,)?) => {
        $(
            $crate::snapshotter_suite!(@one $make, $setup; $attrs $check);
        )*
    };
    (@one $make:expr, $setup:expr; [$(#[$attr:meta])*] $check:ident) => {
        #[test]
        $(#[$attr])*
        fn $check() {
            $crate::testsuite::run_check(stringify!($check), &$make, $setup);
        }
    };
}
