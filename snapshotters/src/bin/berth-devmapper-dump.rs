//! `berth-devmapper-dump <root>`: prints, as JSON, the device and snapshot records of the
//! devmapper snapshotter whose root is `<root>` (e.g.
//! `/var/lib/berth/io.containerd.snapshotter.v1.devmapper`), for debugging and for the QEMU
//! guest's consistency check. Run it while no berthd uses that root (the database is locked).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root] = args.as_slice() else {
        eprintln!("usage: berth-devmapper-dump <devmapper snapshotter root>");
        return ExitCode::from(2);
    };
    match berth_snapshotters::devmapper::dump(&PathBuf::from(root)) {
        Ok(dump) => {
            let json = serde_json::to_string_pretty(&dump).expect("a dump serializes to JSON");
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth-devmapper-dump: {root}: {e}");
            ExitCode::FAILURE
        }
    }
}
