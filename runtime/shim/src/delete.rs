//! The `delete` action: clean up after a shim that is gone (containerd
//! `runtime/v2/runc/manager` `Stop`): `runc delete --force`, unmount the rootfs, and print a
//! `containerd.task.v2.DeleteResponse` with exit status 137.

use std::path::PathBuf;
use std::time::SystemTime;

use berth_proto::containerd::task::v2::DeleteResponse;
use prost::Message;

use crate::args::Args;
use crate::bundle::load_options;
use crate::constants::{bundle, KILLED_EXIT_STATUS};
use crate::events::timestamp;
use crate::mount::unmount_all;
use crate::reaper::Reaper;
use crate::runc::{read_pid_file, Runc};

/// Runs the `delete` action; the encoded response is written to `out`.
pub fn run(args: &Args, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let dir = if args.bundle.is_empty() {
        std::env::current_dir()?
    } else {
        PathBuf::from(&args.bundle)
    };
    let opts = load_options(&dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let reaper = Reaper::new();
        reaper.run()?;
        let mut runc = Runc::new(&opts.binary_name, &opts.root, &args.namespace, &dir, reaper);
        runc.systemd_cgroup = opts.systemd_cgroup;
        if let Err(err) = runc.delete(&args.id, true).await {
            tracing::warn!(error = %err, "failed to remove runc container");
        }
        // A shim killed while removing the state itself may have left it half removed.
        crate::own::remove_leftover(&runc.root.join(&args.id));
        Ok::<_, std::io::Error>(())
    })?;
    if let Err(err) = unmount_all(&dir.join(bundle::ROOTFS)) {
        tracing::warn!(error = %err, "failed to cleanup rootfs mount");
    }
    let pid = read_pid_file(&dir.join(bundle::INIT_PID)).unwrap_or_else(|err| {
        tracing::warn!(error = %err, "failed to read init pid file");
        0
    });
    let resp = DeleteResponse {
        pid,
        exit_status: KILLED_EXIT_STATUS,
        exited_at: Some(timestamp(SystemTime::now())),
    };
    out.write_all(&resp.encode_to_vec())?;
    out.flush()
}
