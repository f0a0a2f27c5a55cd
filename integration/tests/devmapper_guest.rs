//! The devmapper snapshotter, for real, in a QEMU guest booting Debian's kernel (this machine's
//! kernel has no device-mapper): the harness is `berth_integration::guest`.
//!
//! One initramfs is built per run of this binary (busybox, the dm/loop/ext4/overlay modules,
//! dmsetup, thin-provisioning-tools, mkfs.ext4, berthd, berth, berth-devmapper-dump, the
//! snapshotters library's test binary and the busybox test image); every boot of it is
//! serialised (two TCG guests at once on two cores would only slow both). Each test prints the
//! time of its phases. A failure message carries the tail of the guest's serial console, where
//! berthd's stderr and the guest tests' output go.
//!
//! - `guest_has_device_mapper`: the modules load; a pool on two loop files takes a thin device
//!   with ext4, and deleting it frees its blocks.
//! - `conformance_suite_passes_in_the_guest`: the snapshotters library's `devmapper::` tests
//!   built with the `devmapper-kernel-tests` feature (the shared conformance suite and the
//!   devmapper ones).
//! - `berthd_unpacks_onto_devmapper_as_onto_overlayfs`: berthd with the devmapper plugin on two
//!   virtio disks (pool data + metadata), its root on a third (ext4); the image unpacks on both
//!   snapshotters to the same tree; removing a snapshot, and then the image, frees pool blocks.
//! - `crash_in_create_and_remove_is_recovered`: QEMU is killed (SIGKILL) while berthd hangs at a
//!   debug hang point inside a snapshot create, then inside a remove; after each reboot on the
//!   same disks berthd starts and the pool's thin devices are the snapshotter's records; the
//!   conformance suite passes again after.

// A file under tests/ is a test crate of its own (as in the other integration tests).
#![allow(clippy::tests_outside_test_module)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use berth_integration::berth_cli::berth_bin;
use berth_integration::berthd_bin;
use berth_integration::guest::{
    create_disk, create_ext4_disk, require_guest, GuestRun, Initramfs, Kernel, Outcome, Vm,
};
use berth_integration::image::{build_busybox_image, sha256_digest, TestImage, HELLO};
use serde_json::Value;

/// The image's name in the guest.
const IMAGE: &str = "docker.io/library/bb:latest";

/// The snapshotters library test binary in the guest.
const SUITE: &str = "/usr/local/bin/snapshotters-tests";

/// Environment variable naming the snapshotters library test binary built with the
/// `devmapper-kernel-tests` feature (else this test builds it).
const SUITE_ENV: &str = "BERTH_SNAPSHOTTERS_TEST_BIN";

/// Everything the guests share: built once.
struct Setup {
    kernel: Kernel,
    /// `$CARGO_TARGET_TMPDIR/devmapper-guest`: the initramfs, disks, console logs (replaced by
    /// the next run).
    dir: PathBuf,
    initramfs: PathBuf,
    image: TestImage,
}

fn setup() -> Option<&'static Setup> {
    static SETUP: OnceLock<Option<Setup>> = OnceLock::new();
    SETUP.get_or_init(build_setup).as_ref()
}

/// One guest at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The snapshotters library's test binary with the `devmapper-kernel-tests` feature (the
/// tests that need device-mapper): `$BERTH_SNAPSHOTTERS_TEST_BIN`, else built here with the
/// cargo that built this test (`cargo test --no-run`; up to date after the first time, and
/// cargo does not hold its build lock while tests run).
fn suite_binary() -> PathBuf {
    if let Some(p) = std::env::var_os(SUITE_ENV) {
        return PathBuf::from(p);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../snapshotters/Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["test", "--no-run", "--lib", "--message-format=json"])
        .args(["--features", "devmapper-kernel-tests", "--manifest-path"])
        .arg(&manifest)
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo could not build the devmapper kernel tests ({})",
        out.status
    );
    let executable = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| {
            m["reason"] == "compiler-artifact" && m["target"]["name"] == "berth_snapshotters"
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from));
    executable.unwrap_or_else(|| {
        panic!("cargo built no berth_snapshotters test executable (or name one in ${SUITE_ENV})")
    })
}

