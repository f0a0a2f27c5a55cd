//! Connect, Shutdown.

use std::sync::Arc;

use berth_proto::containerd::task::v2 as api;

use super::Shim;
use crate::constants::VERSION;
use crate::error::Result;

impl Shim {
    /// Connect: the shim's pid and the task's init pid.
    pub(super) async fn connect(
        self: Arc<Self>,
        req: api::ConnectRequest,
    ) -> Result<api::ConnectResponse> {
        let task_pid = self
            .lock()
            .containers
            .get(&req.id)
            .map_or(0, |c| c.init.pid);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: VERSION.to_owned(),
        })
    }

    /// Shutdown: exits once no containers remain; otherwise a no-op.
    pub(super) async fn shutdown(self: Arc<Self>, _req: api::ShutdownRequest) -> Result<()> {
        if self.lock().containers.is_empty() {
            self.shutdown.send_replace(true);
        }
        Ok(())
    }
}
