//! Probes of the host's processes that every suite checking for leftover shims needs: the shim
//! processes serving one daemon, their arguments, and whether a pid is still alive.

use std::fs;
use std::path::Path;

/// Process ids and argument vectors of the shim processes (`argv[0]`'s file name contains
/// `shim`) whose command line names `address`.
pub fn shim_processes(address: &Path) -> Vec<(u32, Vec<String>)> {
    let address = address.to_string_lossy();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            // A process may exit while we look.
            let raw = fs::read(e.path().join("cmdline")).ok()?;
            let argv: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_shim = argv.first().is_some_and(|a0| {
                Path::new(a0)
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().contains("shim"))
            });
            let names_address = argv.iter().any(|a| a == &*address);
            (is_shim && names_address && pid_alive(pid)).then_some((pid, argv))
        })
        .collect()
}

/// The value following `flag` in `argv` (`-id <id>` of a shim).
pub fn arg_after<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    argv.windows(2)
        .find(|w| w[0] == flag)
        .map(|w| w[1].as_str())
}

/// True when process `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
