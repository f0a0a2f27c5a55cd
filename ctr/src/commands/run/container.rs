//! ctr's `run.NewContainer` (`run_unix.go`): the container flags shared by `run` and
//! `containers create`, the spec they produce and the Containers.Create call.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use berth_proto::containerd::runc::v1::Options as RuncOptions;
use berth_proto::containerd::services::containers::v1::{
    container::Runtime, Container, CreateContainerRequest, DeleteContainerRequest,
};
use berth_proto::containerd::services::snapshots::v1::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use berth_proto::containerd::types::Mount;
use serde_json::{json, Value};
use tonic::Code;

use super::volumes::{Plan, RootSource, VolumeFlags};
use crate::client::images as img;
use crate::client::leases::TempLease;
use crate::client::spec::{self, Accounts, ImageConfigDoc};
use crate::client::tasks::{runc_options_any, STOP_SIGNAL_LABEL};
use crate::client::unpack::{snapshot_exists, unpack};
use crate::client::{mount, Client};
use crate::commands::images::platform_arg;
use crate::error::{Object, RpcResultExt};

/// containerd's `defaults.DefaultRuntime`.
pub const DEFAULT_RUNTIME: &str = "io.containerd.runc.v2";

/// Container flags (ctr's `ContainerFlags`, `SnapshotterFlags` and `platformRunFlags`, plus a
/// few berth conveniences: `--user`, `--hostname`, `--pids-limit`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ContainerFlags {
    /// Snapshotter name (default: namespace label, else overlayfs).
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER")]
    pub snapshotter: Option<String>,
    /// Labels for the container's snapshot (KEY=VALUE).
    #[arg(long = "snapshotter-label")]
    pub snapshotter_labels: Vec<String>,
    /// Path to a runtime spec (config.json) to use instead of generating one.
    #[arg(short = 'c', long)]
    pub config: Option<String>,
    /// Working directory of the process.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Additional environment variables (FOO=bar).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// File of additional environment variables, one FOO=bar a line.
    #[arg(long)]
    pub env_file: Option<String>,
    /// Additional labels (KEY=VALUE), also set as spec annotations.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Additional OCI annotations (KEY=VALUE).
    #[arg(long = "annotation")]
    pub annotations: Vec<String>,
    /// Additional mount: type=bind,src=/tmp,dst=/host,options=rbind:ro.
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// Use the host's network namespace.
    #[arg(long)]
    pub net_host: bool,
    /// OCI hooks `run --net` adds (see `run/network.rs`).
    #[arg(skip)]
    pub oci_hooks: Option<Value>,
    /// Run a privileged container.
    #[arg(long)]
    pub privileged: bool,
    /// Make the container's root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Runtime name.
    #[arg(long, default_value = DEFAULT_RUNTIME)]
    pub runtime: String,
    /// Runtime config path (runtimes other than runc; not supported).
    #[arg(long)]
    pub runtime_config_path: Option<String>,
    /// Allocate a TTY for the container.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Join an existing Linux namespace: `<nstype>:<path>`.
    #[arg(long = "with-ns")]
    pub with_ns: Vec<String>,
    /// File to write the task's pid to.
    #[arg(long)]
    pub pid_file: Option<String>,
    /// Turn off the spec's noNewPrivileges.
    #[arg(long)]
    pub allow_new_privs: bool,
    /// Memory limit in bytes.
    #[arg(long)]
    pub memory_limit: Option<u64>,
    /// Host device to add to the container.
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Add Linux capabilities (CAP_ prefix).
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities (CAP_ prefix).
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Enable the default seccomp profile (not supported by berth: use --seccomp-profile).
    #[arg(long)]
    pub seccomp: bool,
    /// Seccomp profile file (JSON, `linux.seccomp` of the runtime spec); needs --seccomp.
    #[arg(long)]
    pub seccomp_profile: Option<String>,
    /// AppArmor profile to run the process under.
    #[arg(long)]
    pub apparmor_profile: Option<String>,
    /// Use a host directory as the rootfs instead of an image (the first argument).
    #[arg(long)]
    pub rootfs: bool,
    /// Disable the use of pivot_root.
    #[arg(long)]
    pub no_pivot: bool,
    /// CPU CFS quota (-1: unset).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub cpu_quota: i64,
    /// CPU CFS period (0: unset).
    #[arg(long, default_value_t = 0)]
    pub cpu_period: u64,
    /// Propagation of the container rootfs.
    #[arg(long)]
    pub rootfs_propagation: Option<String>,
    /// runc-compatible binary.
    #[arg(long)]
    pub runc_binary: Option<String>,
    /// runc-compatible root.
    #[arg(long)]
    pub runc_root: Option<String>,
    /// Start runc with the systemd cgroup manager (needs --cgroup).
    #[arg(long)]
    pub runc_systemd_cgroup: bool,
    /// CFS CPU quota as a number of CPUs.
    #[arg(long, default_value_t = 0.0)]
    pub cpus: f64,
    /// CPU shares.
    #[arg(long, default_value_t = 1024)]
    pub cpu_shares: u64,
    /// Platform of the image to run (os/arch[/variant]).
    #[arg(long)]
    pub platform: Option<String>,
    /// Cgroup path ("" disables the cgroup).
    #[arg(long)]
    pub cgroup: Option<String>,
    /// User (uid, name, uid:gid or name:group) to run the process as (berth).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Hostname of the container (berth).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Maximum number of pids in the container (berth).
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Volumes (`-v`, `--volumes-from`; berth, as Docker).
    #[command(flatten)]
    pub volumes: VolumeFlags,
}