fn build_setup() -> Option<Setup> {
    let kernel = require_guest()?;
    let t = Instant::now();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("devmapper-guest");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the guest work directory");
    let image = build_busybox_image(&dir, IMAGE);
    let berthd = berthd_bin();
    let dump = berthd.with_file_name("berth-devmapper-dump");
    assert!(
        dump.is_file(),
        "{} not built: cargo build --workspace builds it",
        dump.display()
    );
    let suite = suite_binary();
    println!("guest: snapshotters test binary {}", suite.display());
    let mut initramfs = Initramfs::new(&kernel);
    initramfs
        .devmapper()
        .binary(&berthd, "/usr/local/bin/berthd")
        .binary(&berth_bin(), "/usr/local/bin/berth")
        .binary(&dump, "/usr/local/bin/berth-devmapper-dump")
        .binary(&suite, SUITE)
        .file(
            "/images/bb.tar",
            std::fs::read(&image.archive).expect("read the test image"),
            0o644,
        );
    let path = dir.join("initramfs.cpio");
    initramfs.write(&path);
    phase(format_args!("initramfs built in {:.1?}", t.elapsed()));
    Some(Setup {
        kernel,
        dir,
        initramfs: path,
        image,
    })
}

impl Setup {
    /// A machine with `disks` fresh raw images of the given sizes (MiB) under `<dir>/<name>/`;
    /// `ext4` names the indices that get an empty ext4 filesystem.
    fn vm(&self, name: &str, disks: &[u64], ext4: &[usize]) -> Vm {
        let dir = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test's directory");
        let mut vm = Vm::new(&self.kernel, &self.initramfs, &dir);
        for (i, mib) in disks.iter().enumerate() {
            let p = dir.join(format!("disk{i}.img"));
            if ext4.contains(&i) {
                create_ext4_disk(&p, mib << 20);
            } else {
                create_disk(&p, mib << 20);
            }
            vm.disks.push(p);
        }
        vm
    }

    /// The chain id of the image's top layer: its snapshot's name.
    fn top_chain_id(&self) -> String {
        let mut chain = String::new();
        for layer in &self.image.layers {
            chain = if chain.is_empty() {
                layer.diff_id.clone()
            } else {
                sha256_digest(format!("{chain} {}", layer.diff_id).as_bytes())
            };
        }
        chain
    }
}

/// Prints a phase's time on stderr past libtest's capture (which takes only `print!` and
/// `eprint!`), so that CI logs show where the guest minutes go.
fn phase(what: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "guest phase: {what}");
}

/// Boots and prints the time it took.
fn timed(run: GuestRun) -> GuestRun {
    phase(format_args!(
        "`{}` {:?} in {:.1?}",
        run.name, run.outcome, run.elapsed
    ));
    run
}

/// `passed` of the `test result: ok. <passed> passed; ...` line of a libtest run in the
/// console, or a panic showing the console.
#[track_caller]
fn suite_passed(run: &GuestRun) -> usize {
    let line = run
        .console
        .lines()
        .find(|l| l.starts_with("test result: ok."))
        .unwrap_or_else(|| panic!("no passing libtest result line\n{}", run.report()));
    line.split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read `{line}`"))
}

/// The shell text running the devmapper tests of the snapshotters library (`extra`: more
/// libtest arguments).
fn suite_script(extra: &str) -> String {
    format!(
        "{SUITE} devmapper::kernel_tests:: devmapper::pool::kernel_tests:: --test-threads=1 {extra}\n"
    )
}

/// The least number of kernel tests the suite must run: the conformance suite's 15 checks and
/// the 7 devmapper-specific ones (the ioctl layer's 2 may be skipped), so a filter that matched
/// less, or a build without the feature, fails.
const MIN_SUITE_TESTS: usize = 22;

