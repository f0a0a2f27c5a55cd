//! Exec, ResizePty, CloseIO.

use std::sync::Arc;

use berth_proto::containerd::events::TaskExecAdded;
use berth_proto::containerd::task::v2 as api;

use super::Shim;
use crate::constants::{topic, type_url};
use crate::error::{InvalidRequest, Result, ShimError};
use crate::io::StdioConfig;
use crate::process::{Kind, Op, Process};

impl Shim {
    /// Exec: registers an exec process (runc runs at Start), TaskExecAdded.
    #[tracing::instrument(skip_all, fields(id = %req.id, exec_id = %req.exec_id))]
    pub(super) async fn exec(self: Arc<Self>, req: api::ExecProcessRequest) -> Result<()> {
        if req.exec_id.is_empty() {
            return Err(InvalidRequest::EmptyExecId.into());
        }
        let spec = req.spec.map(|a| a.value).ok_or(InvalidRequest::Missing {
            op: "exec",
            what: "process spec",
        })?;
        let spec = with_terminal(&spec, req.terminal)?;
        self.with_container(&req.id, |c| {
            c.init.check(Op::Exec)?;
            if c.execs.contains_key(&req.exec_id) {
                return Err(ShimError::AlreadyExists {
                    what: "id",
                    id: req.exec_id.clone(),
                });
            }
            let stdio = StdioConfig {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                process_id: req.exec_id.clone(),
                namespace: self.namespace.clone(),
            };
            let mut p = Process::new(req.exec_id.clone(), Kind::Exec, stdio);
            p.spec = spec;
            c.execs.insert(req.exec_id.clone(), p);
            Ok(())
        })?;
        self.publisher.publish(
            topic::TASK_EXEC_ADDED,
            type_url::TASK_EXEC_ADDED,
            &TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
            },
        );
        Ok(())
    }

    /// ResizePty: TIOCSWINSZ on the process's pty master; a no-op without a terminal.
    pub(super) async fn resize_pty(self: Arc<Self>, req: api::ResizePtyRequest) -> Result<()> {
        let pty = self.with_container(&req.id, |c| {
            let p = c.process(&req.exec_id)?;
            p.check(Op::Resize)?;
            Ok(p.io.pty())
        })?;
        // A process without a terminal has nothing to resize: containerd answers success.
        match pty {
            Some(pty) => pty.resize(req.width, req.height),
            None => Ok(()),
        }
    }

    /// CloseIO: closes the process's stdin.
    pub(super) async fn close_io(self: Arc<Self>, req: api::CloseIoRequest) -> Result<()> {
        self.with_container(&req.id, |c| {
            let p = c.process_mut(&req.exec_id)?;
            if req.stdin {
                p.io.close_stdin();
            }
            Ok(())
        })
    }
}

/// The process spec JSON with `terminal` set to the request's: the request decides whether the
/// exec gets a pty, whatever the spec says (containerd `pkg/process/init.go` `exec`:
/// `spec.Terminal = r.Terminal`).
fn with_terminal(spec_json: &[u8], terminal: bool) -> Result<Vec<u8>> {
    let decode = |e: serde_json::Error| ShimError::Decode {
        what: "exec process spec",
        message: e.to_string(),
    };
    let mut spec: serde_json::Value = serde_json::from_slice(spec_json).map_err(decode)?;
    let Some(fields) = spec.as_object_mut() else {
        return Err(InvalidRequest::SpecNotObject.into());
    };
    fields.insert("terminal".into(), serde_json::Value::Bool(terminal));
    serde_json::to_vec(&spec).map_err(decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_decides_the_terminal() {
        let spec = br#"{"args":["sh"],"cwd":"/","terminal":false}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&with_terminal(spec, true).unwrap()).unwrap();
        assert_eq!(out["terminal"], true);
        assert_eq!(out["args"][0], "sh");
        let out: serde_json::Value =
            serde_json::from_slice(&with_terminal(br#"{"terminal":true}"#, false).unwrap())
                .unwrap();
        assert_eq!(out["terminal"], false);
        assert!(with_terminal(b"[]", true).is_err());
        assert!(with_terminal(b"nope", true).is_err());
    }
}
