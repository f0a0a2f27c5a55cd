//! CRI pods (issue 20, part 4): RunPodSandbox + CreateContainer + StartContainer of one pod with
//! one container, its teardown (StopPodSandbox + RemovePodSandbox), and many pods started at
//! once, Berth's CRI against containerd 1.6's.
//!
//! The section starts a pair of daemons of its own with the CRI plugin on, configured as the
//! CRI tests configure them (`crate::cri`): the static pause program as the sandbox image
//! ([`PAUSE_IMAGE`]), the busybox image for the containers, both imported into `k8s.io` with
//! `ctr` (nothing is pulled), and a private CNI bridge per daemon ([`TestNetwork`],
//! `/usr/lib/cni`). Both are driven by the same Rust CRI client ([`CriClient`]), the daemons
//! taking turns. Whatever a pod leaves (a failed run) is removed when the daemon is dropped:
//! pods through the CRI, then processes in the pods' cgroups, shims, mounts, cgroups, the bridge
//! and its iptables rules, each step bounded in time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use berth_proto::runtime::v1::{ContainerConfig, PodSandboxConfig};
use serde_json::json;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use super::report::{def, MetricDef, Report, Target};
use super::servers::{Kind, Server};
use super::stats::Summary;
use super::{procfs, progress, SectionCx};
use crate::cri::images::pause_image;
use crate::cri::leftovers::{
    kill_until_gone, mounts_under, pids_in_cgroups_under, remove_cgroup_dirs, unmount_deepest_first,
};
use crate::cri::network::{CNI_BIN_DIR, CNI_PLUGINS};
use crate::cri::{
    container_config, pod_config, CriClient, TestNetwork, CRI_SECTION, PAUSE_IMAGE, PAUSE_SOURCE,
};
use crate::image::sha256_digest;

/// This section's rows, in table order.
pub const METRICS: &[MetricDef] = &[
    def(
        "pod_start_ms",
        "pod start: RunPodSandbox + CreateContainer + StartContainer",
        "ms",
        Target::RatioAtMost(0.5),
    ),
    def(
        "pod_run_sandbox_ms",
        "pod start: RunPodSandbox",
        "ms",
        Target::None,
    ),
    def(
        "pod_create_container_ms",
        "pod start: CreateContainer",
        "ms",
        Target::None,
    ),
    def(
        "pod_start_container_ms",
        "pod start: StartContainer",
        "ms",
        Target::None,
    ),
    def(
        "pod_teardown_ms",
        "pod teardown: StopPodSandbox + RemovePodSandbox",
        "ms",
        Target::None,
    ),
    def(
        "pods_concurrent_ms",
        "pods started at once (20; 2 quick), until all run",
        "ms",
        Target::RatioAtMost(0.5),
    ),
];