#[test]
fn guest_has_device_mapper() {
    let Some(s) = setup() else { return };
    let _one = serial();
    let vm = s.vm("has-dm", &[], &[]);
    let script = r#"
set -e
dmsetup version
truncate -s 512M /tmp/data; truncate -s 16M /tmp/meta
d=$(losetup -f); losetup $d /tmp/data
m=$(losetup -f); losetup $m /tmp/meta
dmsetup create pool --table "0 $((512*2048)) thin-pool $m $d 128 32768"
dmsetup message pool 0 "create_thin 1"
dmsetup create thin1 --table "0 409600 thin /dev/mapper/pool 1"
mkfs.ext4 -q /dev/mapper/thin1
mount /dev/mapper/thin1 /mnt
dd if=/dev/urandom of=/mnt/f bs=1M count=16 2>/dev/null
umount /mnt
echo "STATUS-WRITTEN $(dmsetup status pool)"
dmsetup remove thin1
dmsetup message pool 0 "delete 1"
echo "STATUS-DELETED $(dmsetup status pool)"
dmsetup remove pool
"#;
    let run = timed(vm.run("has-dm", script, Duration::from_secs(120)));
    run.assert_success();
    let written = used_data_blocks(&run, "STATUS-WRITTEN ");
    let deleted = used_data_blocks(&run, "STATUS-DELETED ");
    // 16 MiB in 64 KiB blocks, plus the filesystem's metadata.
    assert!(
        written >= 256 && deleted == 0,
        "used data blocks: {written} with the file, {deleted} after delete\n{}",
        run.report()
    );
}

