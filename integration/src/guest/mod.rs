//! A QEMU guest for tests that need kernel features this machine's kernel lacks (device-mapper
//! thin provisioning): Debian's kernel (see [`kernel`]), an initramfs built here from
//! busybox-static (an uncompressed `newc` archive), the kernel modules a test names (dependencies resolved), host binaries with
//! their shared libraries and a script, booted with `qemu-system-x86_64` (KVM when a probe boot
//! under `/dev/kvm` works, TCG otherwise: see [`accel`]) on virtio disks that persist across boots.
//!
//! Result protocol: the guest's `/init` mounts the usual filesystems, loads the modules, prints
//! [`READY_MARKER`], runs the boot's script with its output on the serial console, prints
//! `BERTH-GUEST-EXIT <status>` and powers off. The console (kernel messages, the script's
//! output) is captured to a file; [`GuestRun`] holds it, and every assertion failure shows its
//! tail. How to use it: /work/notes/guest-harness.md and the `berth-guest` binary.

pub mod cpio;
pub mod kernel;

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

pub use cpio::{Archive, Entry};
pub use kernel::Kernel;

use crate::prereq::{find_executable, require_root, skip};

/// Printed by `/init` once the modules are loaded, before the script runs.
pub const READY_MARKER: &str = "BERTH-GUEST-READY";

/// Prefix of the last line `/init` prints: `BERTH-GUEST-EXIT <status of the script>`.
pub const EXIT_MARKER: &str = "BERTH-GUEST-EXIT ";

/// Where the boot's script lives in the guest (in a second cpio appended to the initramfs).
const SCRIPT_PATH: &str = "berth/run.sh";

/// The modules a device-mapper guest loads: virtio disks, loop devices, the thin pool (with
/// dm-mod, dm-bufio, dm-persistent-data, dm-bio-prison through its dependencies), ext4 (jbd2,
/// mbcache, crc16) with the crc32c it checksums with, and overlay for an overlayfs comparison.
pub const DEVMAPPER_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "loop",
    "crc32c_generic",
    "dm_mod",
    "dm_thin_pool",
    "ext4",
    "xfs",
    "overlay",
];

/// Host tools a device-mapper guest carries besides busybox: `dmsetup`, the thin-provisioning
/// tools (`pdata_tools` and its links), `mkfs.ext4` (e2fsprogs) and `mkfs.xfs` (xfsprogs).
pub const DEVMAPPER_TOOLS: &[&str] = &[
    "dmsetup",
    "thin_ls",
    "thin_dump",
    "thin_check",
    "thin_repair",
    "mkfs.ext4",
    "mke2fs",
    "mkfs.xfs",
    "blkid",
];

/// The guest `/init`. `/proc/sys/kernel/modprobe` points at `/bin/true`: the kernel's own
/// module requests would find no `modules.dep`, and every module the guest needs is loaded here.
const INIT: &str = r#"#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
# No udev in the guest: libdevmapper (dmsetup) makes the /dev/mapper nodes itself.
export DM_DISABLE_UDEV=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /tmp /run /var/tmp /var/lib /mnt /root /sys/fs/cgroup
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
ln -sf /proc/self/fd /dev/fd
echo /bin/true > /proc/sys/kernel/modprobe
hostname berth-guest
ip link set lo up 2>/dev/null
while read -r m; do
  insmod "/lib/modules/berth/$m.ko" || echo "BERTH-GUEST: insmod $m failed"
done < /etc/berth-guest/modules
echo BERTH-GUEST-READY
cd /root
sh /berth/run.sh </dev/null
rc=$?
sync
echo "BERTH-GUEST-EXIT $rc"
poweroff -f
sleep 10
"#;

/// The gate for guest tests: root, `qemu-system-x86_64` and the unpacked kernel. Returns the
/// kernel, or `None` after a skip (a panic under `CI=true`) naming what is missing.
pub fn require_guest() -> Option<Kernel> {
    if !require_root() {
        return None;
    }
    if find_executable("qemu-system-x86_64").is_none() {
        skip("the guest tests need qemu-system-x86_64 (Debian package qemu-system-x86)");
        return None;
    }
    for tool in DEVMAPPER_TOOLS.iter().chain(&["ldd"]) {
        if find_executable(tool).is_none() {
            skip(&format!(
                "the guest tests need `{tool}` on the host to copy into the guest \
                 (scripts/install-prereqs.sh installs it)"
            ));
            return None;
        }
    }
    if !Path::new("/bin/busybox").is_file() {
        skip("the guest tests need /bin/busybox (Debian package busybox-static)");
        return None;
    }
    match Kernel::locate() {
        Ok(k) => Some(k),
        Err(e) => {
            skip(&e);
            None
        }
    }
}

