//! The legacy runtime name `io.containerd.runtime.v1.linux` (containerd's v1 linux runtime,
//! deprecated since containerd 1.4 but still served by 1.6). Berth has no v1 shim: a task of
//! that runtime runs on the runc v2 runtime, its v1 options (`containerd.linux.runc.RuncOptions`
//! on the container, `containerd.linux.runc.CreateOptions` on the task) folded into the one
//! `containerd.runc.v1.Options` the v2 shim takes (containerd `runtime/v1/linux/runtime.go`
//! `getRuncOptions`, `services/tasks/local.go` `getRestorePath` for the v1 types).

use berth_proto::containerd::linux::runc::{CreateOptions, RuncOptions};
use berth_proto::containerd::runc::v1::Options;
use prost::Message;

use crate::config::RUNC_V2;
use crate::error::RuntimeError;
use crate::manager::RUNC_OPTIONS_TYPE;

/// The legacy runtime's name (containerd `plugin.RuntimeLinuxV1`).
pub const RUNTIME_LINUX_V1: &str = "io.containerd.runtime.v1.linux";
/// Type URL of the legacy runtime's container options.
pub const RUNC_OPTIONS_V1_TYPE: &str = "containerd.linux.runc.RuncOptions";
/// Type URL of the legacy runtime's task create options.
pub const CREATE_OPTIONS_V1_TYPE: &str = "containerd.linux.runc.CreateOptions";

/// The runtime a task runs on and the options its shim gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// The runtime name the shim binary is resolved from.
    pub runtime: String,
    /// The options for the shim's `start` and `Create`.
    pub options: Option<prost_types::Any>,
}

/// What runs for a container of `runtime` with these runtime and task options: the runtime as
/// is with the task options, else the runtime options (containerd `startShim`); the legacy v1
/// runtime becomes [`RUNC_V2`] with its options translated.
pub fn effective(
    runtime: &str,
    runtime_options: Option<&prost_types::Any>,
    task_options: Option<&prost_types::Any>,
) -> Result<Effective, RuntimeError> {
    if runtime != RUNTIME_LINUX_V1 {
        return Ok(Effective {
            runtime: runtime.to_owned(),
            options: task_options.or(runtime_options).cloned(),
        });
    }
    tracing::warn!(
        runtime,
        "runtime v1 is deprecated since containerd v1.4; running it on {RUNC_V2}"
    );
    if runtime_options.is_none() && task_options.is_none() {
        return Ok(Effective {
            runtime: RUNC_V2.to_owned(),
            options: None,
        });
    }
    let mut out = Options::default();
    if let Some(any) = runtime_options {
        let o: RuncOptions = decode(runtime, any, RUNC_OPTIONS_V1_TYPE)?;
        out.binary_name = o.runtime;
        out.root = o.runtime_root;
        out.criu_path = o.criu_path;
        out.systemd_cgroup = o.systemd_cgroup;
    }
    if let Some(any) = task_options {
        let o: CreateOptions = decode(runtime, any, CREATE_OPTIONS_V1_TYPE)?;
        // Restore-only settings: the v2 runtime takes them from a checkpoint's options, and
        // Berth does not restore checkpoints.
        let restore_only = [
            ("open_tcp", o.open_tcp),
            ("external_unix_sockets", o.external_unix_sockets),
            ("terminal", o.terminal),
            ("file_locks", o.file_locks),
            ("empty_namespaces", !o.empty_namespaces.is_empty()),
            ("cgroups_mode", !o.cgroups_mode.is_empty()),
        ];
        if let Some((field, _)) = restore_only.iter().find(|(_, set)| *set) {
            return Err(RuntimeError::UnsupportedOption {
                runtime: runtime.to_owned(),
                option: format!("{CREATE_OPTIONS_V1_TYPE}.{field}"),
            });
        }
        out.no_pivot_root = o.no_pivot_root;
        out.no_new_keyring = o.no_new_keyring;
        out.shim_cgroup = o.shim_cgroup;
        out.io_uid = o.io_uid;
        out.io_gid = o.io_gid;
        out.criu_work_path = o.criu_work_path;
        out.criu_image_path = o.criu_image_path;
    }
    Ok(Effective {
        runtime: RUNC_V2.to_owned(),
        options: Some(prost_types::Any {
            type_url: RUNC_OPTIONS_TYPE.to_owned(),
            value: out.encode_to_vec(),
        }),
    })
}