/// The used data blocks from the `dmsetup status` of a thin pool printed after `prefix`
/// (`0 <len> thin-pool <transaction> <used>/<total meta> <used>/<total data> ...`).
#[track_caller]
fn used_data_blocks(run: &GuestRun, prefix: &str) -> u64 {
    let line = run
        .lines_with(prefix)
        .pop()
        .unwrap_or_else(|| panic!("no `{prefix}` line\n{}", run.report()));
    let field = line
        .split_whitespace()
        .nth(5)
        .unwrap_or_else(|| panic!("short pool status `{line}`"));
    field
        .split('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad data usage `{field}` in `{line}`"))
}

#[test]
fn conformance_suite_passes_in_the_guest() {
    let Some(s) = setup() else { return };
    let _one = serial();
    let vm = s.vm("suite", &[], &[]);
    let run = timed(vm.run("suite", &suite_script(""), Duration::from_secs(600)));
    run.assert_success();
    let passed = suite_passed(&run);
    assert!(
        passed >= MIN_SUITE_TESTS,
        "only {passed} devmapper tests ran\n{}",
        run.report()
    );
}

/// berthd's config in the guest: the devmapper pool on `/dev/vda` (data) and `/dev/vdb`
/// (metadata); berthd's root is `/dev/vdc` mounted on /var/lib/berth.
const CONFIG: &str = r#"version = 2
[plugins."io.containerd.snapshotter.v1.devmapper"]
pool_name = "berth-pool"
base_image_size = "128MB"
pool_data_device = "/dev/vda"
pool_metadata_device = "/dev/vdb"
"#;

/// Disk sizes (MiB): pool data, pool metadata, berthd's root (ext4).
const DISKS: [u64; 3] = [4096, 256, 1024];

/// Shell functions every berthd guest script starts with: mount berthd's root, write the
/// config, `start_berthd [hang point]` (waits until it serves), `stop_berthd`, `B` (the CLI).
fn berthd_prelude() -> String {
    format!(
        r#"set -e
mkdir -p /var/lib/berth /run/berth /etc/berth
mount -t ext4 /dev/vdc /var/lib/berth
cat > /etc/berth/config.toml <<'CONFIG'
{CONFIG}CONFIG
ADDR=/run/berth/berth.sock
B() {{ berth --address $ADDR "$@"; }}
start_berthd() {{
  if [ -n "$1" ]; then export BERTH_DEBUG_HANG_AT="$1"; else unset BERTH_DEBUG_HANG_AT; fi
  berthd --config /etc/berth/config.toml --root /var/lib/berth --state /run/berth --address $ADDR --log-level warn &
  BERTHD=$!
  unset BERTH_DEBUG_HANG_AT
  i=0
  until B version >/dev/null 2>&1; do
    i=$((i+1))
    if [ $i -gt 900 ] || ! kill -0 $BERTHD 2>/dev/null; then echo "berthd did not start"; return 1; fi
    sleep 0.2
  done
  echo "berthd started"
}}
stop_berthd() {{ kill -TERM $BERTHD; wait $BERTHD || true; echo "berthd stopped"; }}
# path, type, mode, uid, gid, size, sha256 / link target of every entry under $1 but the ext4
# lost+found, each line prefixed with $2.
manifest() {{
  ( cd "$1" && find . ! -path ./lost+found ! -path './lost+found/*' | sort | while read -r p; do
    if [ -L "$p" ]; then echo "$2$p link $(stat -c '%a %u %g' "$p") $(readlink "$p")"
    elif [ -f "$p" ]; then echo "$2$p file $(stat -c '%a %u %g %s' "$p") $(sha256sum < "$p" | cut -d' ' -f1)"
    elif [ -d "$p" ]; then echo "$2$p dir $(stat -c '%a %u %g' "$p")"
    else echo "$2$p other $(stat -c '%F %a %u %g %t %T' "$p")"; fi
  done )
}}
pool_status() {{ echo "$1 $(dmsetup status berth-pool)"; }}
"#
    )
}

#[test]
fn berthd_unpacks_onto_devmapper_as_onto_overlayfs() {
    let Some(s) = setup() else { return };
    let _one = serial();
    let vm = s.vm("unpack", &DISKS, &[2]);
    let chain = s.top_chain_id();
    let script = format!(
        r#"{prelude}
start_berthd
B images import --snapshotter devmapper /images/bb.tar
B images unpack --snapshotter overlayfs {IMAGE}
B snapshots --snapshotter devmapper ls
mkdir -p /mnt/dm /mnt/ov
B snapshots --snapshotter devmapper view --target /mnt/dm v-dm {chain} | sed "s/ -o $//" | sh
B snapshots --snapshotter overlayfs view --target /mnt/ov v-ov {chain} | sed "s/ -o $//" | sh
grep -E ' /mnt/(dm|ov) ' /proc/mounts
manifest /mnt/dm "DM "
manifest /mnt/ov "OV "
umount /mnt/dm /mnt/ov
B snapshots --snapshotter devmapper rm v-dm
B snapshots --snapshotter overlayfs rm v-ov
# An active snapshot with 32 MiB of data: its removal must give the blocks back.
mkdir -p /mnt/rw
B snapshots --snapshotter devmapper prepare --target /mnt/rw rw {chain} | sed "s/ -o $//" | sh
dd if=/dev/urandom of=/mnt/rw/data bs=1M count=32 2>/dev/null
umount /mnt/rw
sync
pool_status STATUS-WRITTEN
B snapshots --snapshotter devmapper rm rw
pool_status STATUS-RM
echo "THINS-RM $(dmsetup ls | grep -c berth-pool-snap || true)"
B images rm --sync {IMAGE}
sleep 2
B snapshots --snapshotter devmapper ls
echo "SNAPSHOTS-LEFT $(B snapshots --snapshotter devmapper ls | tail -n +2 | wc -l)"
pool_status STATUS-GC
stop_berthd
"#,
        prelude = berthd_prelude()
    );
    let run = timed(vm.run("unpack", &script, Duration::from_secs(300)));
    run.assert_success();

    let dm = manifest(&run, "DM ");
    let ov = manifest(&run, "OV ");
    let hello = format!(
        "file 644 0 0 {} {}",
        HELLO.len(),
        sha256_digest(HELLO).trim_start_matches("sha256:")
    );
    assert_eq!(
        ov.get("./etc/hello"),
        Some(&hello),
        "the overlayfs tree lacks the second layer's file\n{}",
        run.report()
    );
    assert!(
        ov.get("./bin/sh").is_some_and(|e| e.ends_with(" busybox")),
        "the overlayfs tree lacks bin/sh -> busybox\n{}",
        run.report()
    );
    assert_eq!(
        dm,
        ov,
        "the devmapper unpack differs from the overlayfs unpack: only devmapper {:?}, only \
         overlayfs {:?}",
        diff(&dm, &ov),
        diff(&ov, &dm)
    );

    let written = used_data_blocks(&run, "STATUS-WRITTEN ");
    let removed = used_data_blocks(&run, "STATUS-RM ");
    let collected = used_data_blocks(&run, "STATUS-GC ");
    // 32 MiB are 512 blocks of 64 KiB.
    assert!(
        written >= removed + 500,
        "removing the active snapshot freed {} data blocks (from {written} to {removed}); \
         32 MiB were written to it\n{}",
        written.saturating_sub(removed),
        run.report()
    );
    assert_eq!(
        run.lines_with("SNAPSHOTS-LEFT ").pop().as_deref(),
        Some("0"),
        "snapshots are left after the image's removal and GC\n{}",
        run.report()
    );
    assert!(
        collected < removed,
        "removing the image (GC of its snapshots) freed no data blocks: {removed} before, \
         {collected} after\n{}",
        run.report()
    );
    assert_eq!(
        run.lines_with("THINS-RM ").pop().as_deref(),
        Some("0"),
        "a snapshot device is still active after all views and actives went\n{}",
        run.report()
    );
}

/// Path -> the rest of the manifest line, for lines prefixed with `prefix`.
fn manifest(run: &GuestRun, prefix: &str) -> BTreeMap<String, String> {
    let map: BTreeMap<String, String> = run
        .lines_with(prefix)
        .into_iter()
        .filter_map(|l| l.split_once(' ').map(|(p, r)| (p.to_owned(), r.to_owned())))
        .collect();
    assert!(
        map.len() > 10,
        "manifest `{prefix}` has {} entries\n{}",
        map.len(),
        run.report()
    );
    map
}

fn diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| format!("{k} {v}"))
        .collect()
}

