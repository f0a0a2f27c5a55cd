//! Security-context rules shared by sandboxes and containers: which seccomp profile
//! (containerd `generateSeccompSecurityProfile`, `generateSeccompSpecOpts`), what
//! `privileged` opens up (`oci.WithPrivileged`, `WithHostDevices`), masked and read-only
//! paths.

use berth_proto::runtime::v1::security_profile::ProfileType;
use berth_proto::runtime::v1::SecurityProfile;

use super::draft::Draft;
use super::seccomp;
use crate::error::{CriError, Result};

/// The legacy profile name of the runtime's default profile.
pub const RUNTIME_DEFAULT: &str = "runtime/default";
/// Docker's name for the same profile.
pub const DOCKER_DEFAULT: &str = "docker/default";
/// No profile.
pub const UNCONFINED: &str = "unconfined";
/// The prefix of a legacy path to a profile on the host.
pub const LOCALHOST_PREFIX: &str = "localhost/";

/// The seccomp profile a security context asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompChoice {
    /// Nothing asked (containerd's default without `unset_seccomp_profile`): no filter.
    Unset,
    /// No filter.
    Unconfined,
    /// The built-in default profile.
    RuntimeDefault,
    /// The JSON profile at this absolute host path.
    Localhost(String),
}

/// The seccomp choice of a security context: the `seccomp` field when set, else the legacy
/// `seccomp_profile_path` (`""`, `unconfined`, `runtime/default`, `docker/default`,
/// `localhost/<absolute path>`). `field` is the security context's request path.
pub fn seccomp_choice(
    profile: Option<&SecurityProfile>,
    legacy_path: &str,
    field: &str,
) -> Result<SeccompChoice> {
    if let Some(p) = profile {
        let typ = ProfileType::try_from(p.profile_type).map_err(|_| {
            CriError::invalid(
                format!("{field}.seccomp.profile_type"),
                format!("unknown profile type {}", p.profile_type),
            )
        })?;
        if typ != ProfileType::Localhost && !p.localhost_ref.is_empty() {
            return Err(CriError::invalid(
                format!("{field}.seccomp.localhost_ref"),
                "localhost_ref must only be set if profile_type is Localhost",
            ));
        }
        return Ok(match typ {
            ProfileType::Unconfined => SeccompChoice::Unconfined,
            ProfileType::RuntimeDefault => SeccompChoice::RuntimeDefault,
            ProfileType::Localhost => {
                let path = p
                    .localhost_ref
                    .strip_prefix(LOCALHOST_PREFIX)
                    .unwrap_or(&p.localhost_ref);
                if !path.starts_with('/') {
                    return Err(CriError::invalid(
                        format!("{field}.seccomp.localhost_ref"),
                        format!("{:?} is not an absolute path", p.localhost_ref),
                    ));
                }
                SeccompChoice::Localhost(path.to_owned())
            }
        });
    }
    let field = format!("{field}.seccomp_profile_path");
    Ok(match legacy_path {
        "" => SeccompChoice::Unset,
        UNCONFINED => SeccompChoice::Unconfined,
        RUNTIME_DEFAULT | DOCKER_DEFAULT => SeccompChoice::RuntimeDefault,
        other => match other.strip_prefix(LOCALHOST_PREFIX) {
            Some(path) if path.starts_with('/') => SeccompChoice::Localhost(path.to_owned()),
            Some(_) => {
                return Err(CriError::invalid(
                    field,
                    format!("{other:?}: the path after localhost/ must be absolute"),
                ))
            }
            None => {
                return Err(CriError::invalid(
                    field,
                    format!(
                        "invalid seccomp profile {other:?} (unconfined, runtime/default, \
                         docker/default or localhost/<absolute path>)"
                    ),
                ))
            }
        },
    })
}

/// The seccomp filter for `choice`: none for a privileged process; the spec's own (none
/// unless a base spec has one) for unset or unconfined; the built-in profile (for the
/// draft's capabilities) or the host file otherwise.
pub fn seccomp_filter(
    draft: &mut Draft,
    choice: &SeccompChoice,
    privileged: bool,
    field: &str,
) -> Result<()> {
    if privileged {
        draft.seccomp = None;
        return Ok(());
    }
    if !matches!(choice, SeccompChoice::Unset | SeccompChoice::Unconfined) && !seccomp::enabled() {
        return Err(CriError::FailedPrecondition(
            "seccomp is not supported on this host".to_owned(),
        ));
    }
    // Unset and unconfined leave the spec's filter alone: none in Berth's default spec, a
    // base_runtime_spec's own otherwise (as containerd).
    draft.seccomp = match choice {
        SeccompChoice::Unset | SeccompChoice::Unconfined => draft.seccomp.take(),
        SeccompChoice::RuntimeDefault => Some(seccomp::default_profile(&seccomp::Host {
            arch: std::env::consts::ARCH,
            kernel: seccomp::kernel_version(),
            caps: &draft.caps,
        })?),
        SeccompChoice::Localhost(path) => {
            let field = format!("{field}.seccomp");
            Some(seccomp::load_profile(path, &field)?)
        }
    };
    Ok(())
}

/// A container's masked and read-only paths: the request's lists (none when empty, as
/// containerd since containerd/containerd#5029; the kubelet always sends the defaults), or
/// the default spec's when `disable_proc_mount` is set.
pub fn proc_paths(
    draft: &mut Draft,
    masked: &[String],
    readonly: &[String],
    disable_proc_mount: bool,
) {
    if disable_proc_mount {
        return;
    }
    draft.masked_paths = masked.to_vec();
    draft.readonly_paths = readonly.to_vec();
}