/// Builds an initramfs: busybox with its applet links, `/init`, `/dev/console`, modules and
/// files. Later additions replace earlier ones at the same path (a real tool over an applet).
#[derive(Debug)]
pub struct Initramfs {
    kernel: Kernel,
    archive: Archive,
    modules: Vec<String>,
}

impl Initramfs {
    /// Busybox (`/bin/busybox` and a link for every applet `busybox --list-full` names), the
    /// standard `/init`, `/dev/console` (the kernel opens it for init before devtmpfs exists),
    /// `/etc/passwd`, `/etc/group` and the host's `/etc/mke2fs.conf`.
    pub fn new(kernel: &Kernel) -> Self {
        let mut archive = Archive::default();
        let busybox = fs::read("/bin/busybox").expect("read /bin/busybox (busybox-static)");
        archive.insert("bin/busybox", Entry::File(busybox, 0o755));
        let list = Command::new("/bin/busybox")
            .arg("--list-full")
            .output()
            .expect("run busybox --list-full");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if !applet.is_empty() && applet != "bin/busybox" {
                archive.insert(applet, Entry::Symlink("/bin/busybox".into()));
            }
        }
        archive.insert("init", Entry::File(INIT.as_bytes().to_vec(), 0o755));
        archive.insert("dev/console", Entry::CharDev(5, 1, 0o600));
        for dir in ["proc", "sys", "dev", "tmp", "run", "root", "mnt", "var/tmp"] {
            archive.insert(dir, Entry::Dir(0o755));
        }
        archive.insert(
            "etc/passwd",
            Entry::File(b"root:x:0:0:root:/root:/bin/sh\n".to_vec(), 0o644),
        );
        archive.insert("etc/group", Entry::File(b"root:x:0:\n".to_vec(), 0o644));
        if let Ok(conf) = fs::read("/etc/mke2fs.conf") {
            archive.insert("etc/mke2fs.conf", Entry::File(conf, 0o644));
        }
        Initramfs {
            kernel: kernel.clone(),
            archive,
            modules: Vec::new(),
        }
    }

    /// Adds `names` and their dependencies (loaded by `/init` in dependency order).
    pub fn modules(&mut self, names: &[&str]) -> &mut Self {
        for (name, path) in self.kernel.resolve(names) {
            if self.modules.contains(&name) {
                continue;
            }
            let data = kernel::read_module(&path);
            self.archive.insert(
                &format!("lib/modules/berth/{name}.ko"),
                Entry::File(data, 0o644),
            );
            self.modules.push(name);
        }
        let mut list = self.modules.join("\n");
        list.push('\n');
        self.archive.insert(
            "etc/berth-guest/modules",
            Entry::File(list.into_bytes(), 0o644),
        );
        self
    }

    /// Adds a file with `contents` and permission bits `mode` at `guest` (absolute).
    pub fn file(&mut self, guest: &str, contents: impl Into<Vec<u8>>, mode: u32) -> &mut Self {
        self.archive
            .insert(guest, Entry::File(contents.into(), mode));
        self
    }

    /// Adds a symbolic link at `guest` pointing to `target`.
    pub fn symlink(&mut self, guest: &str, target: &str) -> &mut Self {
        self.archive.insert(guest, Entry::Symlink(target.into()));
        self
    }

    /// Adds the host executable `host` at `guest` (absolute) with the shared libraries `ldd`
    /// lists and the dynamic loader, each at the path `ldd` names.
    pub fn binary(&mut self, host: &Path, guest: &str) -> &mut Self {
        let data = fs::read(host).unwrap_or_else(|e| panic!("read {}: {e}", host.display()));
        self.archive.insert(guest, Entry::File(data, 0o755));
        for lib in shared_libraries(host) {
            if !self.archive.contains(&lib) {
                let data = fs::read(&lib).unwrap_or_else(|e| panic!("read {lib}: {e}"));
                self.archive.insert(&lib, Entry::File(data, 0o755));
            }
        }
        self
    }

    /// Adds the host tool `name` (on `PATH`) at its host path. A symbolic link (`thin_ls` ->
    /// `pdata_tools`) is kept as a link next to the file it resolves to, since multi-call
    /// binaries dispatch on their name.
    pub fn tool(&mut self, name: &str) -> &mut Self {
        let path =
            find_executable(name).unwrap_or_else(|| panic!("`{name}` is not on the host's PATH"));
        let real =
            fs::canonicalize(&path).unwrap_or_else(|e| panic!("resolve {}: {e}", path.display()));
        // Debian's /sbin is a link to /usr/sbin: name the tool where it really lives.
        let dir = fs::canonicalize(path.parent().unwrap_or(Path::new("/")))
            .unwrap_or_else(|_| PathBuf::from("/usr/bin"));
        let guest = dir.join(path.file_name().expect("a file name"));
        self.binary(&real, &real.to_string_lossy());
        if guest != real {
            self.symlink(&guest.to_string_lossy(), &real.to_string_lossy());
        }
        // Make the tool reachable under both the usr-merged and the short path.
        let short = guest.to_string_lossy().replacen("/usr/", "/", 1);
        if short != guest.to_string_lossy() && !self.archive.contains(&short) {
            self.symlink(&short, &guest.to_string_lossy());
        }
        self
    }

    /// The device-mapper set: [`DEVMAPPER_MODULES`] and [`DEVMAPPER_TOOLS`].
    pub fn devmapper(&mut self) -> &mut Self {
        self.modules(DEVMAPPER_MODULES);
        for tool in DEVMAPPER_TOOLS {
            self.tool(tool);
        }
        self
    }

    /// Writes the archive to `path`, uncompressed: the guest may run under TCG (see [`accel`]),
    /// where gunzipping a few hundred MB of test binaries costs far more than loading them, and
    /// the kernel takes a plain `newc` archive as it takes a gzip one.
    pub fn write(&self, path: &Path) {
        write_cpio(&self.archive, path);
    }
}