/// Pods started at once.
const CONCURRENT: usize = 20;
/// Pods started at once with `--quick`.
const QUICK_CONCURRENT: usize = 2;
/// The namespace the CRI keeps its images and containers in.
const K8S_NAMESPACE: &str = "k8s.io";
/// The container every pod runs.
const COMMAND: [&str; 2] = ["sleep", "3600"];
/// The most one measured step (a pod, or all pods at once, with their teardown) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(180);
/// The most the removal of what a daemon's pods left may take through the CRI.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon may take to report its runtime and network ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the section's measurements into `report`.
pub(crate) fn measure(report: &mut Report, cx: &SectionCx<'_>) -> Result<()> {
    for plugin in CNI_PLUGINS {
        let path = Path::new(CNI_BIN_DIR).join(plugin);
        ensure!(
            path.is_file(),
            "{} not found: install the Debian `containernetworking-plugins` package",
            path.display()
        );
    }
    let pause = build_pause_archive(&cx.scratch.join("pause"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start a tokio runtime")?;
    let cgroup_root = format!("/berth-bench-pods-{}", std::process::id());
    let mut daemons = Vec::new();
    for kind in Kind::BOTH {
        daemons.push(CriDaemon::start(
            kind,
            cx,
            &pause,
            &format!("{cgroup_root}/{kind}"),
            &runtime,
        )?);
    }
    let outcome = runtime.block_on(measure_pods(report, cx, &daemons));
    drop(daemons);
    remove_cgroup_dirs(&cgroup_root);
    outcome
}

/// The timed part: single pods, then pods at once, daemons alternating.
async fn measure_pods(
    report: &mut Report,
    cx: &SectionCx<'_>,
    daemons: &[CriDaemon],
) -> Result<()> {
    let mut clients = Vec::new();
    for d in daemons {
        clients.push(CriClient::connect(d.server.address()).await);
    }
    let mut singles: [Vec<PodTimes>; 2] = Default::default();
    // Round 0 warms both daemons up (page cache, first shim) and is not recorded.
    for round in 0..=cx.runs {
        for (i, d) in daemons.iter().enumerate() {
            let name = format!("single-{round}");
            let times = tokio::time::timeout(STEP_TIMEOUT, one_pod(&mut clients[i], d, &name))
                .await
                .map_err(|_| anyhow::anyhow!("{} pod {name}: over {STEP_TIMEOUT:?}", d.kind))?
                .with_context(|| d.server.log_tail())?;
            if round > 0 {
                singles[i].push(times);
            }
        }
    }
    let summary = |i: usize, f: fn(&PodTimes) -> f64| {
        Summary::of(&singles[i].iter().map(f).collect::<Vec<_>>())
    };
    type Field = fn(&PodTimes) -> f64;
    let fields: [(&'static str, Field); 5] = [
        ("pod_start_ms", |t| t.run_sandbox + t.create + t.start),
        ("pod_run_sandbox_ms", |t| t.run_sandbox),
        ("pod_create_container_ms", |t| t.create),
        ("pod_start_container_ms", |t| t.start),
        ("pod_teardown_ms", |t| t.teardown),
    ];
    for (id, f) in fields {
        report.set(id, summary(0, f), summary(1, f));
    }

    let n = if cx.quick {
        QUICK_CONCURRENT
    } else {
        CONCURRENT
    };
    let mut at_once: [Vec<f64>; 2] = Default::default();
    let mut teardown: [Vec<f64>; 2] = Default::default();
    for round in 0..cx.runs {
        for (i, d) in daemons.iter().enumerate() {
            let tag = format!("many-{round}");
            let (start_ms, down_ms) =
                tokio::time::timeout(STEP_TIMEOUT, pods_at_once(&clients[i], d, &tag, n))
                    .await
                    .map_err(|_| anyhow::anyhow!("{} pods {tag}: over {STEP_TIMEOUT:?}", d.kind))?
                    .with_context(|| d.server.log_tail())?;
            at_once[i].push(start_ms);
            teardown[i].push(down_ms);
        }
    }
    report.set(
        "pods_concurrent_ms",
        Summary::of(&at_once[0]),
        Summary::of(&at_once[1]),
    );
    report.context.insert(
        "pods".into(),
        json!({
            "concurrent_pods": n,
            "container_command": COMMAND,
            "concurrent_teardown_ms": { "berth": teardown[0], "containerd": teardown[1] },
        }),
    );
    Ok(())
}

/// The wall times (ms) of one pod's calls.
#[derive(Debug, Clone, Copy)]
struct PodTimes {
    run_sandbox: f64,
    create: f64,
    start: f64,
    teardown: f64,
}

/// Milliseconds since `t`.
fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Starts one pod with one container, then tears it down, timing each call.
async fn one_pod(cri: &mut CriClient, d: &CriDaemon, name: &str) -> Result<PodTimes> {
    let pod = d.pod_config(name)?;
    let container = d.container();
    let t = Instant::now();
    let pod_id = cri.run_pod(&pod).await.context("RunPodSandbox")?;
    let run_sandbox = ms_since(t);
    let t = Instant::now();
    let created = cri.create_container(&pod_id, &container, &pod).await;
    let create = ms_since(t);
    let t = Instant::now();
    let started = match created {
        Ok(id) => cri.start_container(&id).await.context("StartContainer"),
        Err(e) => Err(anyhow::Error::new(e).context("CreateContainer")),
    };
    let start = ms_since(t);
    let t = Instant::now();
    let stopped = cri.stop_and_remove_pod(&pod_id).await;
    let teardown = ms_since(t);
    started?;
    stopped.context("StopPodSandbox + RemovePodSandbox")?;
    Ok(PodTimes {
        run_sandbox,
        create,
        start,
        teardown,
    })
}

/// Starts `n` pods at once (each RunPodSandbox, CreateContainer, StartContainer on one
/// connection, as the kubelet's), and returns the wall time until the last container runs, then
/// that of removing them all at once.
async fn pods_at_once(cri: &CriClient, d: &CriDaemon, tag: &str, n: usize) -> Result<(f64, f64)> {
    let mut pods = Vec::new();
    for i in 0..n {
        pods.push(d.pod_config(&format!("{tag}-{i}"))?);
    }
    let container = d.container();
    let t = Instant::now();
    let mut set = JoinSet::new();
    for pod in pods {
        let (mut cri, container) = (cri.clone(), container.clone());
        set.spawn(async move {
            let id = cri.run_pod(&pod).await.context("RunPodSandbox")?;
            let started = async {
                let cid = cri
                    .create_container(&id, &container, &pod)
                    .await
                    .context("CreateContainer")?;
                cri.start_container(&cid).await.context("StartContainer")
            };
            started.await.with_context(|| format!("pod {id}"))
        });
    }
    let mut failure = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(anyhow::Error::new(e))),
        }
    }
    let start_ms = ms_since(t);
    let t = Instant::now();
    let removed = remove_all_pods(cri).await;
    let down_ms = ms_since(t);
    if let Some(e) = failure {
        return Err(e);
    }
    removed?;
    Ok((start_ms, down_ms))
}