/// The image (or rootfs) and the container id from the positional arguments; with `--config`
/// the first argument is the id.
pub fn ref_and_id<'a>(
    flags: &ContainerFlags,
    first: &'a str,
    second: Option<&'a str>,
) -> Result<(&'a str, &'a str)> {
    if flags.config.is_some() {
        if second.is_some() {
            bail!("with spec config file, only container id should be provided");
        }
        return Ok(("", first));
    }
    if first.is_empty() {
        bail!("image ref must be provided");
    }
    match second.filter(|s| !s.is_empty()) {
        Some(id) => Ok((first, id)),
        None => bail!("container id must be provided"),
    }
}

/// ctr's `LabelArgs`: `k=v`, a bare `k` meaning `k=true`.
fn label_args(args: &[String]) -> HashMap<String, String> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (a.clone(), "true".to_owned()),
        })
        .collect()
}

/// `AnnotationArgs`: `k=v` only.
fn annotation_args(args: &[String]) -> Result<HashMap<String, String>> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => bail!("invalid key=value format annotation: {a}"),
        })
        .collect()
}

/// The runtime and its options (`getRuntimeOptions`).
fn runtime(flags: &ContainerFlags) -> Result<Runtime> {
    let runc = flags.runtime == DEFAULT_RUNTIME;
    if (flags.runc_binary.is_some() || flags.runc_systemd_cgroup) && !runc {
        bail!("specifying runc-binary and runc-systemd-cgroup is only supported for \"io.containerd.runc.v2\" runtime");
    }
    if runc {
        if flags.runc_systemd_cgroup && flags.cgroup.as_deref().unwrap_or("").is_empty() {
            bail!("option --runc-systemd-cgroup requires --cgroup to be set, e.g. \"machine.slice:foo:deadbeef\"");
        }
        let opts = RuncOptions {
            binary_name: flags.runc_binary.clone().unwrap_or_default(),
            root: flags.runc_root.clone().unwrap_or_default(),
            systemd_cgroup: flags.runc_systemd_cgroup,
            ..Default::default()
        };
        return Ok(Runtime {
            name: flags.runtime.clone(),
            options: Some(runc_options_any(&opts)),
        });
    }
    if flags.runtime_config_path.is_some() {
        bail!("--runtime-config-path is not supported by berth");
    }
    Ok(Runtime {
        name: flags.runtime.clone(),
        options: None,
    })
}