fn write_cpio(archive: &Archive, path: &Path) {
    let file = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut out = BufWriter::new(file);
    out.write_all(&archive.to_bytes())
        .and_then(|()| out.flush())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The absolute paths of the shared libraries (and loader) `ldd` lists for `binary`; none for a
/// static one.
fn shared_libraries(binary: &Path) -> Vec<String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .unwrap_or_else(|e| panic!("run ldd: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(p.to_owned());
        }
    }
    libs
}

/// Creates (or truncates) a sparse raw disk image of `size` bytes.
pub fn create_disk(path: &Path, size: u64) {
    let f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.set_len(size)
        .unwrap_or_else(|e| panic!("size {}: {e}", path.display()));
}

/// Creates a sparse raw disk image of `size` bytes holding an empty ext4 filesystem.
pub fn create_ext4_disk(path: &Path, size: u64) {
    create_disk(path, size);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .arg(path)
        .output()
        .expect("run mkfs.ext4");
    assert!(
        out.status.success(),
        "mkfs.ext4 {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How QEMU runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// `-enable-kvm -cpu host`.
    Kvm,
    /// `-accel tcg,thread=multi -cpu max` (emulation, several times slower).
    Tcg,
}

impl Accel {
    fn qemu_args(self) -> &'static [&'static str] {
        match self {
            Accel::Kvm => &["-enable-kvm", "-cpu", "host"],
            Accel::Tcg => &["-accel", "tcg,thread=multi", "-cpu", "max"],
        }
    }
}

/// Environment variable forcing the accelerator: `kvm` or `tcg` (no probe).
pub const ACCEL_ENV: &str = "BERTH_GUEST_ACCEL";

/// The accelerator, decided once per process: `$BERTH_GUEST_ACCEL`, else KVM when `/dev/kvm`
/// opens and a probe boot under KVM (the kernel alone, no initramfs) prints the kernel's banner
/// within 8 s, else TCG. The probe is needed because `/dev/kvm` can open and still not run a
/// stock kernel: on a host whose KVM is the paravirtual `kvm-pvm` (a nested hypervisor without
/// VMX, as on these CI machines) Debian's kernel hangs in its decompressor.
pub fn accel(kernel: &Kernel) -> Accel {
    static ACCEL: OnceLock<Accel> = OnceLock::new();
    *ACCEL.get_or_init(|| {
        let chosen = match std::env::var(ACCEL_ENV).as_deref() {
            Ok("kvm") => Accel::Kvm,
            Ok("tcg") => Accel::Tcg,
            _ if kvm_available() && kvm_boots(kernel) => Accel::Kvm,
            _ => Accel::Tcg,
        };
        // Past libtest's output capture: CI logs should say how the guest ran.
        let _ = writeln!(std::io::stderr(), "guest: QEMU accelerator {chosen:?}");
        chosen
    })
}

