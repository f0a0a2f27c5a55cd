//! A container's spec (containerd `containerSpec`, `containerSpecOpts`, `containerMounts`,
//! `volumeMounts`).

use berth_proto::runtime::v1::{ContainerConfig, NamespaceMode};
use oci_spec::image::Config as ImageConfig;

use super::annotations as ann;
use super::draft::Draft;
use super::namespaces::{self, Modes};
use super::security;
use super::{capabilities, defaults, devices, mounts, resources, rootfs, user, ContainerSpecInput};
use crate::error::{CriError, Result};

const SC: &str = "config.linux.security_context";

/// The process arguments: the request's command and args over the image's entrypoint and
/// cmd, as Kubernetes documents (`command` replaces the entrypoint and drops the cmd; `args`
/// alone replace the cmd; an entrypoint of `[""]` means none).
pub fn process_args(config: &ContainerConfig, image: &ImageConfig) -> Result<Vec<String>> {
    let mut command = config.command.clone();
    let mut args = config.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd().clone().unwrap_or_default();
        }
        let entrypoint = image.entrypoint().clone().unwrap_or_default();
        if !(entrypoint.len() == 1 && entrypoint[0].is_empty()) {
            command = entrypoint;
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(CriError::invalid(
            "config.command",
            "no command specified and the image has no entrypoint or cmd",
        ));
    }
    Ok(command)
}