/// Stops and removes every pod of the daemon, all at once, as the kubelet tears pods down (so
/// that CNI DEL releases addresses and rules).
async fn remove_all_pods(cri: &CriClient) -> Result<()> {
    let pods = cri
        .clone()
        .list_pods(None)
        .await
        .context("ListPodSandbox")?;
    let mut set = JoinSet::new();
    for pod in pods {
        let mut cri = cri.clone();
        set.spawn(async move {
            cri.stop_and_remove_pod(&pod.id)
                .await
                .with_context(|| format!("remove pod {}", pod.id))
        });
    }
    let mut failure = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(anyhow::Error::new(e))),
        }
    }
    failure.map_or(Ok(()), Err)
}

/// The pause image as an OCI layout archive named [`PAUSE_IMAGE`]: the static pause program of
/// the CRI tests, compiled with `cc -static`.
fn build_pause_archive(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let binary = dir.join("pause");
    let out = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&binary)
        .arg(PAUSE_SOURCE)
        .output()
        .context("run cc (Debian gcc and libc6-dev)")?;
    ensure!(
        out.status.success(),
        "cc -static {PAUSE_SOURCE} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = pause_image(&binary);
    let tag = PAUSE_IMAGE.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": berth_wellknown::media_type::OCI_INDEX,
        "manifests": [{
            "mediaType": berth_wellknown::media_type::OCI_MANIFEST,
            "digest": image.manifest_digest,
            "size": image.manifest.len(),
            "annotations": {
                "io.containerd.image.name": PAUSE_IMAGE,
                "org.opencontainers.image.ref.name": tag,
            },
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    });
    let mut blobs = vec![
        (image.manifest_digest.clone(), image.manifest.clone()),
        (image.config_digest.clone(), image.config.clone()),
    ];
    blobs.extend(image.layers.iter().map(|l| (sha256_digest(l), l.clone())));
    let archive = dir.join("pause.tar");
    let file =
        fs::File::create(&archive).with_context(|| format!("create {}", archive.display()))?;
    let mut tar = tar::Builder::new(file);
    let mut add = |path: &str, data: &[u8]| -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, data)
            .with_context(|| format!("write {path} to {}", archive.display()))
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &serde_json::to_vec(&index)?)?;
    for (digest, data) in &blobs {
        let hex = digest.trim_start_matches("sha256:");
        add(&format!("blobs/sha256/{hex}"), data)?;
    }
    tar.into_inner()
        .with_context(|| format!("finish {}", archive.display()))?;
    Ok(archive)
}

/// The CRI section both daemons get (containerd's keys), as the CRI tests write it:
/// `restrict_oom_score_adj` because a host without CAP_SYS_RESOURCE (a container) cannot give
/// the pause process containerd's -998 (runc fails to start it).
fn cri_config(conf_dir: &Path) -> String {
    format!(
        "[{CRI_SECTION}]\n\
         \x20 sandbox_image = \"{PAUSE_IMAGE}\"\n\
         \x20 restrict_oom_score_adj = true\n\
         \x20 stream_server_port = \"0\"\n\
         [{CRI_SECTION}.containerd]\n\
         \x20 snapshotter = \"overlayfs\"\n\
         [{CRI_SECTION}.cni]\n\
         \x20 bin_dir = \"{CNI_BIN_DIR}\"\n\
         \x20 conf_dir = \"{}\"\n",
        conf_dir.display()
    )
}

/// A daemon with its CRI on, its network and where its pods go; dropping it removes everything
/// its pods left.
struct CriDaemon {
    kind: Kind,
    server: Server,
    dir: PathBuf,
    /// The cgroup every pod's `cgroup_parent` is under.
    cgroup_root: String,
    /// The busybox image the containers run.
    image: String,
    /// Dropped after the daemon and its pods: removes the bridge and its rules.
    _network: TestNetwork,
}