/// What `privileged` gives a container: berthd's capabilities, no masked or read-only
/// paths, writable sysfs and cgroupfs, no seccomp filter (set later), and the host's
/// devices unless the runtime says `privileged_without_host_devices`.
pub fn privileged(draft: &mut Draft, all_caps: &[String], host_devices: bool) -> Result<()> {
    draft.caps = all_caps.to_vec();
    draft.masked_paths.clear();
    draft.readonly_paths.clear();
    for m in draft
        .mounts
        .iter_mut()
        .filter(|m| m.typ == "sysfs" || m.typ == "cgroup")
    {
        for o in m.options.iter_mut().filter(|o| *o == "ro") {
            *o = "rw".to_owned();
        }
    }
    if host_devices {
        super::devices::add_host_devices(draft)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::draft::MountEntry;

    const F: &str = "config.linux.security_context";

    fn sp(t: ProfileType, r: &str) -> SecurityProfile {
        SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.to_owned(),
        }
    }

    #[test]
    fn legacy_profile_paths() {
        assert_eq!(seccomp_choice(None, "", F).unwrap(), SeccompChoice::Unset);
        assert_eq!(
            seccomp_choice(None, "unconfined", F).unwrap(),
            SeccompChoice::Unconfined
        );
        assert_eq!(
            seccomp_choice(None, "runtime/default", F).unwrap(),
            SeccompChoice::RuntimeDefault
        );
        assert_eq!(
            seccomp_choice(None, "docker/default", F).unwrap(),
            SeccompChoice::RuntimeDefault
        );
        assert_eq!(
            seccomp_choice(None, "localhost//etc/p.json", F).unwrap(),
            SeccompChoice::Localhost("/etc/p.json".into())
        );
        for bad in ["/etc/p.json", "localhost/p.json", "default"] {
            let err = seccomp_choice(None, bad, F).unwrap_err();
            assert!(matches!(err, CriError::InvalidArgument { .. }));
            assert!(err.to_string().contains("seccomp_profile_path"), "{err}");
        }
    }

    #[test]
    fn security_profiles() {
        let c = |p: SecurityProfile| seccomp_choice(Some(&p), "ignored/legacy", F);
        assert_eq!(
            c(sp(ProfileType::Unconfined, "")).unwrap(),
            SeccompChoice::Unconfined
        );
        assert_eq!(
            c(sp(ProfileType::RuntimeDefault, "")).unwrap(),
            SeccompChoice::RuntimeDefault
        );
        assert_eq!(
            c(sp(ProfileType::Localhost, "/p.json")).unwrap(),
            SeccompChoice::Localhost("/p.json".into())
        );
        assert_eq!(
            c(sp(ProfileType::Localhost, "localhost//p.json")).unwrap(),
            SeccompChoice::Localhost("/p.json".into())
        );
        assert!(c(sp(ProfileType::Localhost, "p.json")).is_err());
        let err = c(sp(ProfileType::RuntimeDefault, "/p.json")).unwrap_err();
        assert!(err.to_string().contains("localhost_ref"), "{err}");
    }

    #[test]
    fn filters_follow_the_choice() {
        let mut d = Draft {
            caps: vec!["CAP_CHOWN".into()],
            ..Draft::default()
        };
        seccomp_filter(&mut d, &SeccompChoice::RuntimeDefault, false, F).unwrap();
        assert!(d.seccomp.is_some());
        seccomp_filter(&mut d, &SeccompChoice::RuntimeDefault, true, F).unwrap();
        assert!(d.seccomp.is_none(), "privileged: no filter");
        seccomp_filter(&mut d, &SeccompChoice::Unconfined, false, F).unwrap();
        assert!(d.seccomp.is_none());
        let err = seccomp_filter(
            &mut d,
            &SeccompChoice::Localhost("/nonexistent.json".into()),
            false,
            F,
        )
        .unwrap_err();
        assert!(matches!(err, CriError::InvalidArgument { .. }));
        assert!(
            err.to_string().contains("security_context.seccomp"),
            "{err}"
        );
    }

    #[test]
    fn privileged_opens_everything() {
        let mut d = crate::spec::defaults::default_draft("x").unwrap();
        d.mounts.push(MountEntry::new(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro"],
        ));
        privileged(&mut d, &["CAP_SYS_ADMIN".to_owned()], false).unwrap();
        assert_eq!(d.caps, vec!["CAP_SYS_ADMIN"]);
        assert!(d.masked_paths.is_empty() && d.readonly_paths.is_empty());
        let sys = d.mounts.iter().find(|m| m.destination == "/sys").unwrap();
        assert!(sys.options.contains(&"rw".to_owned()) && !sys.options.contains(&"ro".to_owned()));
        let cg = d.mounts.iter().find(|m| m.typ == "cgroup").unwrap();
        assert_eq!(cg.options, vec!["rw"]);
        assert!(d.devices.is_empty());
    }

    #[test]
    fn proc_paths_as_containerd() {
        let mut d = crate::spec::defaults::default_draft("x").unwrap();
        proc_paths(&mut d, &[], &[], true);
        assert!(
            !d.masked_paths.is_empty(),
            "disable_proc_mount keeps the defaults"
        );
        proc_paths(&mut d, &["/proc/kcore".into()], &[], false);
        assert_eq!(d.masked_paths, vec!["/proc/kcore"]);
        assert!(d.readonly_paths.is_empty());
    }
}
