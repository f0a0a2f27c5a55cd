//! [`CriEnv`]: a `berthd` with the CRI plugin configured as a node would be, offline: images
//! from a local registry under their upstream names, a private CNI bridge, the static pause
//! program as the sandbox image.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use berth_proto::runtime::v1::{ContainerConfig, PodSandboxConfig};
use tempfile::TempDir;

use super::client::{container_config, pod_config, CriClient};
use super::images::{
    self, busybox_images, pause_image, push_image, BuiltImage, PAUSE_IMAGE, PAUSE_TAGS,
};
use super::leftovers::{
    kill_until_gone, mounts, pids_in_cgroups_under, processes_mentioning, remove_cgroup_dirs,
    unmount_deepest_first, HostState,
};
use super::network::{TestNetwork, CNI_BIN_DIR, CNI_PLUGINS};
use super::reference::CriContainerd;
use crate::daemon::Daemon;
use crate::prereq::{require_binary, require_root};
use crate::registry::{Registry, REGISTRY_BIN};

/// The CRI plugin's section in the daemon config (containerd's name).
pub const CRI_SECTION: &str = "plugins.\"io.containerd.grpc.v1.cri\"";

/// The registry host that [`CriEnv`] sends to its basic-auth registry.
pub const AUTH_REGISTRY_HOST: &str = "auth.registry.test";

/// The user of the basic-auth registry.
pub const AUTH_USER: &str = "berth";

/// The password of the basic-auth registry.
pub const AUTH_PASSWORD: &str = "s3cret-pull";

/// An image only the basic-auth registry has (busybox, as [`images::BUSYBOX_IMAGE`]).
pub const AUTH_IMAGE: &str = "auth.registry.test/private/busybox:latest";

/// The upstream registries whose `hosts.toml` sends them to the plain local registry.
pub const MIRRORED_HOSTS: [&str; 3] = ["registry.k8s.io", "docker.io", "gcr.io"];

/// The static pause program's source.
pub const PAUSE_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/pause/pause.c");

/// The cgroup every test pod's `cgroup_parent` is under (one child per [`CriEnv`]).
pub const CGROUP_ROOT: &str = "/berth-cri-test";

/// Makes cgroup roots unique within the test process.
static NEXT_ENV: AtomicU32 = AtomicU32::new(0);

/// True when everything a CRI test needs is there: root, `docker-registry`, `htpasswd`, a C
/// compiler with static libc, `iptables-save`, `ip`, busybox and the CNI plugins in
/// `/usr/lib/cni`. Otherwise skips (or, under `CI=true`, panics naming what is missing).
pub fn require_cri() -> bool {
    if !(require_root()
        && require_binary(REGISTRY_BIN)
        && require_binary("htpasswd")
        && require_binary("cc")
        && require_binary("iptables-save")
        && require_binary("ip")
        && require_binary(crate::image::BUSYBOX))
    {
        return false;
    }
    CNI_PLUGINS.iter().all(|p| {
        require_binary(&format!("{CNI_BIN_DIR}/{p}"))
            || crate::prereq::skip(&format!(
                "CNI plugin {p} missing from {CNI_BIN_DIR} (Debian containernetworking-plugins)"
            ))
    })
}

/// Compiles the pause program into `dir/pause` with `cc -static -O2`; panics with the
/// compiler's output on failure.
pub fn build_pause(dir: &Path) -> PathBuf {
    let out_path = dir.join("pause");
    let out = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&out_path)
        .arg(PAUSE_SOURCE)
        .output()
        .expect("run cc (Debian gcc and libc6-dev)");
    assert!(
        out.status.success(),
        "cc -static {PAUSE_SOURCE} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out_path
}