/// `tryReadonlyMounts`: a single overlay mount without its upper layer, binds read-only.
pub(super) fn readonly_mounts(mut mounts: Vec<Mount>) -> Vec<Mount> {
    if mounts.len() == 1 && mounts[0].r#type == "overlay" {
        let opts = &mounts[0].options;
        let upper = opts
            .iter()
            .find_map(|o| o.strip_prefix("upperdir="))
            .map(str::to_owned);
        let mut out = Vec::new();
        for o in opts {
            if o.starts_with("upperdir=") || o.starts_with("workdir=") {
                continue;
            }
            match (o.strip_prefix("lowerdir="), &upper) {
                (Some(lower), Some(up)) => out.push(format!("lowerdir={up}:{lower}")),
                _ => out.push(o.clone()),
            }
        }
        if !opts.iter().any(|o| o.starts_with("lowerdir=")) {
            if let Some(up) = upper {
                out.push(format!("lowerdir={up}"));
            }
        }
        out.retain(|o| o != "rw");
        out.push("ro".to_owned());
        mounts[0].options = out;
    } else {
        for m in &mut mounts {
            if m.r#type == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind") {
                m.options.retain(|o| o != "rw");
                m.options.push("ro".to_owned());
            }
        }
    }
    mounts
}

/// `mount.WithTempMount`: mounts the snapshot read-only on a temporary directory and reads the
/// accounts files.
pub async fn read_accounts(client: &Client, snapshotter: &str, key: &str) -> Result<Accounts> {
    let mounts = client
        .snapshots()
        .mounts(client.req(MountsRequest {
            snapshotter: snapshotter.to_owned(),
            key: key.to_owned(),
        }))
        .await
        .rpc(client, "get mounts of", Object::snapshot(snapshotter, key))?
        .into_inner()
        .mounts;
    accounts_from_mounts(mounts).await
}