/// True when `/dev/kvm` opens for reading and writing.
pub fn kvm_available() -> bool {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Boots `kernel` under KVM without an initramfs and waits (at most 8 s) for its `Linux
/// version` banner on the console.
fn kvm_boots(kernel: &Kernel) -> bool {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-machine",
        "q35",
        "-enable-kvm",
        "-cpu",
        "host",
        "-m",
        "256",
    ])
    .args(["-nographic", "-no-reboot", "-nic", "none", "-kernel"])
    .arg(&kernel.vmlinuz)
    .args(["-append", "console=ttyS0 panic=-1"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let Ok(child) = cmd.spawn() else {
        return false;
    };
    let mut guard = QemuGuard(child);
    let mut stdout = guard.0.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("Linux version") {
                let _ = tx.send(());
                break;
            }
        }
    });
    let ok = rx.recv_timeout(Duration::from_secs(8)).is_ok();
    drop(guard);
    ok
}

/// How a boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The guest printed `BERTH-GUEST-EXIT <code>` (and powered off).
    Exited(i32),
    /// QEMU ended without the exit line (a kernel panic, a crash of `/init`).
    NoExitLine,
    /// The timeout passed; QEMU was killed.
    TimedOut,
    /// The awaited marker appeared on the console; QEMU was killed with SIGKILL.
    KilledAtMarker,
}

/// One finished boot.
#[derive(Debug)]
pub struct GuestRun {
    /// What the boot was for, for messages.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The whole serial console, `\r` removed.
    pub console: String,
    /// From QEMU start to its end.
    pub elapsed: Duration,
    /// QEMU's own stderr (its errors, not the guest's).
    pub qemu_stderr: String,
}

/// Lines of console shown in failure messages.
const TAIL_LINES: usize = 150;

impl GuestRun {
    /// The exit code, when the guest printed one.
    pub fn code(&self) -> Option<i32> {
        match self.outcome {
            Outcome::Exited(c) => Some(c),
            _ => None,
        }
    }

    /// The last `n` console lines.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A description for failure messages: name, outcome, time, QEMU's stderr, console tail.
    pub fn report(&self) -> String {
        let mut s = format!(
            "guest run `{}`: {:?} after {:.1?}\n",
            self.name, self.outcome, self.elapsed
        );
        if !self.qemu_stderr.trim().is_empty() {
            let _ = writeln!(s, "--- qemu stderr ---\n{}", self.qemu_stderr.trim_end());
        }
        let _ = write!(
            s,
            "--- last {TAIL_LINES} console lines ---\n{}\n--- end of console ---",
            self.tail(TAIL_LINES)
        );
        s
    }

    /// Panics (with [`GuestRun::report`]) unless the script exited 0.
    #[track_caller]
    pub fn assert_success(&self) {
        assert_eq!(
            self.outcome,
            Outcome::Exited(0),
            "guest script failed\n{}",
            self.report()
        );
    }

    /// The console lines starting with `prefix`, prefix removed.
    pub fn lines_with(&self, prefix: &str) -> Vec<String> {
        self.console
            .lines()
            .filter_map(|l| l.strip_prefix(prefix).map(str::to_owned))
            .collect()
    }
}

/// A guest machine: kernel, base initramfs, disks and a working directory for per-boot files.
#[derive(Debug, Clone)]
pub struct Vm {
    /// The kernel to boot.
    pub kernel: Kernel,
    /// The base initramfs ([`Initramfs::write`]).
    pub initramfs: PathBuf,
    /// Raw disk images, `/dev/vda`, `/dev/vdb`, ... in this order; they persist across boots.
    pub disks: Vec<PathBuf>,
    /// Where each boot's initramfs and console log go.
    pub work_dir: PathBuf,
    /// Guest memory in MiB (the initramfs is unpacked into it).
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Extra kernel command-line words.
    pub cmdline: Vec<String>,
}

/// Kills and reaps QEMU when a boot ends early (a panic in the harness).
struct QemuGuard(Child);

impl Drop for QemuGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Vm {
    /// A machine booting `kernel` with `initramfs`, no disks, 3 GiB and 2 CPUs.
    pub fn new(kernel: &Kernel, initramfs: &Path, work_dir: &Path) -> Self {
        Vm {
            kernel: kernel.clone(),
            initramfs: initramfs.to_owned(),
            disks: Vec::new(),
            work_dir: work_dir.to_owned(),
            memory_mib: 3072,
            cpus: 2,
            cmdline: Vec::new(),
        }
    }

    /// Boots, runs `script` (`sh`) and waits for the guest to power off, at most `timeout`.
    pub fn run(&self, name: &str, script: &str, timeout: Duration) -> GuestRun {
        self.boot(name, script, None, timeout)
    }

    /// Boots, runs `script`, and kills QEMU with SIGKILL as soon as a console line contains
    /// `marker` (a crash at a known point: the guest's disks keep what reached them).
    pub fn run_until(&self, name: &str, script: &str, marker: &str, timeout: Duration) -> GuestRun {
        self.boot(name, script, Some(marker), timeout)
    }

