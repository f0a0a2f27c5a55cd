//! Gives back the file pages a long-lived process touched while starting.
//!
//! The shim lives as long as its container and, once the task runs, only waits: for the exit,
//! for the next RPC, for output to copy. berthd, once its plugins are loaded, waits for RPCs.
//! Start-up (loading the binary and its libraries, initialising every plugin, or for the shim
//! parsing the bundle and driving `runc create` and `start`) maps most of the code in, and the
//! kernel maps file pages in 64 KiB blocks around each fault, so a fresh shim keeps some
//! 4 MiB, and berthd some 9 MiB, of text and read-only data mapped that it will not run again.
//! Dropping those mappings makes the resident set what the waiting process really uses: pages
//! fault back in from the page cache (no I/O; the bytes are shared with every other process of
//! the same binary) when the code runs again.
//!
//! Only mappings that cannot hold private changes are dropped: file-backed, not writable, and
//! with no anonymous (copied-on-write) pages, e.g. relocated data after RELRO. For those,
//! `MADV_DONTNEED` is exactly "forget the page table entries"; the contents come back from the
//! file unchanged.

use std::fs;

use nix::sys::mman::{madvise, MmapAdvise};

/// glibc's allocator controls (`malloc.h`); not in the `nix` crate.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::ffi::c_int;

    /// `M_ARENA_MAX` of `mallopt`.
    pub const M_ARENA_MAX: c_int = -8;

    extern "C" {
        pub fn mallopt(param: c_int, value: c_int) -> c_int;
        pub fn malloc_trim(pad: usize) -> c_int;
    }
}

/// Caps the allocator's arenas at `arenas`. glibc gives threads arenas of their own, up to
/// eight per core, each keeping its freed memory: a process whose threads mostly wait (the
/// shim, berthd's blocking pool) gains nothing from them but resident pages. Call it before
/// starting threads. Elsewhere than glibc it does nothing.
pub fn limit_arenas(arenas: u16) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX takes any positive count.
    unsafe {
        glibc::mallopt(glibc::M_ARENA_MAX, std::ffi::c_int::from(arenas.max(1)));
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// Gives the free memory of the allocator's heaps back to the kernel (glibc's `malloc_trim`):
/// what a burst of work freed stays resident otherwise. Elsewhere than glibc it does nothing.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only returns unused heap pages to the kernel.
    unsafe {
        glibc::malloc_trim(0);
    }
}

/// What an idle process can give back: the clean file pages ([`release_clean_file_pages`]) and
/// the allocator's free memory ([`trim_heap`]); returns the KiB of file pages released.
pub fn release_idle_pages() -> usize {
    trim_heap();
    release_clean_file_pages()
}

/// One mapping of `/proc/self/smaps` that may be dropped.
#[derive(Debug, PartialEq, Eq)]
struct Region {
    start: usize,
    len: usize,
}

/// Reads `/proc/self/smaps` and drops every clean, read-only file mapping; returns how many
/// KiB were resident in them. Errors are not fatal: the shim only keeps more pages mapped.
pub fn release_clean_file_pages() -> usize {
    let Ok(smaps) = fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut released = 0;
    for (region, rss_kib) in clean_file_regions(&smaps) {
        let Some(addr) = std::ptr::NonNull::new(region.start as *mut std::ffi::c_void) else {
            continue;
        };
        // SAFETY: the region is a whole mapping of this process that is file-backed, not
        // writable and holds no anonymous pages, so MADV_DONTNEED only drops page table entries
        // whose contents are re-read from the unchanged file on the next access.
        if unsafe { madvise(addr, region.len, MmapAdvise::MADV_DONTNEED) }.is_ok() {
            released += rss_kib;
        }
    }
    released
}

