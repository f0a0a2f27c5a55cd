//! Errors of the CLI and the one place gRPC statuses become a one-line message naming the object,
//! the namespace and the cause (`image "x" not found in namespace "default"`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use berth_errdefs::{grpc, ErrorKind};
use tonic::Code;

use crate::client::Client;

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Turns on `--debug` details (gRPC codes) in rendered errors.
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// What an RPC was about: a kind (`image`) and usually a name, plus a qualifier such as the
/// snapshotter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    kind: &'static str,
    name: Option<String>,
    qualifier: Option<String>,
}

impl Object {
    /// A named object: `image "x"`.
    pub fn named(kind: &'static str, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: Some(name.into()),
            qualifier: None,
        }
    }

    /// A collection or an unnamed thing: `images`.
    pub fn kind(kind: &'static str) -> Self {
        Self {
            kind,
            name: None,
            qualifier: None,
        }
    }

    /// Adds a qualifier printed after the object: `on snapshotter "overlayfs"`.
    pub fn qualified(mut self, qualifier: impl Into<String>) -> Self {
        self.qualifier = Some(qualifier.into());
        self
    }

    /// Shorthands for the usual objects.
    pub fn image(name: &str) -> Self {
        Self::named("image", name)
    }
    pub fn content(digest: &str) -> Self {
        Self::named("content", digest)
    }
    pub fn namespace(name: &str) -> Self {
        Self::named("namespace", name)
    }
    pub fn lease(id: &str) -> Self {
        Self::named("lease", id)
    }
    pub fn container(id: &str) -> Self {
        Self::named("container", id)
    }
    pub fn snapshot(snapshotter: &str, key: &str) -> Self {
        Self::named("snapshot", key).qualified(format!("on snapshotter \"{snapshotter}\""))
    }
    pub fn snapshots(snapshotter: &str) -> Self {
        Self::kind("snapshots").qualified(format!("on snapshotter \"{snapshotter}\""))
    }

    /// Namespaces are global; every other object lives in one.
    fn namespaced(&self) -> bool {
        !matches!(
            self.kind,
            "namespace" | "namespaces" | "plugins" | "version" | "events"
        )
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind)?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        if let Some(q) = &self.qualifier {
            write!(f, " {q}")?;
        }
        Ok(())
    }
}

/// The CLI's error: how it failed, with enough context for one actionable line.
#[derive(Debug, thiserror::Error)]
pub enum CtrError {
    /// The socket could not be dialled.
    #[error("cannot connect to {address}: is berthd running? ({cause})")]
    Connect { address: String, cause: String },
    /// An RPC failed.
    #[error("{}", rpc_message(.op, .object, .namespace, .status))]
    Rpc {
        op: &'static str,
        object: Object,
        namespace: String,
        status: tonic::Status,
    },
}

/// The class text servers append to messages of this code that `berth` strips again; the code
/// is read as containerd's `ToNative` reads it ([`grpc::to_native`]). Out-of-range and data-loss
/// messages keep their class, which the printed line does not repeat otherwise.
fn class_text(code: Code) -> &'static str {
    match grpc::to_native(code) {
        kind @ (ErrorKind::InvalidArgument
        | ErrorKind::NotFound
        | ErrorKind::AlreadyExists
        | ErrorKind::FailedPrecondition
        | ErrorKind::Unavailable
        | ErrorKind::NotImplemented
        | ErrorKind::Canceled
        | ErrorKind::DeadlineExceeded) => kind.as_str(),
        _ => "unknown",
    }
}

/// The server's message without the trailing `: <class>` containerd appends.
pub fn cause(status: &tonic::Status) -> String {
    let msg = status.message().trim();
    let class = class_text(status.code());
    let trimmed = msg
        .strip_suffix(class)
        .and_then(|m| m.strip_suffix(": "))
        .unwrap_or(msg);
    if trimmed.is_empty() {
        class.to_owned()
    } else {
        trimmed.to_owned()
    }
}

fn rpc_message(op: &str, object: &Object, namespace: &str, status: &tonic::Status) -> String {
    let scope = if object.namespaced() {
        format!(" in namespace {namespace:?}")
    } else {
        String::new()
    };
    let cause = cause(status);
    match status.code() {
        Code::NotFound if object.name.is_some() => format!("{object} not found{scope}"),
        Code::AlreadyExists if object.name.is_some() => format!("{object} already exists{scope}"),
        Code::Unavailable => format!("cannot {op} {object}{scope}: daemon unavailable ({cause})"),
        Code::Unimplemented => {
            format!("cannot {op} {object}{scope}: not implemented by the daemon ({cause})")
        }
        Code::DeadlineExceeded => format!("cannot {op} {object}{scope}: timed out ({cause})"),
        Code::InvalidArgument => format!("cannot {op} {object}{scope}: invalid argument: {cause}"),
        _ => format!("cannot {op} {object}{scope}: {cause}"),
    }
}

