//! State, Wait, Pids, Stats.

use std::sync::Arc;

use berth_proto::containerd::runc::v1::ProcessDetails;
use berth_proto::containerd::task::v2 as api;
use berth_proto::containerd::v1::types::ProcessInfo;

use super::{asyncify, Shim};
use crate::constants::type_url;
use crate::error::{InvalidRequest, Result, ShimError};
use crate::events::{any, timestamp};

impl Shim {
    /// State of the init or an exec process.
    pub(super) async fn state(
        self: Arc<Self>,
        req: api::StateRequest,
    ) -> Result<api::StateResponse> {
        self.with_container(&req.id, |c| {
            let bundle = c.bundle.display().to_string();
            Ok(c.process(&req.exec_id)?.state_response(&bundle))
        })
    }

    /// Wait: blocks until the process exits; valid before Start.
    #[tracing::instrument(skip_all, fields(id = %req.id, exec_id = %req.exec_id))]
    pub(super) async fn wait(self: Arc<Self>, req: api::WaitRequest) -> Result<api::WaitResponse> {
        let mut waiter = self.with_container(&req.id, |c| Ok(c.process(&req.exec_id)?.waiter()))?;
        let exit = waiter
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|e| *e)
            .ok_or_else(|| ShimError::ProcessNotFound {
                exec_id: req.exec_id.clone(),
            })?;
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)),
        })
    }

    /// Pids: `runc ps`, with the exec id attached to exec processes.
    pub(super) async fn pids(self: Arc<Self>, req: api::PidsRequest) -> Result<api::PidsResponse> {
        let runc = self.with_container(&req.id, |c| Ok(c.runc.clone()))?;
        let pids = runc.ps(&req.id).await.map_err(|e| ShimError::Runc {
            op: "failed to list pids".into(),
            message: e.to_string(),
        })?;
        self.with_container(&req.id, |c| {
            let processes = pids
                .iter()
                .map(|&pid| ProcessInfo {
                    pid,
                    info: c.execs.values().find(|p| p.pid == pid).map(|p| {
                        any(
                            type_url::PROCESS_DETAILS,
                            &ProcessDetails {
                                exec_id: p.id.clone(),
                            },
                        )
                    }),
                })
                .collect();
            Ok(api::PidsResponse { processes })
        })
    }

    /// Stats: the container's cgroup metrics.
    pub(super) async fn stats(
        self: Arc<Self>,
        req: api::StatsRequest,
    ) -> Result<api::StatsResponse> {
        let cgroup = self.with_container(&req.id, |c| {
            c.cgroup
                .clone()
                .ok_or_else(|| InvalidRequest::NoCgroup { id: c.id.clone() }.into())
        })?;
        let stats = asyncify(move || Ok(cgroup.stats())).await?;
        Ok(api::StatsResponse { stats: Some(stats) })
    }
}
