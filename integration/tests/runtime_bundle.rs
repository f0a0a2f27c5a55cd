//! End-to-end tests for the runtime v2 manager's bundles and runtime names (issue 12, item 4):
//! the task state dir is 0711, a container with user namespaces gets its bundle opened to the
//! remapped root so that `ctr run --uidmap/--gidmap` starts, the legacy
//! `io.containerd.runtime.v1.linux` runtime name runs on the v2 runtime, and an unknown runtime
//! is reported by the name the client gave.
//!
//! Every case also runs against a real containerd 1.6 with its runc shim
//! (`containerd_*`, STYLE.md §5): a case failing there is a wrong test. The running cases also
//! run on berthd with containerd's runc shim (`runc_shim_*`) and, for user namespaces, on
//! containerd with Berth's shim. runc's state directory is host-global, so container ids carry
//! the test process id.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::containerd::Containerd;
use berth_integration::image::build_busybox_image;
use berth_integration::{ctr_at, require_binary, require_root, CmdOutput, Daemon};

/// The namespace ctr uses when none is chosen.
const NS: &str = "default";

/// Name of the test image.
const IMAGE: &str = "docker.io/library/bb:latest";

/// Bundles and work dirs of runtime v2 tasks, under the state and root directories.
const TASK_DIR: &str = "io.containerd.runtime.v2.task";

/// The user namespace mapping of the userns case: container 0..65536 → host 100000...
const REMAP: &str = "0:100000:65536";

/// The host id container root is mapped to by [`REMAP`].
const REMAPPED_ROOT: u32 = 100_000;

/// containerd's runc shim.
const RUNC_SHIM: &str = "containerd-shim-runc-v2";

/// The runtime name under which a real containerd starts Berth's shim.
const BERTH_RUNTIME: &str = "io.containerd.berth.v2";

/// How long to wait for a task to show up.
const WAIT: Duration = Duration::from_secs(20);

/// The daemon a case runs against.
enum Target {
    Berthd(Daemon),
    /// The reference: the cases must hold on containerd too (STYLE.md §5).
    Containerd(Containerd),
}

impl Target {
    /// `berthd` with its default config; `None` when a prerequisite is missing.
    fn berthd() -> Option<Self> {
        if !require_root() || !require_binary("runc") {
            return None;
        }
        Some(Self::ready(Self::Berthd(Daemon::start())))
    }

    /// `berthd` whose `io.containerd.runc.v2` starts containerd's own runc shim.
    fn berthd_with_runc_shim() -> Option<Self> {
        if !require_root() || !require_binary("runc") || !require_binary(RUNC_SHIM) {
            return None;
        }
        let config = format!(
            "[plugins.\"io.containerd.runtime.v2.task\".runtimes]\n\
             \"io.containerd.runc.v2\" = \"{RUNC_SHIM}\"\n"
        );
        Some(Self::ready(Self::Berthd(Daemon::start_with(
            Some(&config),
            &[],
        ))))
    }

    /// A real containerd with its runc shim; `None` when a prerequisite is missing.
    fn containerd() -> Option<Self> {
        if !require_root()
            || !require_binary("runc")
            || !require_binary("containerd")
            || !require_binary(RUNC_SHIM)
        {
            return None;
        }
        Some(Self::ready(Self::Containerd(Containerd::start())))
    }

    /// Imports the busybox image.
    fn ready(t: Self) -> Self {
        let img = build_busybox_image(t.dir(), IMAGE);
        let archive = img.archive.to_str().expect("utf-8 archive path");
        t.ctr(&["images", "import", archive]).ok();
        t
    }

    fn address(&self) -> &Path {
        match self {
            Self::Berthd(d) => d.address(),
            Self::Containerd(c) => c.address(),
        }
    }

    /// The private directory holding everything of the daemon.
    fn dir(&self) -> &Path {
        match self {
            Self::Berthd(d) => d.dir(),
            Self::Containerd(c) => c.dir(),
        }
    }