/// Writes `<hosts_dir>/<host>/hosts.toml` sending `host` to `http://<target>` (a registry on
/// 127.0.0.1) for pull and resolve, with `server` set to the same address so that nothing
/// falls back to the internet.
pub fn write_hosts_toml(hosts_dir: &Path, host: &str, target: &str) {
    let dir = hosts_dir.join(host);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let text = format!(
        "server = \"http://{target}\"\n\n[host.\"http://{target}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    );
    fs::write(dir.join("hosts.toml"), text)
        .unwrap_or_else(|e| panic!("write hosts.toml for {host}: {e}"));
}

/// How to set up a [`CriEnv`].
#[derive(Debug, Clone)]
pub struct CriEnvOptions {
    /// Write the CNI conflist (false: an empty conf dir, so `Status` reports NetworkReady
    /// false).
    pub cni: bool,
    /// Start the basic-auth registry holding [`AUTH_IMAGE`].
    pub auth_registry: bool,
    /// TOML lines added inside the `[plugins."io.containerd.grpc.v1.cri"]` table, before its
    /// sub-tables (say `max_container_log_line_size = 64`).
    pub extra_cri_config: String,
    /// TOML added at the end of the daemon config.
    pub extra_config: String,
    /// Run a private containerd 1.6 with its CRI plugin (the reference) instead of `berthd`,
    /// with the same CRI section.
    pub containerd: bool,
}

impl Default for CriEnvOptions {
    fn default() -> Self {
        Self {
            cni: true,
            auth_registry: false,
            extra_cri_config: String::new(),
            extra_config: String::new(),
            containerd: false,
        }
    }
}

/// A running `berthd` whose CRI plugin is configured like a node's, offline:
///
/// - `sandbox_image` = [`PAUSE_IMAGE`], the static pause program (fixtures/pause/pause.c);
/// - `[registry] config_path` = a `certs.d` dir whose `hosts.toml` files send
///   `registry.k8s.io`, `docker.io` and `gcr.io` to a plain local `docker-registry` holding
///   the pause image (tags [`PAUSE_TAGS`]) and the busybox images of [`images`], and
///   [`AUTH_REGISTRY_HOST`] to a registry with basic auth when asked for;
/// - `[cni]` `bin_dir` = `/usr/lib/cni`, `conf_dir` = a dir with one bridge conflist on a
///   private /24 ([`TestNetwork`]);
/// - snapshotter `overlayfs`, `restrict_oom_score_adj = true`.
///
/// Pods made with [`CriEnv::pod_config`] log under [`CriEnv::log_dir`] and live in cgroups under
/// [`CriEnv::cgroup_root`]. Dropping the env kills the daemon, then whatever its pods left:
/// processes in its cgroups, shims naming its socket, mounts under its directories, the bridge.
#[derive(Debug)]
pub struct CriEnv {
    daemon: Option<Daemon>,
    containerd: Option<CriContainerd>,
    registry: Registry,
    auth_registry: Option<Registry>,
    network: Option<TestNetwork>,
    cgroup_root: String,
    config: String,
    pause: BuiltImage,
    dir: TempDir,
}

impl CriEnv {
    /// Builds the images, starts the registry and `berthd` with the default options.
    pub async fn start() -> Self {
        Self::start_with(CriEnvOptions::default()).await
    }

    /// Like [`CriEnv::start`] with `options`.
    pub async fn start_with(options: CriEnvOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bcri-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory under /tmp");
        let p = dir.path();
        for sub in ["cni", "certs.d", "logs", "ipam", "build"] {
            fs::create_dir_all(p.join(sub)).expect("create the CRI env layout");
        }
        let pause = build_pause(&p.join("build"));
        let registry = Registry::start_plain();
        let pause_image = pause_image(&pause);
        let pause_names: Vec<String> = PAUSE_TAGS
            .iter()
            .map(|t| format!("registry.k8s.io/pause:{t}"))
            .collect();
        let pause_refs: Vec<&str> = pause_names.iter().map(String::as_str).collect();
        push_image(&registry.host(), &pause_refs, &pause_image, None).await;
        let busybox = busybox_images();
        for (name, image) in &busybox {
            push_image(&registry.host(), &[name], image, None).await;
        }
        for host in MIRRORED_HOSTS {
            write_hosts_toml(&p.join("certs.d"), host, &registry.host());
        }
        let auth_registry = if options.auth_registry {
            let auth = Registry::start_plain_auth(AUTH_USER, AUTH_PASSWORD);
            let (_, image) = &busybox[0];
            push_image(
                &auth.host(),
                &[AUTH_IMAGE],
                image,
                Some((AUTH_USER, AUTH_PASSWORD)),
            )
            .await;
            write_hosts_toml(&p.join("certs.d"), AUTH_REGISTRY_HOST, &auth.host());
            Some(auth)
        } else {
            None
        };
        let network = options
            .cni
            .then(|| TestNetwork::create(&p.join("cni"), &p.join("ipam")));
        let n = NEXT_ENV.fetch_add(1, Ordering::Relaxed);
        let cgroup_root = format!("{CGROUP_ROOT}/env-{}-{n}", std::process::id());
        let config = cri_config(p, &options);
        let (daemon, containerd) = if options.containerd {
            let containerd = CriContainerd::start(&p.join("ctd"), &config);
            wait_for_cri(containerd.address()).await;
            (None, Some(containerd))
        } else {
            (Some(Daemon::start_with(Some(&config), &[])), None)
        };
        Self {
            daemon,
            containerd,
            registry,
            auth_registry,
            network,
            cgroup_root,
            config,
            pause: pause_image,
            dir,
        }
    }

    /// The `berthd`; panics on a reference env ([`CriEnvOptions::containerd`]).
    pub fn daemon(&self) -> &Daemon {
        self.daemon
            .as_ref()
            .expect("this CriEnv runs containerd, not berthd")
    }

    /// The `berthd`, to stop, kill (`kill9`) or restart it; panics on a reference env.
    pub fn daemon_mut(&mut self) -> &mut Daemon {
        self.daemon
            .as_mut()
            .expect("this CriEnv runs containerd, not berthd")
    }

    /// True when this env runs the reference containerd instead of `berthd`.
    pub fn is_reference(&self) -> bool {
        self.containerd.is_some()
    }

    /// The daemon's socket: the CRI endpoint.
    pub fn address(&self) -> &Path {
        match (&self.daemon, &self.containerd) {
            (Some(d), _) => d.address(),
            (None, Some(c)) => c.address(),
            (None, None) => unreachable!("a CriEnv runs berthd or containerd"),
        }
    }

    /// The daemon's root and state directories.
    fn daemon_dirs(&self) -> [PathBuf; 2] {
        match (&self.daemon, &self.containerd) {
            (Some(d), _) => [d.root().to_path_buf(), d.state().to_path_buf()],
            (None, Some(c)) => [c.root(), c.state()],
            (None, None) => unreachable!("a CriEnv runs berthd or containerd"),
        }
    }

    /// A new CRI client on the daemon's socket.
    pub async fn client(&self) -> CriClient {
        CriClient::connect(self.address()).await
    }

    /// The daemon config text (the CRI section uses containerd's keys, so a containerd can be
    /// started with the same text to compare).
    pub fn config_toml(&self) -> &str {
        &self.config
    }

    /// The pause image the registry serves as [`PAUSE_IMAGE`] (its digests).
    pub fn pause_image(&self) -> &BuiltImage {
        &self.pause
    }

    /// The plain registry the upstream names resolve to.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The basic-auth registry, when [`CriEnvOptions::auth_registry`] asked for it.
    pub fn auth_registry(&self) -> Option<&Registry> {
        self.auth_registry.as_ref()
    }

    /// The CNI network; `None` when [`CriEnvOptions::cni`] was false.
    pub fn network(&self) -> Option<&TestNetwork> {
        self.network.as_ref()
    }

    /// The CNI conf dir.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.path().join("cni")
    }

    /// The `config_path` dir of `hosts.toml` files.
    pub fn hosts_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    /// The parent of the pods' log directories.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// A scratch directory of this env (host paths for mounts, seccomp profiles, ...).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cgroup under which [`CriEnv::pod_config`] puts every pod (unique to this env).
    pub fn cgroup_root(&self) -> &str {
        &self.cgroup_root
    }

    /// A minimal pod config named `name` (see [`pod_config`]) with its log directory
    /// `<log_dir>/<uid>` (created) and cgroup parent `<cgroup_root>/pod<uid>`, as the kubelet's
    /// cgroupfs driver names them.
    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let mut config = pod_config(name, Path::new("/"), "");
        let uid = config
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default();
        let logs = self.log_dir().join(&uid);
        fs::create_dir_all(&logs).expect("create the pod log directory");
        config.log_directory = logs.display().to_string();
        if let Some(linux) = config.linux.as_mut() {
            linux.cgroup_parent = format!("{}/pod{uid}", self.cgroup_root);
        }
        config
    }

    /// A container config running `command` in [`images::BUSYBOX_IMAGE`] (see
    /// [`container_config`]).
    pub fn busybox_container(&self, name: &str, command: &[&str]) -> ContainerConfig {
        container_config(name, images::BUSYBOX_IMAGE, command)
    }

    /// Pulls [`images::BUSYBOX_IMAGE`] and runs a pod from [`CriEnv::pod_config`] named
    /// `name`, the way most CRI tests begin; returns the pod's config and id.
    pub async fn busybox_pod(&self, cri: &mut CriClient, name: &str) -> (PodSandboxConfig, String) {
        cri.pull_image(images::BUSYBOX_IMAGE)
            .await
            .expect("PullImage busybox");
        let pod = self.pod_config(name);
        let pod_id = cri.run_pod(&pod).await.expect("RunPodSandbox");
        (pod, pod_id)
    }

    /// What this env's pods have on the host now (see [`HostState`]).
    pub fn host_state(&self) -> HostState {
        let [root, state] = self.daemon_dirs();
        let dirs = [root.as_path(), state.as_path(), self.dir.path()];
        let (prefix, name) = match &self.network {
            Some(n) => (n.prefix(), n.name().to_owned()),
            None => ("\u{0}".to_owned(), "\u{0}".to_owned()),
        };
        HostState::read(&dirs, &self.cgroup_root, &prefix, &name, self.address())
    }

    /// Kills what the pods left (processes in the env's cgroups, shims naming the socket),
    /// unmounts everything under the env's directories, removes its cgroups. Best effort.
    fn clean_host(&mut self) {
        let address = self.address().display().to_string();
        kill_until_gone(|| {
            let mut pids = pids_in_cgroups_under(&self.cgroup_root);
            pids.extend(processes_mentioning(&address).into_iter().map(|p| p.pid));
            pids
        });
        let [root, state] = self.daemon_dirs();
        let dirs = [root, state, self.dir.path().to_path_buf()];
        unmount_deepest_first(
            mounts()
                .into_iter()
                .map(|m| m.mount_point)
                .filter(|m| dirs.iter().any(|d| m.starts_with(d)))
                .collect(),
        );
        remove_cgroup_dirs(&self.cgroup_root);
    }
}