/// Decodes `any` as the v1 message `expected`; another type is an invalid option, as in
/// containerd (`invalid task create option for io.containerd.runtime.v1.linux`).
fn decode<M: Message + Default>(
    runtime: &str,
    any: &prost_types::Any,
    expected: &str,
) -> Result<M, RuntimeError> {
    let invalid = || RuntimeError::InvalidOptions {
        runtime: runtime.to_owned(),
        type_url: any.type_url.clone(),
    };
    // Clients send the bare name or the `types.googleapis.com/` form.
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    if name != expected {
        return Err(invalid());
    }
    M::decode(any.value.as_slice()).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use berth_registry::{Classify, ErrorKind};

    use super::*;

    fn any<M: Message>(type_url: &str, m: &M) -> prost_types::Any {
        prost_types::Any {
            type_url: type_url.into(),
            value: m.encode_to_vec(),
        }
    }

    #[test]
    fn other_runtimes_pass_through_task_options_first() {
        let r = any("containerd.runc.v1.Options", &Options::default());
        let t = any("x.T", &Options::default());
        let e = effective("io.containerd.runc.v2", Some(&r), Some(&t)).unwrap();
        assert_eq!(e.runtime, "io.containerd.runc.v2");
        assert_eq!(e.options, Some(t));
        let e = effective("io.containerd.kata.v2", Some(&r), None).unwrap();
        assert_eq!(e.options, Some(r));
    }

    #[test]
    fn v1_linux_runs_on_runc_v2_with_options_folded() {
        let e = effective(RUNTIME_LINUX_V1, None, None).unwrap();
        assert_eq!((e.runtime.as_str(), e.options), (RUNC_V2, None));

        let runc = RuncOptions {
            runtime: "crun".into(),
            runtime_root: "/run/r".into(),
            criu_path: "/c".into(),
            systemd_cgroup: true,
        };
        let create = CreateOptions {
            no_pivot_root: true,
            no_new_keyring: true,
            shim_cgroup: "/s".into(),
            io_uid: 7,
            io_gid: 8,
            criu_work_path: "/w".into(),
            criu_image_path: "/i".into(),
            ..Default::default()
        };
        let e = effective(
            RUNTIME_LINUX_V1,
            Some(&any(RUNC_OPTIONS_V1_TYPE, &runc)),
            Some(&any(
                &format!("types.googleapis.com/{CREATE_OPTIONS_V1_TYPE}"),
                &create,
            )),
        )
        .unwrap();
        assert_eq!(e.runtime, RUNC_V2);
        let o = e.options.unwrap();
        assert_eq!(o.type_url, RUNC_OPTIONS_TYPE);
        let o = Options::decode(o.value.as_slice()).unwrap();
        assert_eq!(
            o,
            Options {
                no_pivot_root: true,
                no_new_keyring: true,
                shim_cgroup: "/s".into(),
                io_uid: 7,
                io_gid: 8,
                binary_name: "crun".into(),
                root: "/run/r".into(),
                criu_path: "/c".into(),
                systemd_cgroup: true,
                criu_image_path: "/i".into(),
                criu_work_path: "/w".into(),
            }
        );
    }

    #[test]
    fn v1_linux_refuses_other_option_types_and_restore_settings() {
        let v2 = any(RUNC_OPTIONS_TYPE, &Options::default());
        let err = effective(RUNTIME_LINUX_V1, Some(&v2), None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let err = effective(RUNTIME_LINUX_V1, None, Some(&v2)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let create = CreateOptions {
            open_tcp: true,
            ..Default::default()
        };
        let err = effective(
            RUNTIME_LINUX_V1,
            None,
            Some(&any(CREATE_OPTIONS_V1_TYPE, &create)),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotImplemented);
        assert!(err.to_string().contains("open_tcp"), "{err}");
    }
}