    fn state(&self) -> PathBuf {
        match self {
            Self::Berthd(d) => d.state().to_owned(),
            Self::Containerd(c) => c.dir().join("state"),
        }
    }

    fn ctr(&self, args: &[&str]) -> CmdOutput {
        ctr_at(self.address(), args)
    }
}

/// A container id unique to this test process and to this call: runc's state directory is
/// host-global, and the same case runs on several targets at once.
fn unique(base: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{base}-{}-{n}", std::process::id())
}

/// Removes containers on drop, whatever state they are in.
struct Containers<'a> {
    target: &'a Target,
    ids: Vec<String>,
}

impl Drop for Containers<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.target.ctr(&["tasks", "kill", "-s", "KILL", id]);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !self.target.ctr(&["tasks", "delete", id]).success()
                && self
                    .target
                    .ctr(&["tasks", "ls", "-q"])
                    .stdout
                    .lines()
                    .any(|l| l == id)
                && Instant::now() < deadline
            {
                thread::sleep(Duration::from_millis(200));
            }
            let _ = self.target.ctr(&["containers", "rm", id]);
            let _ = self.target.ctr(&["snapshots", "rm", id]);
        }
    }
}

/// Permission bits of `path`.
fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Case: the runtime's state dir, which holds every bundle, is 0711 so that a remapped
/// container root can traverse it (containerd `runtime/v2/manager.go` `NewShimManager`).
fn task_state_dir_case(t: &Target) {
    let dir = t.state().join(TASK_DIR);
    assert_eq!(mode(&dir), 0o711, "{}", dir.display());
}

/// Case: `run --uidmap 0:100000:65536 --gidmap 0:100000:65536` starts and prints its output;
/// while it runs, its bundle belongs to the remapped root's group with mode 0710
/// (containerd `runtime/v2/bundle_linux.go`).
fn userns_case(t: &Target, runtime: &[&str]) {
    // The remapped root must traverse every directory above the bundle and the snapshots; the
    // test's private directory is 0700 (a deployment's /run and /var/lib are 0755).
    fs::set_permissions(t.dir(), fs::Permissions::from_mode(0o711)).expect("chmod the test dir");
    let (long, short) = (unique("userns-long"), unique("userns-echo"));
    let _guard = Containers {
        target: t,
        ids: vec![long.clone(), short.clone()],
    };
    let mut map = vec!["--uidmap", REMAP, "--gidmap", REMAP];
    map.extend_from_slice(runtime);

    let mut args = vec!["run", "-d"];
    args.extend(&map);
    args.extend([IMAGE, &long, "sleep", "60"]);
    t.ctr(&args).ok();
    let deadline = Instant::now() + WAIT;
    while !t.ctr(&["tasks", "ls"]).stdout.contains("RUNNING") {
        assert!(Instant::now() < deadline, "{long} never ran");
        thread::sleep(Duration::from_millis(100));
    }
    let bundle = t.state().join(TASK_DIR).join(NS).join(&long);
    let meta = fs::metadata(&bundle).unwrap_or_else(|e| panic!("{}: {e}", bundle.display()));
    assert_eq!(meta.gid(), REMAPPED_ROOT, "group of {}", bundle.display());
    assert_eq!(meta.uid(), 0, "owner of {}", bundle.display());
    assert_eq!(mode(&bundle), 0o710, "{}", bundle.display());
    // Inside, the process is root; outside, it is the remapped root.
    let out = t.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "id",
        &long,
        "cat",
        "/proc/self/uid_map",
    ]);
    let fields: Vec<&str> = out.ok().split_whitespace().collect();
    assert_eq!(fields, ["0", "100000", "65536"], "{out}");

    let mut args = vec!["run", "--rm"];
    args.extend(&map);
    args.extend([IMAGE, &short, "sh", "-c", "echo hello from $(id -u)"]);
    let out = t.ctr(&args);
    assert_eq!(out.ok(), "hello from 0\n", "{out}");
}

