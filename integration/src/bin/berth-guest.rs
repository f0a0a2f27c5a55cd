//! `berth-guest [options] <binary> [args...]`: boots the device-mapper QEMU guest (Debian kernel,
//! busybox, dm/loop/ext4/overlay modules, dmsetup, thin-provisioning-tools, mkfs.ext4, and
//! `berthd`/`berth` when built) with `<binary>` at `/usr/local/bin/<name>`, runs it with `args`
//! and exits with its status. The console goes to stdout as it comes.
//!
//! Options: `--timeout <secs>` (default 600), `--disk <MiB>` (a blank virtio disk, repeatable:
//! `/dev/vda`, `/dev/vdb`, ... in order), `--env K=V` (exported before the binary runs),
//! `--keep <dir>` (keep the initramfs, disks and console log there), `--shell <script>` (run this
//! `sh` text instead of a binary; `<binary>` may then be left out), `--file <host>` (also copy
//! this host executable to `/usr/local/bin/`, repeatable).
//!
//! Example: the devmapper kernel tests of the snapshotters library, in the guest (the last
//! `executable` that `cargo test -p berth-snapshotters --lib --features devmapper-kernel-tests
//! --no-run` prints is the binary):
//! `cargo run -p berth-integration --bin berth-guest -- <that binary> devmapper:: --test-threads=1`

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_integration::guest::{self, sh_quote, Initramfs, Kernel, Vm};

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("berth-guest: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `berthd` and `berth` next to this binary (target/<profile>/).
fn project_binaries() -> Vec<PathBuf> {
    let Ok(exe) = env::current_exe() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for name in ["berthd", "berth"] {
        for dir in exe.ancestors().skip(1).take(2) {
            let p = dir.join(name);
            if p.is_file() {
                found.push(p);
                break;
            }
        }
    }
    found
}

fn run() -> Result<i32> {
    let mut args = env::args().skip(1);
    let mut timeout = Duration::from_secs(600);
    let mut disks_mib = Vec::new();
    let mut envs = Vec::new();
    let mut keep: Option<PathBuf> = None;
    let mut shell: Option<String> = None;
    let mut files = Vec::new();
    let mut command = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = |what: &str| args.next().with_context(|| format!("{what} needs a value"));
        match arg.as_str() {
            "--timeout" => timeout = Duration::from_secs(value("--timeout")?.parse()?),
            "--disk" => disks_mib.push(value("--disk")?.parse::<u64>()?),
            "--env" => envs.push(value("--env")?),
            "--keep" => keep = Some(PathBuf::from(value("--keep")?)),
            "--shell" => shell = Some(value("--shell")?),
            "--file" => files.push(PathBuf::from(value("--file")?)),
            "-h" | "--help" => {
                println!("usage: berth-guest [--timeout S] [--disk MiB]... [--env K=V]... [--keep DIR] [--file HOST]... [--shell SCRIPT] <binary> [args...]");
                return Ok(0);
            }
            _ => {
                command.push(arg);
                command.extend(args.by_ref());
            }
        }
    }
    if command.is_empty() && shell.is_none() {
        bail!("name a binary to run (or --shell <script>); see --help");
    }
    let kernel = Kernel::locate().map_err(anyhow::Error::msg)?;
    let tmp;
    let dir: &Path = match &keep {
        Some(d) => {
            fs::create_dir_all(d)?;
            d
        }
        None => {
            tmp = tempfile::Builder::new().prefix("berth-guest-").tempdir()?;
            tmp.path()
        }
    };

    let t = Instant::now();
    let mut initramfs = Initramfs::new(&kernel);
    initramfs.devmapper();
    for bin in project_binaries().into_iter().chain(files) {
        let name = bin
            .file_name()
            .context("a file name")?
            .to_string_lossy()
            .into_owned();
        initramfs.binary(&bin, &format!("/usr/local/bin/{name}"));
    }
    let mut script = String::from("export RUST_BACKTRACE=1\n");
    for kv in &envs {
        script.push_str(&format!("export {}\n", sh_quote_assignment(kv)?));
    }
    if let Some(binary) = command.first() {
        let path = PathBuf::from(binary);
        let name = path
            .file_name()
            .context("a file name")?
            .to_string_lossy()
            .into_owned();
        initramfs.binary(&path, &format!("/usr/local/bin/{name}"));
        if shell.is_none() {
            let words: Vec<String> = std::iter::once(format!("/usr/local/bin/{name}"))
                .chain(command[1..].iter().map(|a| sh_quote(a)))
                .collect();
            script.push_str(&words.join(" "));
            script.push('\n');
        }
    }
    if let Some(s) = &shell {
        script.push_str(s);
        script.push('\n');
    }
    let image = dir.join("initramfs.cpio");
    initramfs.write(&image);
    eprintln!(
        "berth-guest: initramfs {} built in {:.1?}",
        image.display(),
        t.elapsed()
    );

    let mut vm = Vm::new(&kernel, &image, dir);
    for (i, mib) in disks_mib.iter().enumerate() {
        let p = dir.join(format!("disk{i}.img"));
        if !p.exists() {
            guest::create_disk(&p, mib << 20);
        }
        vm.disks.push(p);
    }
    let run = vm.run("berth-guest", &script, timeout);
    println!("{}", run.console);
    eprintln!("berth-guest: {:?} after {:.1?}", run.outcome, run.elapsed);
    if !run.qemu_stderr.trim().is_empty() {
        eprintln!("qemu stderr:\n{}", run.qemu_stderr);
    }
    Ok(run.code().unwrap_or(125))
}

/// `K=V` as a safe `sh` assignment.
fn sh_quote_assignment(kv: &str) -> Result<String> {
    let (k, v) = kv.split_once('=').context("--env wants K=V")?;
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("bad variable name in --env {kv}");
    }
    Ok(format!("{k}={}", sh_quote(v)))
}
