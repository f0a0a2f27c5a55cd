//! Import + unpack of the large image, each run on a fresh daemon root so that nothing is
//! already in the content store or the snapshotter.
//!
//! The roots are kept until the whole benchmark is over: ext4 avoids reusing recently freed
//! inodes, so an unpack right after a bulk delete runs up to twice as slow, and deleting one
//! daemon's store between runs would slow whichever daemon came next.

use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context as _, Result};

use super::fixtures::BigImage;
use super::report::Report;
use super::servers::{Bins, Kind, Server};
use super::stats::Summary;

/// One import on a fresh `kind` daemon under `dir`; returns seconds.
fn once(kind: Kind, bins: &Bins, dir: &Path, namespace: &str, image: &BigImage) -> Result<f64> {
    let mut server = Server::start(kind, bins, dir.to_owned())?;
    // Dirty pages of the previous run would otherwise be written back during this one.
    nix::unistd::sync();
    let archive = image.archive.to_string_lossy();
    let start = Instant::now();
    server.ctr_ok(namespace, &["images", "import", &archive])?;
    let secs = start.elapsed().as_secs_f64();
    // The figure only counts if the layers really were unpacked.
    let snapshots = server.ctr_ok(namespace, &["snapshots", "ls"])?;
    let rows = snapshots
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count();
    ensure!(
        rows >= 3,
        "{kind}: expected 3 unpacked layers after import, `ctr snapshots ls` shows:\n{snapshots}"
    );
    server.stop().with_context(|| server.log_tail())?;
    Ok(secs)
}

/// Alternates the daemons `runs` times, each run on a new root under `scratch`.
pub fn measure(
    report: &mut Report,
    bins: &Bins,
    scratch: &Path,
    namespace: &str,
    image: &BigImage,
    runs: usize,
) -> Result<()> {
    let mut secs = [Vec::new(), Vec::new()];
    for round in 0..runs {
        for (kind, out) in Kind::BOTH.into_iter().zip(secs.iter_mut()) {
            let dir = scratch.join(format!("{kind}-{round}"));
            out.push(once(kind, bins, &dir, namespace, image)?);
        }
    }
    let mb = image.uncompressed as f64 / 1e6;
    let rate = |v: &[f64]| -> Vec<f64> { v.iter().map(|s| mb / s).collect() };
    report.set("unpack_s", Summary::of(&secs[0]), Summary::of(&secs[1]));
    report.set(
        "unpack_mb_per_s",
        Summary::of(&rate(&secs[0])),
        Summary::of(&rate(&secs[1])),
    );
    Ok(())
}