/// A container's spec; see [`super::container_spec`].
pub fn spec(input: &ContainerSpecInput<'_>) -> Result<oci_spec::runtime::Spec> {
    let config = input.config;
    let linux = config.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let pod_linux = input.sandbox_config.linux.clone().unwrap_or_default();
    let pod_sc = pod_linux.security_context.clone().unwrap_or_default();
    let modes = Modes::of(
        sc.namespace_options.as_ref(),
        &format!("{SC}.namespace_options"),
    )?;
    let image = input.image.config.config().clone().unwrap_or_default();

    // Refusals first: nothing is created for a request that cannot run.
    if sc.privileged && !pod_sc.privileged {
        return Err(CriError::invalid(
            format!("{SC}.privileged"),
            "no privileged container allowed in a sandbox that is not privileged",
        ));
    }
    let seccomp = security::seccomp_choice(sc.seccomp.as_ref(), &sc.seccomp_profile_path, SC)?;
    let userstr = user::user_string(
        &sc.run_as_username,
        sc.run_as_user.as_ref(),
        sc.run_as_group.as_ref(),
        SC,
    )?;
    let args = process_args(config, &image)?;

    let mut d: Draft = defaults::default_draft(input.id)?;
    d.args = args;
    d.set_env(&[defaults::DEFAULT_PATH_ENV.to_owned()]);
    d.no_new_privileges = false;
    if !config.working_dir.is_empty() {
        d.cwd = config.working_dir.clone();
    } else if let Some(wd) = image.working_dir().as_deref().filter(|w| !w.is_empty()) {
        d.cwd = wd.to_owned();
    }
    if config.tty {
        d.terminal = true;
        d.env.push("TERM=xterm".to_owned());
    }
    let hostname = if input.sandbox_config.hostname.is_empty() {
        nix::unistd::gethostname()
            .map_err(|e| CriError::Internal(format!("reading the host name: {e}")))?
            .to_string_lossy()
            .into_owned()
    } else {
        input.sandbox_config.hostname.clone()
    };
    d.set_env(&[format!("HOSTNAME={hostname}")]);
    let mut env = image.env().clone().unwrap_or_default();
    env.extend(
        config
            .envs
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value)),
    );
    d.set_env(&env);

    // Mounts: the request's, the pod's files, the image's volumes.
    let mut extra = mounts::pod_file_mounts(input.files, &config.mounts, sc.readonly_rootfs);
    let volumes = if input.cri.ignore_image_defined_volumes {
        Vec::new()
    } else {
        let listed = image.volumes().clone().unwrap_or_default();
        mounts::image_volume_mounts(input.container_dir, &listed, &config.mounts)?
    };
    extra.extend(volumes.iter().cloned());
    mounts::apply(&mut d, &config.mounts, extra)?;

    security::proc_paths(
        &mut d,
        &sc.masked_paths,
        &sc.readonly_paths,
        input.cri.disable_proc_mount,
    );
    devices::apply(&mut d, &config.devices)?;
    let all_caps = capabilities::current_effective()?;
    if let Some(caps) = &sc.capabilities {
        capabilities::apply(&mut d, caps, &all_caps, &format!("{SC}.capabilities"))?;
    }
    if sc.privileged {
        security::privileged(
            &mut d,
            &all_caps,
            !input.runtime.privileged_without_host_devices,
        )?;
    }
    if sc.no_new_privs {
        d.no_new_privileges = true;
    }
    if sc.readonly_rootfs {
        d.root_readonly = true;
    }

    if input.cri.disable_cgroup {
        d.cgroups_path = None;
    } else {
        if let Some(r) = &linux.resources {
            resources::apply(&mut d, r, input.cri)?;
        }
        if !pod_linux.cgroup_parent.is_empty() {
            d.cgroups_path = Some(resources::cgroups_path(&pod_linux.cgroup_parent, input.id));
        }
    }

    d.annotations.extend(ann::passthrough(
        &input.sandbox_config.annotations,
        &input.runtime.pod_annotations,
    ));
    d.annotations.extend(ann::passthrough(
        &config.annotations,
        &input.runtime.container_annotations,
    ));
    if let Some(r) = &linux.resources {
        let adj = i32::try_from(r.oom_score_adj).map_err(|_| {
            CriError::invalid("config.linux.resources.oom_score_adj", "out of range")
        })?;
        d.oom_score_adj = Some(resources::oom_score_adj(adj, input.cri)?);
    }
    let cgroup_ns = namespaces::cgroup_v2() && !sc.privileged;
    namespaces::container(
        &mut d,
        modes,
        input.sandbox_pid,
        input.target_pid,
        cgroup_ns,
    )?;
    if modes.network == NamespaceMode::Node && input.netns_path.is_some() {
        tracing::debug!(
            id = input.id,
            "host-network container of a pod with a netns"
        );
    }
    let pod_meta = input.sandbox_config.metadata.clone().unwrap_or_default();
    let meta = config.metadata.clone().unwrap_or_default();
    let image_name = input
        .image
        .references
        .first()
        .cloned()
        .or_else(|| config.image.as_ref().map(|i| i.image.clone()))
        .unwrap_or_default();
    for (k, v) in [
        (ann::CONTAINER_TYPE, ann::CONTAINER_TYPE_CONTAINER),
        (ann::SANDBOX_ID, input.sandbox_id),
        (ann::SANDBOX_NAMESPACE, pod_meta.namespace.as_str()),
        (ann::SANDBOX_UID, pod_meta.uid.as_str()),
        (ann::SANDBOX_NAME, pod_meta.name.as_str()),
        (ann::CONTAINER_NAME, meta.name.as_str()),
        (ann::IMAGE_NAME, image_name.as_str()),
    ] {
        d.annotations.insert(k.to_owned(), v.to_owned());
    }

    // User and groups from the image's files, and the image volumes' content: one look
    // at the rootfs.
    let userstr = if userstr.is_empty() {
        image.user().clone().unwrap_or_default()
    } else {
        userstr
    };
    // containerd looks up the groups of the requested user, or of uid 0 when none is given.
    let group_user = if !sc.run_as_username.is_empty() {
        sc.run_as_username.clone()
    } else {
        sc.run_as_user.as_ref().map_or(0, |u| u.value).to_string()
    };
    let db = rootfs::with_rootfs(input.rootfs, |root| {
        mounts::copy_image_volume_content(root, &volumes)?;
        user::UserDb::read(root)
    })?;
    if !userstr.is_empty() {
        let field = if sc.run_as_username.is_empty() && sc.run_as_user.is_none() {
            "image.config.User".to_owned()
        } else {
            format!("{SC}.run_as_user")
        };
        let (uid, gid) = user::resolve(&db, &userstr, &field)?;
        d.uid = uid;
        d.gid = gid;
    }
    d.add_gids([d.gid]);
    d.add_gids(user::member_gids(&db, &group_user));
    d.add_gids(sc.supplemental_groups.iter().map(|g| *g as u32));

    security::seccomp_filter(&mut d, &seccomp, sc.privileged, SC)?;
    d.into_spec()
}