    fn boot(&self, name: &str, script: &str, marker: Option<&str>, timeout: Duration) -> GuestRun {
        let slug: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let initrd = self.work_dir.join(format!("initrd-{slug}.img"));
        let console_path = self.work_dir.join(format!("console-{slug}.log"));
        let stderr_path = self.work_dir.join(format!("qemu-{slug}.err"));
        // The kernel unpacks concatenated archives in order: the base, then this boot's script.
        fs::copy(&self.initramfs, &initrd)
            .unwrap_or_else(|e| panic!("copy {}: {e}", self.initramfs.display()));
        let mut extra = Archive::default();
        extra.insert(SCRIPT_PATH, Entry::File(script.as_bytes().to_vec(), 0o755));
        let extra_path = self.work_dir.join(format!("script-{slug}.cpio"));
        write_cpio(&extra, &extra_path);
        let mut out = OpenOptions::new()
            .append(true)
            .open(&initrd)
            .expect("open the boot initrd");
        out.write_all(&fs::read(&extra_path).expect("read the script archive"))
            .expect("append the script archive");
        drop(out);

        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-machine", "q35"]);
        cmd.args(accel(&self.kernel).qemu_args());
        let mut append = String::from("console=ttyS0 panic=-1 quiet loglevel=4");
        for word in &self.cmdline {
            append.push(' ');
            append.push_str(word);
        }
        cmd.args(["-m", &self.memory_mib.to_string()])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-nographic", "-no-reboot", "-nic", "none"])
            .arg("-kernel")
            .arg(&self.kernel.vmlinuz)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", &append]);
        for disk in &self.disks {
            cmd.arg("-drive").arg(format!(
                "file={},format=raw,if=virtio,cache=unsafe",
                disk.display()
            ));
        }
        let console_file = File::create(&console_path).expect("create the console log");
        let stderr_file = File::create(&stderr_path).expect("create the qemu stderr file");
        cmd.stdin(Stdio::null())
            .stdout(console_file)
            .stderr(stderr_file);
        let start = Instant::now();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn qemu-system-x86_64: {e}"));
        let mut guard = QemuGuard(child);

        let mut reader = File::open(&console_path).expect("open the console log");
        let mut console = Vec::new();
        let mut scanned = 0usize;
        let outcome = loop {
            let _ = reader.seek(SeekFrom::Start(console.len() as u64));
            let _ = reader.read_to_end(&mut console);
            if let Some(marker) = marker {
                // Only whole lines: a marker is matched once its line is complete.
                let end = console
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                if end > scanned {
                    let text = String::from_utf8_lossy(&console[scanned..end]);
                    scanned = end;
                    if text.contains(marker) {
                        let _ = guard.0.kill();
                        let _ = guard.0.wait();
                        break Outcome::KilledAtMarker;
                    }
                }
            }
            match guard.0.try_wait() {
                Ok(Some(_)) => {
                    let _ = reader.seek(SeekFrom::Start(console.len() as u64));
                    let _ = reader.read_to_end(&mut console);
                    break exit_outcome(&String::from_utf8_lossy(&console));
                }
                Ok(None) => {}
                Err(e) => panic!("wait for qemu: {e}"),
            }
            if start.elapsed() > timeout {
                let _ = guard.0.kill();
                let _ = guard.0.wait();
                break Outcome::TimedOut;
            }
            thread::sleep(Duration::from_millis(50));
        };
        let elapsed = start.elapsed();
        drop(guard);
        let _ = reader.read_to_end(&mut console);
        let _ = fs::remove_file(&initrd);
        let _ = fs::remove_file(&extra_path);
        GuestRun {
            name: name.to_owned(),
            outcome,
            console: String::from_utf8_lossy(&console).replace('\r', ""),
            elapsed,
            qemu_stderr: fs::read_to_string(&stderr_path).unwrap_or_default(),
        }
    }
}

fn exit_outcome(console: &str) -> Outcome {
    console
        .lines()
        .rev()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(EXIT_MARKER))
        .and_then(|code| code.trim().parse().ok())
        .map_or(Outcome::NoExitLine, Outcome::Exited)
}

/// Quotes `word` for `sh` (single quotes).
pub fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_line_is_parsed_from_the_console() {
        assert_eq!(
            exit_outcome("x\r\nBERTH-GUEST-EXIT 3\r\n[ 1.0] reboot: Power down\r\n"),
            Outcome::Exited(3)
        );
        assert_eq!(exit_outcome("Kernel panic\n"), Outcome::NoExitLine);
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
    }
}