/// How long [`CriEnv`]'s drop lets the daemon stop and remove the pods a test left.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Stops and removes every pod of the daemon at `address` through the CRI, as the kubelet
/// would, so that its CNI DEL runs (iptables rules, IPAM, netns outside the env's dirs). Runs on
/// its own thread and runtime (drop may run inside a test's runtime); best effort, bounded by
/// [`TEARDOWN_TIMEOUT`].
fn remove_all_pods(address: PathBuf) {
    let worker = thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let teardown = async {
                let mut cri = CriClient::connect(&address).await;
                let pods = cri.list_pods(None).await.unwrap_or_default();
                for pod in pods {
                    let _ = cri.stop_and_remove_pod(&pod.id).await;
                }
            };
            let _ = tokio::time::timeout(TEARDOWN_TIMEOUT, teardown).await;
        });
    });
    let _ = worker.join();
}

impl Drop for CriEnv {
    fn drop(&mut self) {
        let running = match (&mut self.daemon, &self.containerd) {
            (Some(d), _) => d.is_running(),
            (None, Some(_)) => true,
            (None, None) => false,
        };
        if running && std::os::unix::net::UnixStream::connect(self.address()).is_ok() {
            remove_all_pods(self.address().to_path_buf());
        }
        if let Some(daemon) = self.daemon.as_mut() {
            if daemon.is_running() {
                daemon.kill9();
            }
        }
        if let Some(containerd) = self.containerd.as_mut() {
            containerd.kill();
        }
        self.clean_host();
    }
}