/// Reads the accounts files of a snapshot through `mounts` (mounted read-only for it).
async fn accounts_from_mounts(mounts: Vec<Mount>) -> Result<Accounts> {
    let mounts = readonly_mounts(mounts);
    tokio::task::spawn_blocking(move || -> Result<Accounts> {
        let dir = std::env::temp_dir().join(format!("berth-mount-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir)
            .with_context(|| format!("cannot create temp mount {}", dir.display()))?;
        let result = mount::mount_all(&mounts, &dir).map(|()| Accounts::read(&dir));
        let unmounted = mount::unmount_all(&dir);
        let _ = std::fs::remove_dir(&dir);
        let accounts = result?;
        unmounted?;
        Ok(accounts)
    })
    .await?
}

/// A host device for `--device` (`oci.WithDevices(path, "", "rwm")` for one device node).
fn host_device(path: &str) -> Result<(Value, Value)> {
    use nix::sys::stat::{major, minor, stat, SFlag};
    let st = stat(path).with_context(|| format!("cannot stat device {path}"))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let t = if kind == SFlag::S_IFCHR {
        "c"
    } else if kind == SFlag::S_IFBLK {
        "b"
    } else {
        bail!("{path} is not a device node (directories of devices are not supported)");
    };
    let (maj, min) = (major(st.st_rdev), minor(st.st_rdev));
    let device = json!({
        "path": path, "type": t, "major": maj, "minor": min,
        "fileMode": st.st_mode & 0o777, "uid": st.st_uid, "gid": st.st_gid,
    });
    let allow = json!({"allow": true, "type": t, "major": maj, "minor": min, "access": "rwm"});
    Ok((device, allow))
}

/// The options applied after the image config, in ctr's order.
fn apply_flags(
    spec: &mut Value,
    flags: &ContainerFlags,
    args: &[String],
    accounts: &Accounts,
) -> Result<()> {
    if flags.read_only {
        spec["root"]["readonly"] = json!(true);
    }
    if !args.is_empty() {
        spec["process"]["args"] = json!(args);
    }
    if let Some(cwd) = flags.cwd.as_deref().filter(|c| !c.is_empty()) {
        spec["process"]["cwd"] = json!(cwd);
    }
    if flags.tty {
        spec["process"]["terminal"] = json!(true);
        let mut env = spec::env(spec);
        env.push("TERM=xterm".to_owned());
        spec["process"]["env"] = json!(env);
    }
    if flags.privileged {
        spec::with_privileged(spec);
    }
    if flags.net_host {
        let hostname = nix::unistd::gethostname()
            .context("get hostname")?
            .to_string_lossy()
            .into_owned();
        spec::with_host_namespace(spec, "network");
        spec::add_mount(
            spec,
            spec::mount("/etc/hosts", "bind", "/etc/hosts", &["rbind", "ro"]),
        );
        spec::add_mount(
            spec,
            spec::mount(
                "/etc/resolv.conf",
                "bind",
                "/etc/resolv.conf",
                &["rbind", "ro"],
            ),
        );
        spec::with_env(spec, &[format!("HOSTNAME={hostname}")]);
    }
    if let Some(hooks) = &flags.oci_hooks {
        spec["hooks"] = hooks.clone();
    }
    spec::with_annotations(spec, &annotation_args(&flags.annotations)?);
    if !flags.cap_add.is_empty() || !flags.cap_drop.is_empty() {
        spec::edit_capabilities(spec, &flags.cap_add, &flags.cap_drop)?;
    }
    if !flags.seccomp && flags.seccomp_profile.is_some() {
        bail!("seccomp must be set to true, if using a custom seccomp-profile");
    }
    if flags.seccomp {
        let Some(path) = &flags.seccomp_profile else {
            bail!("--seccomp: the default seccomp profile is not supported by berth; pass one with --seccomp-profile");
        };
        let text =
            std::fs::read(path).with_context(|| format!("cannot read seccomp profile {path}"))?;
        let profile: Value = serde_json::from_slice(&text)
            .with_context(|| format!("cannot decode seccomp profile {path}"))?;
        spec["linux"]["seccomp"] = profile;
    }
    if let Some(profile) = &flags.apparmor_profile {
        spec["process"]["apparmorProfile"] = json!(profile);
    }
    if flags.cpus > 0.0 {
        spec["linux"]["resources"]["cpu"]["quota"] = json!((flags.cpus * 100_000.0) as i64);
        spec["linux"]["resources"]["cpu"]["period"] = json!(100_000u64);
    }
    if flags.cpu_shares > 0 {
        spec["linux"]["resources"]["cpu"]["shares"] = json!(flags.cpu_shares);
    }
    if flags.cpu_quota != -1 || flags.cpu_period != 0 {
        if flags.cpus > 0.0 {
            bail!("cpus and quota/period should be used separately");
        }
        spec["linux"]["resources"]["cpu"]["quota"] = json!(flags.cpu_quota);
        spec["linux"]["resources"]["cpu"]["period"] = json!(flags.cpu_period);
    }
    for ns in &flags.with_ns {
        let Some((kind, path)) = ns.split_once(':') else {
            bail!("joining a Linux namespace using --with-ns requires the format 'nstype:path'");
        };
        if !matches!(
            kind,
            "pid" | "network" | "uts" | "mount" | "user" | "ipc" | "cgroup"
        ) {
            bail!("the Linux namespace type specified in --with-ns is not valid: {kind}");
        }
        spec::with_linux_namespace(spec, kind, path);
    }
    if flags.allow_new_privs {
        spec["process"]["noNewPrivileges"] = json!(false);
    }
    if let Some(cgroup) = &flags.cgroup {
        spec["linux"]["cgroupsPath"] = json!(cgroup);
    }
    if let Some(limit) = flags.memory_limit.filter(|l| *l != 0) {
        spec["linux"]["resources"]["memory"]["limit"] = json!(limit as i64);
    }
    for dev in &flags.devices {
        let (device, allow) = host_device(dev)?;
        match spec["linux"]["devices"].as_array_mut() {
            Some(list) => list.push(device),
            None => spec["linux"]["devices"] = json!([device]),
        }
        if let Some(list) = spec["linux"]["resources"]["devices"].as_array_mut() {
            list.push(allow);
        }
    }
    if let Some(p) = flags
        .rootfs_propagation
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        spec["linux"]["rootfsPropagation"] = json!(p);
    }
    if let Some(user) = flags.user.as_deref().filter(|u| !u.is_empty()) {
        spec::with_user(spec, user, accounts)?;
        let uid = spec["process"]["user"]["uid"].as_u64().unwrap_or(0);
        spec::with_additional_gids(spec, &uid.to_string(), accounts);
    }
    if let Some(hostname) = &flags.hostname {
        spec["hostname"] = json!(hostname);
    }
    if let Some(limit) = flags.pids_limit {
        spec["linux"]["resources"]["pids"] = json!({"limit": limit});
    }
    Ok(())
}

/// What the image contributes to a container.
struct FromImage {
    name: String,
    snapshotter: String,
    labels: HashMap<String, String>,
}

/// A container [`new_container`] made, with the rootfs mounts of its snapshot when it has one:
/// the task created right after needs no Containers.Get and Snapshots.Mounts of its own.
#[derive(Debug)]
pub struct NewContainer {
    pub container: Container,
    pub rootfs: Option<Vec<Mount>>,
    /// The temporary lease the container was made under, not deleted yet: the container
    /// references its snapshot by now, so the caller deletes it when it likes (`berth run`,
    /// alongside Tasks.Create) with [`NewContainer::release_lease`].
    pub lease: Option<TempLease>,
}

impl NewContainer {
    /// Deletes the temporary lease, if it is still there.
    pub async fn release_lease(lease: Option<TempLease>) -> Result<()> {
        match lease {
            Some(lease) => lease.done().await,
            None => Ok(()),
        }
    }
}

/// ctr's `NewContainer`: builds the spec and creates container `id` from `image_ref` (or the
/// `--rootfs` directory, or the `--config` spec).
pub async fn new_container(
    client: &Client,
    flags: &ContainerFlags,
    image_ref: &str,
    id: &str,
    args: &[String],
) -> Result<NewContainer> {
    let cmd_labels = label_args(&flags.labels);
    let runtime = runtime(flags)?;

    if let Some(path) = &flags.config {
        if flags.volumes.any() {
            bail!("--volume and --volumes-from cannot be used with --config");
        }
        let text = std::fs::read(path).with_context(|| format!("cannot read spec {path}"))?;
        let mut spec: Value =
            serde_json::from_slice(&text).with_context(|| format!("cannot decode spec {path}"))?;
        spec::with_annotations(&mut spec, &cmd_labels);
        let container = create(
            client,
            Container {
                id: id.to_owned(),
                labels: cmd_labels,
                runtime: Some(runtime),
                spec: Some(spec::to_any(&spec)?),
                ..Default::default()
            },
        )
        .await?;
        return Ok(NewContainer {
            container,
            rootfs: None,
            lease: None,
        });
    }

    let mut spec = spec::default_spec(&client.namespace, id);
    if let Some(path) = &flags.env_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read env file {path}"))?;
        spec::with_env(&mut spec, &spec::env_file_vars(&text));
    }
    spec::with_env(&mut spec, &flags.env);
    // `--mount`, `-v`, `--volumes-from`: checked now, made once the rootfs is there.
    let mut volumes = Plan::new(client, &flags.volumes, &flags.mounts).await?;

    if flags.rootfs {
        let root: PathBuf = std::path::absolute(image_ref)
            .with_context(|| format!("invalid rootfs path {image_ref:?}"))?;
        spec["root"]["path"] = json!(root.to_string_lossy());
        let accounts = Accounts::read(&root);
        apply_flags(&mut spec, flags, args, &accounts)?;
        spec::with_annotations(&mut spec, &cmd_labels);
        let mut labels = cmd_labels;
        let applied = volumes
            .apply(client, &mut spec, &mut labels, Some(RootSource::Dir(root)))
            .await?;
        let made = async {
            create(
                client,
                Container {
                    id: id.to_owned(),
                    labels,
                    runtime: Some(runtime),
                    spec: Some(spec::to_any(&spec)?),
                    ..Default::default()
                },
            )
            .await
        }
        .await;
        match &made {
            Ok(_) => applied.done(),
            Err(_) => applied.rollback(),
        }
        return made.map(|container| NewContainer {
            container,
            rootfs: None,
            lease: None,
        });
    }

    // Image: resolve, unpack if needed, then everything else under one lease. Lookups that do
    // not depend on each other are asked at once (each is a round trip to the daemon, and the
    // lease a durable write).
    let platform = platform_arg(flags.platform.as_deref())?;
    let (image, snapshotter) = tokio::try_join!(
        img::get(client, image_ref),
        client.snapshotter(flags.snapshotter.as_deref()),
    )?;
    let resolve = async {
        let (rootfs, raw) = img::rootfs_and_config(client, &img::target(&image), &platform).await?;
        let raw_config: Value =
            serde_json::from_slice(&raw).context("cannot decode the image config")?;
        let chain = rootfs.chain_id().context("image has no layers to run")?;
        let unpacked = snapshot_exists(client, &snapshotter, &chain).await?;
        anyhow::Ok((rootfs, raw_config, chain, unpacked))
    };
    let (rootfs, raw_config, chain, unpacked, lease) =
        match tokio::join!(resolve, TempLease::new(client)) {
            (Ok((r, c, ch, u)), Ok(lease)) => (r, c, ch, u, lease),
            (Ok(_), Err(e)) => return Err(e),
            (Err(e), lease) => {
                if let Ok(lease) = lease {
                    let _ = lease.done().await;
                }
                return Err(e);
            }
        };
    let prepared = async {
        let config: ImageConfigDoc =
            serde_json::from_value(raw_config.clone()).context("cannot decode the image config")?;
        volumes.add_image_volumes(&raw_config)?;
        if !unpacked {
            unpack(client, &rootfs, &snapshotter).await?;
        }
        anyhow::Ok(config)
    }
    .await;
    let config = match prepared {
        Ok(c) => c,
        Err(e) => {
            let _ = lease.done().await;
            return Err(e);
        }
    };
    let mut labels: HashMap<String, String> = config.config.labels.clone().unwrap_or_default();
    labels.extend(image.labels.clone());
    labels.extend(cmd_labels.clone());
    let stop = if config.config.stop_signal.is_empty() {
        "SIGTERM".to_owned()
    } else {
        config.config.stop_signal.clone()
    };
    labels.insert(STOP_SIGNAL_LABEL.to_owned(), stop);
    let from = FromImage {
        name: image.name.clone(),
        snapshotter,
        labels,
    };

    let leased = lease.client.clone();
    let result = async {
        let mounts = prepare_snapshot(&leased, flags, &from.snapshotter, id, &chain).await?;
        let made = async {
            let accounts = accounts_from_mounts(mounts.clone()).await?;
            spec::with_image_config(&mut spec, &config.config, &[], &accounts)?;
            apply_flags(&mut spec, flags, args, &accounts)?;
            spec::with_annotations(&mut spec, &cmd_labels);
            let mut labels = from.labels.clone();
            let root = RootSource::Snapshot {
                snapshotter: from.snapshotter.clone(),
                key: id.to_owned(),
            };
            let applied = volumes
                .apply(&leased, &mut spec, &mut labels, Some(root))
                .await?;
            let created = async {
                create(
                    &leased,
                    Container {
                        id: id.to_owned(),
                        labels,
                        image: from.name.clone(),
                        runtime: Some(runtime.clone()),
                        spec: Some(spec::to_any(&spec)?),
                        snapshotter: from.snapshotter.clone(),
                        snapshot_key: id.to_owned(),
                        ..Default::default()
                    },
                )
                .await
            }
            .await;
            match &created {
                Ok(_) => applied.done(),
                Err(_) => applied.rollback(),
            }
            created.map(|container| NewContainer {
                container,
                rootfs: Some(mounts),
                lease: None,
            })
        }
        .await;
        if made.is_err() {
            let _ = leased
                .snapshots()
                .remove(leased.req(RemoveSnapshotRequest {
                    snapshotter: from.snapshotter.clone(),
                    key: id.to_owned(),
                }))
                .await;
        }
        made
    }
    .await;
    match result {
        Ok(made) => Ok(NewContainer {
            lease: Some(lease),
            ..made
        }),
        Err(e) => {
            let _ = lease.done().await;
            Err(e)
        }
    }
}

