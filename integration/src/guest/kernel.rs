//! The guest kernel: Debian's `linux-image-<version>-amd64` package unpacked (not installed) by
//! `scripts/install-prereqs.sh` into [`DEFAULT_KERNEL_ROOT`], and its modules with their
//! dependencies.
//!
//! The package ships no `modules.dep` (its postinst runs `depmod`, and the host has no kmod), so
//! dependencies come from each module's own `.modinfo` section: `depends=` (hard) and
//! `softdep=pre:` (loaded first when the module file exists).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where install-prereqs unpacks the kernel package (`dpkg-deb -x`): `boot/vmlinuz-*` and
/// `lib/modules/<version>/`.
pub const DEFAULT_KERNEL_ROOT: &str = "/var/cache/berth-guest/root";

/// Environment variable naming another unpacked kernel package root.
pub const KERNEL_ROOT_ENV: &str = "BERTH_GUEST_KERNEL_ROOT";

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The bzImage (`boot/vmlinuz-<version>`).
    pub vmlinuz: PathBuf,
    /// `lib/modules/<version>`.
    pub modules_dir: PathBuf,
    /// The release string, say `6.1.0-48-amd64`.
    pub version: String,
    /// Module name (with `_` for `-`) to file, for every module of the package.
    index: BTreeMap<String, PathBuf>,
    /// Names built into the kernel (`modules.builtin`), which need no loading.
    builtin: BTreeSet<String>,
}

/// Module names compare with `-` and `_` alike, as in kmod.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a file: `dm-thin-pool.ko[.xz|.zst]` -> `dm_thin_pool`.
fn module_name(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".ko")
        .or_else(|| name.strip_suffix(".ko.xz"))
        .or_else(|| name.strip_suffix(".ko.zst"))
        .or_else(|| name.strip_suffix(".ko.gz"))?;
    Some(normalize(stem))
}

fn walk(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, out)?;
        } else if let Some(name) = module_name(&path) {
            out.insert(name, path);
        }
    }
    Ok(())
}

impl Kernel {
    /// The kernel under `$BERTH_GUEST_KERNEL_ROOT` or [`DEFAULT_KERNEL_ROOT`]; `Err` says what
    /// is missing.
    pub fn locate() -> Result<Kernel, String> {
        let root = std::env::var_os(KERNEL_ROOT_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_KERNEL_ROOT));
        Self::at(&root)
    }

    /// The kernel package unpacked at `root`.
    pub fn at(root: &Path) -> Result<Kernel, String> {
        let missing = || {
            format!(
                "no unpacked Debian kernel package at {} (scripts/install-prereqs.sh puts \
                 linux-image-*-amd64 there with apt-get download + dpkg-deb -x)",
                root.display()
            )
        };
        let boot = fs::read_dir(root.join("boot")).map_err(|_| missing())?;
        let vmlinuz = boot
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-"))
            })
            .max()
            .ok_or_else(missing)?;
        let version = vmlinuz
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .ok_or_else(missing)?
            .to_owned();
        let modules_dir = root.join("lib/modules").join(&version);
        let mut index = BTreeMap::new();
        walk(&modules_dir.join("kernel"), &mut index).map_err(|e| {
            format!(
                "cannot list the modules under {}: {e}",
                modules_dir.display()
            )
        })?;
        let builtin = fs::read_to_string(modules_dir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| module_name(Path::new(l)))
            .collect();
        Ok(Kernel {
            vmlinuz,
            modules_dir,
            version,
            index,
            builtin,
        })
    }

    /// The `CONFIG_*` value of the kernel's config file (`boot/config-<version>`), if set.
    pub fn config(&self, key: &str) -> Option<String> {
        let config = self
            .modules_dir
            .parent()?
            .parent()?
            .parent()?
            .join("boot")
            .join(format!("config-{}", self.version));
        let text = fs::read_to_string(config).ok()?;
        let prefix = format!("{key}=");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
    }

    /// The module files to load for `names`, dependencies first, each once; names built into
    /// the kernel are left out. Panics on a name that is neither a module nor built in.
    pub fn resolve(&self, names: &[&str]) -> Vec<(String, PathBuf)> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for name in names {
            self.visit(&normalize(name), true, &mut seen, &mut order);
        }
        order
    }

    fn visit(
        &self,
        name: &str,
        required: bool,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<(String, PathBuf)>,
    ) {
        if !seen.insert(name.to_owned()) || self.builtin.contains(name) {
            return;
        }
        let Some(path) = self.index.get(name) else {
            assert!(
                !required,
                "kernel {} has no module `{name}` (neither a file under {} nor built in)",
                self.version,
                self.modules_dir.display()
            );
            return;
        };
        let data = read_module(path);
        let (hard, soft) = modinfo_deps(&data);
        for dep in soft {
            self.visit(&normalize(&dep), false, seen, order);
        }
        for dep in hard {
            self.visit(&normalize(&dep), true, seen, order);
        }
        order.push((name.to_owned(), path.clone()));
    }
}

/// A module's bytes, decompressed on the host when the package compresses modules (busybox's
/// insmod loads only plain ELF).
pub fn read_module(path: &Path) -> Vec<u8> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => fs::read(path).unwrap_or_else(|e| panic!("cannot read {name}: {e}")),
        Some(tool) => {
            let out = Command::new(tool)
                .arg("-dc")
                .arg(path)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {tool} to decompress {name}: {e}"));
            assert!(out.status.success(), "{tool} -dc {name} failed");
            out.stdout
        }
    }
}

/// `depends=` and `softdep=pre:` names from a module's `.modinfo` strings (NUL-separated
/// `key=value` entries).
fn modinfo_deps(module: &[u8]) -> (Vec<String>, Vec<String>) {
    let mut hard = Vec::new();
    let mut soft = Vec::new();
    for field in module.split(|&b| b == 0) {
        let Ok(field) = std::str::from_utf8(field) else {
            continue;
        };
        if let Some(list) = field.strip_prefix("depends=") {
            hard.extend(list.split(',').filter(|s| !s.is_empty()).map(str::to_owned));
        } else if let Some(spec) = field.strip_prefix("softdep=") {
            // "pre: a b post: c"
            let mut pre = false;
            for word in spec.split_whitespace() {
                match word {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    w if pre => soft.push(w.to_owned()),
                    _ => {}
                }
            }
        }
    }
    (hard, soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_fields_give_hard_and_soft_dependencies() {
        let info =
            b"\0license=GPL\0softdep=pre: crc32c post: x\0depends=dm-bufio,libcrc32c\0name=a\0";
        let (hard, soft) = modinfo_deps(info);
        assert_eq!(hard, ["dm-bufio", "libcrc32c"]);
        assert_eq!(soft, ["crc32c"]);
        assert_eq!(
            module_name(Path::new("a/dm-thin-pool.ko.xz")).as_deref(),
            Some("dm_thin_pool")
        );
    }
}