/// The daemon config of a [`CriEnv`] rooted at `dir`.
fn cri_config(dir: &Path, options: &CriEnvOptions) -> String {
    format!(
        "[{CRI_SECTION}]\n\
         \x20 sandbox_image = \"{PAUSE_IMAGE}\"\n\
         \x20 restrict_oom_score_adj = true\n\
         \x20 stream_server_port = \"0\"\n\
         {extra_cri}\n\
         [{CRI_SECTION}.containerd]\n\
         \x20 snapshotter = \"overlayfs\"\n\
         [{CRI_SECTION}.cni]\n\
         \x20 bin_dir = \"{CNI_BIN_DIR}\"\n\
         \x20 conf_dir = \"{cni}\"\n\
         [{CRI_SECTION}.registry]\n\
         \x20 config_path = \"{hosts}\"\n\
         {extra}\n",
        extra_cri = options.extra_cri_config,
        cni = dir.join("cni").display(),
        hosts = dir.join("certs.d").display(),
        extra = options.extra_config,
    )
}

/// Waits until the CRI on `address` answers `Version`: containerd opens its socket before its
/// CRI plugin has recovered its state, and until then every CRI call fails with "server is not
/// initialized yet".
async fn wait_for_cri(address: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client = CriClient::connect(address).await;
    loop {
        match client.version().await {
            Err(e) if e.message().contains("not initialized") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!(
                "the CRI on {} does not answer Version: {e}",
                address.display()
            ),
            Ok(_) => return,
        }
    }
}