/// Case: the legacy runtime name `io.containerd.runtime.v1.linux` still runs a container, as
/// containerd 1.6 still accepts it; `--no-pivot` sends its v1 `CreateOptions`.
fn legacy_runtime_case(t: &Target) {
    let (plain, no_pivot) = (unique("legacy"), unique("legacy-nopivot"));
    let _guard = Containers {
        target: t,
        ids: vec![plain.clone(), no_pivot.clone()],
    };
    let runtime = ["--runtime", "io.containerd.runtime.v1.linux"];
    let mut args = vec!["run", "--rm"];
    args.extend(runtime);
    args.extend([IMAGE, &plain, "echo", "hello"]);
    let out = t.ctr(&args);
    assert_eq!(out.ok(), "hello\n", "{out}");

    let mut args = vec!["run", "--rm", "--no-pivot"];
    args.extend(runtime);
    args.extend([IMAGE, &no_pivot, "echo", "hello"]);
    let out = t.ctr(&args);
    assert_eq!(out.ok(), "hello\n", "{out}");
}

/// Case: a runtime without a shim binary, and a runtime that is a path to a missing binary,
/// fail with a message naming what the client gave, and leave no task and no bundle.
fn unknown_runtime_case(t: &Target) {
    let (named, path) = (unique("nope"), unique("nopath"));
    let _guard = Containers {
        target: t,
        ids: vec![named.clone(), path.clone()],
    };
    let out = t.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.nope.v2",
        IMAGE,
        &named,
        "true",
    ]);
    let err = out.fails();
    assert!(
        err.contains(
            "runtime \"io.containerd.nope.v2\" binary not installed \"containerd-shim-nope-v2\""
        ),
        "{out}"
    );
    let missing = t.dir().join("no-such-shim");
    let missing = missing.to_str().expect("utf-8 path");
    let out = t.ctr(&["run", "--rm", "--runtime", missing, IMAGE, &path, "true"]);
    let err = out.fails();
    assert!(err.contains(missing), "{out}");
    let tasks = t.ctr(&["tasks", "ls", "-q"]);
    assert!(tasks.ok().trim().is_empty(), "{tasks}");
    let ns_dir = t.state().join(TASK_DIR).join(NS);
    for id in [&named, &path] {
        assert!(!ns_dir.join(id).exists(), "bundle of {id} left");
    }
}

#[test]
fn task_state_dir_is_0711() {
    if let Some(t) = Target::berthd() {
        task_state_dir_case(&t);
    }
}

#[test]
fn containerd_task_state_dir_is_0711() {
    if let Some(t) = Target::containerd() {
        task_state_dir_case(&t);
    }
}

#[test]
fn userns_container_runs() {
    if let Some(t) = Target::berthd() {
        userns_case(&t, &[]);
    }
}

#[test]
fn runc_shim_userns_container_runs() {
    if let Some(t) = Target::berthd_with_runc_shim() {
        userns_case(&t, &[]);
    }
}

#[test]
fn containerd_userns_container_runs() {
    if let Some(t) = Target::containerd() {
        userns_case(&t, &[]);
    }
}

#[test]
fn containerd_berth_shim_userns_container_runs() {
    if let Some(t) = Target::containerd() {
        userns_case(&t, &["--runtime", BERTH_RUNTIME]);
    }
}

#[test]
fn legacy_runtime_v1_linux_runs() {
    if let Some(t) = Target::berthd() {
        legacy_runtime_case(&t);
    }
}

#[test]
fn runc_shim_legacy_runtime_v1_linux_runs() {
    if let Some(t) = Target::berthd_with_runc_shim() {
        legacy_runtime_case(&t);
    }
}

#[test]
fn containerd_legacy_runtime_v1_linux_runs() {
    if let Some(t) = Target::containerd() {
        legacy_runtime_case(&t);
    }
}

#[test]
fn unknown_runtime_is_named() {
    if let Some(t) = Target::berthd() {
        unknown_runtime_case(&t);
    }
}

#[test]
fn containerd_unknown_runtime_is_named() {
    if let Some(t) = Target::containerd() {
        unknown_runtime_case(&t);
    }
}