/// Prints, between markers, what the consistency check needs with berthd stopped: the pool's
/// thin device ids (`thin_dump` of a metadata snapshot of the live pool) and the snapshotter's
/// records (`berth-devmapper-dump`).
const CHECK: &str = r#"
if dmsetup status berth-pool >/dev/null 2>&1; then
  dmsetup message berth-pool 0 reserve_metadata_snap
  thin_dump --metadata-snap /dev/vdb > /tmp/thin.xml
  dmsetup message berth-pool 0 release_metadata_snap
else
  thin_dump /dev/vdb > /tmp/thin.xml
fi
grep -o '<device dev_id="[0-9]*"' /tmp/thin.xml | sed 's/[^0-9]//g' | sed 's/^/THIN /'
echo DUMP-BEGIN
berth-devmapper-dump /var/lib/berth/io.containerd.snapshotter.v1.devmapper
echo DUMP-END
"#;

/// The device ids in the pool and the snapshotter's records printed by [`CHECK`]; panics unless
/// they agree: every record's device is in the pool and every thin device has a record, no
/// record is in a transitional state, and every snapshot device belongs to a snapshot.
#[track_caller]
fn check_consistent(run: &GuestRun) -> Value {
    let thins: BTreeSet<u64> = run
        .lines_with("THIN ")
        .iter()
        .map(|n| n.trim().parse().expect("a thin id"))
        .collect();
    let text = run
        .console
        .split_once("DUMP-BEGIN\n")
        .and_then(|(_, rest)| rest.split_once("DUMP-END"))
        .map(|(json, _)| json)
        .unwrap_or_else(|| panic!("no dump in the console\n{}", run.report()));
    let dump: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("the dump is not JSON ({e})\n{}", run.report()));
    let devices = dump["devices"].as_array().cloned().unwrap_or_default();
    let snapshot_ids: BTreeSet<String> = dump["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect();
    let mut recorded = BTreeSet::new();
    let mut problems = Vec::new();
    for d in &devices {
        let id = d["device_id"].as_u64().unwrap_or(u64::MAX);
        let name = d["name"].as_str().unwrap_or("");
        let state = d["state"].as_str().unwrap_or("");
        if !matches!(state, "Activated" | "Deactivated" | "Removed") {
            problems.push(format!("{name} (thin {id}) is left in state {state}"));
        }
        if state != "Removed" {
            recorded.insert(id);
        }
        if let Some(snap) = name.strip_prefix("berth-pool-snap-") {
            if !snapshot_ids.contains(snap) {
                problems.push(format!("device {name} has no snapshot with id {snap}"));
            }
        }
    }
    for id in &snapshot_ids {
        let name = format!("berth-pool-snap-{id}");
        if !devices.iter().any(|d| d["name"] == name.as_str()) {
            problems.push(format!("snapshot id {id} has no device record {name}"));
        }
    }
    for orphan in thins.difference(&recorded) {
        problems.push(format!(
            "thin device {orphan} in the pool has no record (orphan)"
        ));
    }
    for missing in recorded.difference(&thins) {
        problems.push(format!(
            "record of thin device {missing} but no such device in the pool"
        ));
    }
    assert!(
        problems.is_empty() && !thins.is_empty(),
        "pool and snapshotter metadata disagree: {problems:?}\npool thin ids {thins:?}\n\
         dump {dump:#}\n{}",
        run.report()
    );
    dump
}