impl CriDaemon {
    /// Starts `kind` with the CRI on under `<scratch>/<kind>`, imports the pause and busybox
    /// images into `k8s.io` and waits until the CRI reports its runtime and network ready.
    fn start(
        kind: Kind,
        cx: &SectionCx<'_>,
        pause: &Path,
        cgroup_root: &str,
        runtime: &Runtime,
    ) -> Result<CriDaemon> {
        let dir = cx.scratch.join(kind.name());
        let conf_dir = dir.join("cni");
        let network = TestNetwork::create(&conf_dir, &dir.join("ipam"));
        let server =
            Server::start_with_cri(kind, cx.bins, dir.join("daemon"), &cri_config(&conf_dir))?;
        let daemon = CriDaemon {
            kind,
            server,
            dir,
            cgroup_root: cgroup_root.to_owned(),
            image: cx.image.to_owned(),
            _network: network,
        };
        for archive in [pause, cx.image_archive] {
            daemon.server.ctr_ok(
                K8S_NAMESPACE,
                &["images", "import", &archive.to_string_lossy()],
            )?;
        }
        runtime.block_on(daemon.wait_ready())?;
        Ok(daemon)
    }

    /// Polls the CRI `Status` until RuntimeReady and NetworkReady are both true.
    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut cri = CriClient::connect(self.server.address()).await;
        loop {
            let last = match cri.status(false).await {
                Ok(status) => {
                    let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
                    let ready = ["RuntimeReady", "NetworkReady"]
                        .iter()
                        .all(|t| conditions.iter().any(|c| c.r#type == *t && c.status));
                    if ready {
                        return Ok(());
                    }
                    format!("{conditions:?}")
                }
                Err(e) => format!("{e:?}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{}'s CRI not ready after {READY_TIMEOUT:?}: {last}\n{}",
                    self.kind,
                    self.server.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A pod config named `name` logging under this daemon's directory (created) in a cgroup
    /// under [`CriDaemon::cgroup_root`], as the kubelet's cgroupfs driver names them.
    fn pod_config(&self, name: &str) -> Result<PodSandboxConfig> {
        let mut config = pod_config(name, Path::new("/"), "");
        let uid = config
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default();
        let logs = self.dir.join("logs").join(&uid);
        fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
        config.log_directory = logs.display().to_string();
        if let Some(linux) = config.linux.as_mut() {
            linux.cgroup_parent = format!("{}/pod{uid}", self.cgroup_root);
        }
        Ok(config)
    }

    /// The container every pod runs.
    fn container(&self) -> ContainerConfig {
        container_config("app", &self.image, &COMMAND)
    }

    /// Removes whatever the pods left, each step bounded: the pods through the CRI (CNI DEL,
    /// netns), the daemon, processes in the pods' cgroups and shims of this daemon, mounts under
    /// its directory, the cgroups.
    fn clean_up(&mut self) {
        let address = self.server.address().to_owned();
        if std::os::unix::net::UnixStream::connect(&address).is_ok() {
            let worker = thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    let removal = async {
                        let cri = CriClient::connect(&address).await;
                        remove_all_pods(&cri).await
                    };
                    match tokio::time::timeout(TEARDOWN_TIMEOUT, removal).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => progress(&format!("pods: removing the pods: {e:#}")),
                        Err(_) => progress("pods: removing the pods took too long"),
                    }
                });
            });
            let _ = worker.join();
        }
        if let Err(e) = self.server.stop() {
            progress(&format!("pods: {e:#}"));
        }
        let shim = self.kind.shim();
        kill_until_gone(|| {
            let mut pids = pids_in_cgroups_under(&self.cgroup_root);
            pids.extend(procfs::shim_pids(shim, self.server.address()));
            pids
        });
        unmount_deepest_first(
            mounts_under(&self.dir)
                .into_iter()
                .map(|m| m.mount_point)
                .collect(),
        );
        remove_cgroup_dirs(&self.cgroup_root);
    }
}

impl Drop for CriDaemon {
    fn drop(&mut self) {
        self.clean_up();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_config_is_containerd_toml_with_the_pause_image_and_cni() {
        let text = format!("version = 2\n{}", cri_config(Path::new("/tmp/x/cni")));
        let value: toml::Value = toml::from_str(&text).unwrap();
        let cri = &value["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(cri["sandbox_image"].as_str(), Some(PAUSE_IMAGE));
        assert_eq!(cri["cni"]["conf_dir"].as_str(), Some("/tmp/x/cni"));
        assert_eq!(cri["cni"]["bin_dir"].as_str(), Some(CNI_BIN_DIR));
        assert_eq!(cri["containerd"]["snapshotter"].as_str(), Some("overlayfs"));
    }

    #[test]
    fn every_row_has_a_unique_id() {
        let mut ids: Vec<_> = METRICS.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), METRICS.len());
    }
}