/// Attaches the operation and object to a failed RPC.
pub trait RpcResultExt<T> {
    /// Maps a `tonic::Status` into [`CtrError::Rpc`].
    fn rpc(self, client: &Client, op: &'static str, object: Object) -> anyhow::Result<T>;
}

impl<T> RpcResultExt<T> for Result<T, tonic::Status> {
    fn rpc(self, client: &Client, op: &'static str, object: Object) -> anyhow::Result<T> {
        self.map_err(|status| {
            CtrError::Rpc {
                op,
                object,
                namespace: client.namespace.clone(),
                status,
            }
            .into()
        })
    }
}

/// The gRPC code of an error, when it came from an RPC.
pub fn code_of(err: &anyhow::Error) -> Option<Code> {
    err.chain().find_map(|e| {
        if let Some(CtrError::Rpc { status, .. }) = e.downcast_ref::<CtrError>() {
            Some(status.code())
        } else {
            e.downcast_ref::<tonic::Status>().map(tonic::Status::code)
        }
    })
}

/// The one line printed after `berth: `.
pub fn render(err: &anyhow::Error) -> String {
    let mut line = format!("{err:#}");
    if DEBUG.load(Ordering::Relaxed) {
        if let Some(code) = code_of(err) {
            line.push_str(&format!(" [grpc code {code:?}]"));
        }
    }
    line
}

/// A command that ran a process ends with that process's exit status and prints nothing (ctr's
/// `cli.NewExitError("", code)`).
#[derive(Debug, thiserror::Error)]
#[error("exit status {0}")]
pub struct ExitStatus(pub u32);

impl ExitStatus {
    /// `Ok` for 0, else the status as an error.
    pub fn result(code: u32) -> anyhow::Result<()> {
        if code == 0 {
            Ok(())
        } else {
            Err(Self(code).into())
        }
    }
}

/// The exit status of a process run by the command, if that is how it failed.
pub fn exit_status(err: &anyhow::Error) -> Option<u32> {
    err.downcast_ref::<ExitStatus>().map(|e| e.0)
}

/// The process exit status for an error: the process's own for [`ExitStatus`] (as the shell
/// sees it, modulo 256), else 1, as ctr.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    match exit_status(err) {
        Some(code) => (code & 0xff) as u8,
        None => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc(op: &'static str, object: Object, status: tonic::Status) -> String {
        CtrError::Rpc {
            op,
            object,
            namespace: "default".into(),
            status,
        }
        .to_string()
    }

    #[test]
    fn not_found_names_object_and_namespace() {
        let s = tonic::Status::not_found("image \"x\": not found");
        assert_eq!(
            rpc("delete", Object::image("x"), s),
            "image \"x\" not found in namespace \"default\""
        );
    }

    #[test]
    fn namespaces_are_not_scoped() {
        let s = tonic::Status::already_exists("namespace \"ns1\": already exists");
        assert_eq!(
            rpc("create", Object::namespace("ns1"), s),
            "namespace \"ns1\" already exists"
        );
        let s = tonic::Status::failed_precondition(
            "namespace \"t1\" must be empty, but it still has images: failed precondition",
        );
        assert_eq!(
            rpc("delete", Object::namespace("t1"), s),
            "cannot delete namespace \"t1\": namespace \"t1\" must be empty, but it still has images"
        );
    }

    #[test]
    fn snapshot_qualifier_and_invalid_argument() {
        let s = tonic::Status::invalid_argument("snapshotter not loaded: zfs: invalid argument");
        assert_eq!(
            rpc("list", Object::snapshots("zfs"), s),
            "cannot list snapshots on snapshotter \"zfs\" in namespace \"default\": invalid argument: snapshotter not loaded: zfs"
        );
        let s = tonic::Status::not_found("snapshot k does not exist: not found");
        assert_eq!(
            rpc("remove", Object::snapshot("overlayfs", "k"), s),
            "snapshot \"k\" on snapshotter \"overlayfs\" not found in namespace \"default\""
        );
    }

    #[test]
    fn cause_strips_class_suffix_only_once() {
        assert_eq!(cause(&tonic::Status::unknown("boom")), "boom");
        assert_eq!(cause(&tonic::Status::not_found("")), "not found");
        assert_eq!(
            cause(&tonic::Status::unavailable("ref x locked: unavailable")),
            "ref x locked"
        );
    }

    #[test]
    fn connect_error_says_what_to_do() {
        let e = CtrError::Connect {
            address: "/run/berth/berthd.sock".into(),
            cause: "No such file or directory (os error 2)".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot connect to /run/berth/berthd.sock: is berthd running? (No such file or directory (os error 2))"
        );
        let err = anyhow::Error::from(e);
        assert_eq!(exit_code(&err), 1);
        assert_eq!(code_of(&err), None);
    }
}