/// The mappings of `smaps` (text of `/proc/<pid>/smaps`) that are file-backed, not writable,
/// have resident pages and no anonymous ones, with their resident KiB.
fn clean_file_regions(smaps: &str) -> Vec<(Region, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(Region, bool)> = None;
    let mut rss = 0;
    let mut anonymous = 0;
    let mut flush = |current: &mut Option<(Region, bool)>, rss: usize, anonymous: usize| {
        if let Some((region, eligible)) = current.take() {
            if eligible && rss > 0 && anonymous == 0 {
                out.push((region, rss));
            }
        }
    };
    for line in smaps.lines() {
        if let Some((region, eligible)) = parse_header(line) {
            flush(&mut current, rss, anonymous);
            current = Some((region, eligible));
            rss = 0;
            anonymous = 0;
        } else if let Some(v) = field_kib(line, "Rss:") {
            rss = v;
        } else if let Some(v) = field_kib(line, "Anonymous:") {
            anonymous = v;
        }
    }
    flush(&mut current, rss, anonymous);
    out
}

/// Parses a mapping header (`start-end perms offset dev inode [path]`); the flag says whether
/// it is a read-only mapping of a regular file.
fn parse_header(line: &str) -> Option<(Region, bool)> {
    let mut parts = line.split_whitespace();
    let (start, end) = parts.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = parts.next()?;
    if perms.len() != 4 {
        return None;
    }
    let _offset = parts.next()?;
    let _device = parts.next()?;
    let inode: u64 = parts.next()?.parse().ok()?;
    let path = parts.next().unwrap_or("");
    let read_only = perms.starts_with('r') && perms.as_bytes()[1] == b'-';
    let file_backed = inode != 0 && path.starts_with('/');
    Some((
        Region {
            start,
            len: end.checked_sub(start)?,
        },
        read_only && file_backed,
    ))
}

/// `Name:   123 kB` → 123.
fn field_kib(line: &str, name: &str) -> Option<usize> {
    line.strip_prefix(name)?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
556eaed92000-556eaeea2000 r--p 00000000 fe:00 5615423    /usr/bin/shim
Size:               1088 kB
Rss:                 504 kB
Anonymous:             0 kB
556eaeea2000-556eaf0ac000 r-xp 0010f000 fe:00 5615423    /usr/bin/shim
Rss:                1704 kB
Anonymous:             0 kB
556eaf0ac000-556eaf0ec000 r--p 00318000 fe:00 5615423    /usr/bin/shim
Rss:                 256 kB
Anonymous:           256 kB
556eaf0ec000-556eaf0ee000 rw-p 00357000 fe:00 5615423    /usr/bin/shim
Rss:                   8 kB
Anonymous:             8 kB
556ee6990000-556ee69b1000 rw-p 00000000 00:00 0          [heap]
Rss:                  96 kB
Anonymous:            96 kB
7f3e363a2000-7f3e363a4000 r-xp 00000000 00:00 0          [vdso]
Rss:                   4 kB
Anonymous:             0 kB
7f3e36291000-7f3e362a1000 r--p 00000000 fe:00 326603     /usr/lib/libm.so.6
Rss:                   0 kB
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_file_mappings_with_resident_pages() {
        let regions = clean_file_regions(SMAPS);
        assert_eq!(
            regions,
            [
                (
                    Region {
                        start: 0x556e_aed9_2000,
                        len: 0x11_0000
                    },
                    504
                ),
                (
                    Region {
                        start: 0x556e_aeea_2000,
                        len: 0x20_a000
                    },
                    1704
                ),
            ]
        );
    }

    #[test]
    fn releasing_keeps_the_process_working() {
        let before = fs::read_to_string("/proc/self/smaps").unwrap();
        let resident: usize = clean_file_regions(&before).iter().map(|(_, kib)| kib).sum();
        let released = release_clean_file_pages();
        assert!(resident > 0 && released > 0, "{released} of {resident}");
        // Code and read-only data come back on use.
        let text = format!("{:?}", vec![1u8, 2, 3]);
        assert_eq!(text, "[1, 2, 3]");
    }
}