/// `WithNewSnapshot`: Prepare(key = id, parent = top chain ID).
async fn prepare_snapshot(
    client: &Client,
    flags: &ContainerFlags,
    snapshotter: &str,
    id: &str,
    parent: &str,
) -> Result<Vec<Mount>> {
    Ok(client
        .snapshots()
        .prepare(client.req(PrepareSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            key: id.to_owned(),
            parent: parent.to_owned(),
            labels: label_args(&flags.snapshotter_labels),
        }))
        .await
        .rpc(client, "prepare", Object::snapshot(snapshotter, id))?
        .into_inner()
        .mounts)
}

/// Containers.Create.
async fn create(client: &Client, c: Container) -> Result<Container> {
    let id = c.id.clone();
    Ok(client
        .containers()
        .create(client.req(CreateContainerRequest { container: Some(c) }))
        .await
        .rpc(client, "create", Object::container(&id))?
        .into_inner()
        .container
        .unwrap_or_default())
}

/// `container.Delete(WithSnapshotCleanup)` of a container whose record the caller has:
/// Snapshots.Remove and Containers.Delete, asked at once (each is a durable write in the daemon;
/// neither depends on the other, and a crash between them leaves what ctr's order can leave
/// too: a record without its snapshot, or a snapshot nothing references, which GC removes).
pub async fn delete_with_snapshot(client: &Client, c: &Container) -> Result<()> {
    let remove_snapshot = async {
        if c.snapshot_key.is_empty() || c.snapshotter.is_empty() {
            return Ok(());
        }
        let removed = client
            .snapshots()
            .remove(client.req(RemoveSnapshotRequest {
                snapshotter: c.snapshotter.clone(),
                key: c.snapshot_key.clone(),
            }))
            .await;
        match removed {
            Err(s) if s.code() != Code::NotFound => Err(s).rpc(
                client,
                "remove",
                Object::snapshot(&c.snapshotter, &c.snapshot_key),
            ),
            _ => Ok(()),
        }
    };
    let delete_record = async {
        client
            .containers()
            .delete(client.req(DeleteContainerRequest { id: c.id.clone() }))
            .await
            .rpc(client, "delete", Object::container(&c.id))
            .map(drop)
    };
    let (removed, deleted) = tokio::join!(remove_snapshot, delete_record);
    removed.and(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: &str, opts: &[&str]) -> Mount {
        Mount {
            r#type: kind.into(),
            source: "x".into(),
            options: opts.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn readonly_overlay_folds_upper_into_lower() {
        let out = readonly_mounts(vec![m(
            "overlay",
            &["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/a:/b"],
        )]);
        assert_eq!(out[0].options, ["index=off", "lowerdir=/u:/a:/b", "ro"]);
        let out = readonly_mounts(vec![m("bind", &["rw", "rbind"])]);
        assert_eq!(out[0].options, ["rbind", "ro"]);
    }

    #[test]
    fn ids_and_labels() {
        let flags = ContainerFlags::default();
        assert_eq!(ref_and_id(&flags, "img", Some("c")).unwrap(), ("img", "c"));
        assert!(ref_and_id(&flags, "img", None).is_err());
        let labels = label_args(&["a=1".into(), "b".into()]);
        assert_eq!(labels["b"], "true");
        assert!(annotation_args(&["x".into()]).is_err());
    }

    #[test]
    fn runtime_options_are_runc_options() {
        let flags = ContainerFlags {
            runtime: DEFAULT_RUNTIME.into(),
            ..Default::default()
        };
        let rt = runtime(&flags).unwrap();
        let any = rt.options.unwrap();
        assert_eq!(any.type_url, "containerd.runc.v1.Options");
        assert!(any.value.is_empty());
        let flags = ContainerFlags {
            runtime: "io.containerd.other.v1".into(),
            runc_binary: Some("crun".into()),
            ..Default::default()
        };
        assert!(runtime(&flags).is_err());
    }

    #[test]
    fn flags_shape_the_spec() {
        let flags = ContainerFlags {
            read_only: true,
            cwd: Some("/tmp".into()),
            tty: true,
            cpu_shares: 1024,
            memory_limit: Some(1 << 20),
            cpu_quota: -1,
            pids_limit: Some(10),
            hostname: Some("h".into()),
            ..Default::default()
        };
        let mut spec = spec::default_spec("default", "c");
        apply_flags(&mut spec, &flags, &["ls".into()], &Accounts::default()).unwrap();
        assert_eq!(spec["root"]["readonly"], true);
        assert_eq!(spec["process"]["args"], json!(["ls"]));
        assert_eq!(spec["process"]["cwd"], "/tmp");
        assert_eq!(spec["process"]["terminal"], true);
        assert_eq!(spec["process"]["env"], json!(["TERM=xterm"]));
        assert_eq!(spec["linux"]["resources"]["cpu"]["shares"], 1024);
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 1 << 20);
        assert_eq!(spec["linux"]["resources"]["pids"]["limit"], 10);
        assert_eq!(spec["hostname"], "h");
        let bad = ContainerFlags {
            seccomp: true,
            cpu_quota: -1,
            ..Default::default()
        };
        let err = apply_flags(&mut spec, &bad, &[], &Accounts::default()).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
    }
}