/// Boots `script` and kills QEMU (SIGKILL) once berthd reports reaching hang `point`; panics
/// when it never does.
#[track_caller]
fn crash_at(vm: &Vm, name: &str, script: &str, point: &str) -> GuestRun {
    let marker = format!("berth: hang point {point} reached");
    let run = timed(vm.run_until(name, script, &marker, Duration::from_secs(300)));
    assert_eq!(
        run.outcome,
        Outcome::KilledAtMarker,
        "berthd never reached {point}\n{}",
        run.report()
    );
    run
}

#[test]
fn crash_in_create_and_remove_is_recovered() {
    let Some(s) = setup() else { return };
    let _one = serial();
    let vm = s.vm("crash", &DISKS, &[2]);
    let chain = s.top_chain_id();
    let prelude = berthd_prelude();

    // Boot 1: import, then a prepare that hangs after create_snap was sent; QEMU is killed there.
    let create_point = "devmapper.create.sent";
    let script = format!(
        r#"{prelude}
start_berthd
B images import --snapshotter devmapper /images/bb.tar
B snapshots --snapshotter devmapper prepare kept {chain}
stop_berthd
sync
start_berthd {create_point}
B snapshots --snapshotter devmapper prepare crashed-create {chain}
echo "prepare returned"
sleep 600
"#
    );
    crash_at(&vm, "crash-in-create", &script, create_point);

    // Boot 2: berthd recovers; check, then a remove that hangs after `delete` was sent.
    let remove_point = "devmapper.remove.deleted";
    let script = format!(
        r#"{prelude}
start_berthd
B snapshots --snapshotter devmapper ls
echo "LS-AFTER-CREATE-CRASH $(B snapshots --snapshotter devmapper ls | awk 'NR>1 {{print $1}}' | sort | tr '\n' ' ')"
stop_berthd
{CHECK}
start_berthd {remove_point}
B snapshots --snapshotter devmapper rm kept
echo "rm returned"
sleep 600
"#
    );
    let run = crash_at(&vm, "crash-in-remove", &script, remove_point);
    check_consistent(&run);
    let listed = run
        .lines_with("LS-AFTER-CREATE-CRASH ")
        .pop()
        .unwrap_or_default();
    assert!(
        listed.split_whitespace().any(|k| k == "kept"),
        "snapshot `kept` (made before the crash) is gone after it: {listed}\n{}",
        run.report()
    );

    // Boot 3: berthd recovers from the remove; check; then the conformance suite again.
    let script = format!(
        r#"{prelude}
start_berthd
echo "LS-AFTER-REMOVE-CRASH $(B snapshots --snapshotter devmapper ls | awk 'NR>1 {{print $1}}' | sort | tr '\n' ' ')"
B snapshots --snapshotter devmapper prepare after-crash {chain}
B snapshots --snapshotter devmapper rm after-crash
stop_berthd
{CHECK}
{suite}"#,
        // The snapshotter's tests again; the ioctl layer's own kernel tests (devmapper::pool::)
        // ran in the suite test and do not touch berthd's pool.
        suite = suite_script("--skip devmapper::pool::")
    );
    let run = timed(vm.run("after-crashes", &script, Duration::from_secs(600)));
    run.assert_success();
    check_consistent(&run);
    // Whether `kept` (whose remove was killed after the kernel's `delete`) is still listed is
    // the snapshotter's choice; that its record and its device agree is checked above.
    println!(
        "guest: snapshots after the remove crash: {:?}",
        run.lines_with("LS-AFTER-REMOVE-CRASH ")
    );
    let passed = suite_passed(&run);
    assert!(
        passed >= MIN_SUITE_TESTS,
        "only {passed} devmapper tests ran after the crashes\n{}",
        run.report()
    );
}
