//! `[plugins."io.containerd.grpc.v1.cri"]`: the CRI plugin's config section, with containerd
//! 1.6's keys (`pkg/cri/config/config.go`). Keys Berth reads are documented on their field;
//! keys containerd has that Berth accepts but does not act on are listed in docs/CRI.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The runtime name the kubelet gets when a pod names no runtime handler.
pub const DEFAULT_RUNTIME_NAME: &str = "runc";

/// The CRI plugin's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriConfig {
    /// The image of every pod's pause (sandbox) container.
    pub sandbox_image: String,
    /// Address the streaming server (exec, attach, port-forward) listens on.
    pub stream_server_address: String,
    /// Its port; "0" picks a free one.
    pub stream_server_port: String,
    /// How long a streaming connection may stay idle (Go duration).
    pub stream_idle_timeout: String,
    /// Serve the streaming server over TLS.
    pub enable_tls_streaming: bool,
    /// The certificate and key for TLS streaming.
    pub x509_key_pair_streaming: X509KeyPair,
    /// Longest CRI log line before it is split into partial lines, in bytes (-1: no limit).
    pub max_container_log_line_size: i64,
    /// Never give a container an `oom_score_adj` lower than berthd's own (containerd's
    /// `restrict_oom_score_adj`, for hosts without CAP_SYS_RESOURCE).
    pub restrict_oom_score_adj: bool,
    /// Ignore the request's masked and read-only paths and keep the default spec's (for
    /// kubelets before Kubernetes 1.12, as containerd).
    pub disable_proc_mount: bool,
    /// Ignore `Volumes` of image configs.
    pub ignore_image_defined_volumes: bool,
    /// Accepted for containerd compatibility (no SELinux here).
    pub enable_selinux: bool,
    /// Accepted for containerd compatibility.
    pub selinux_category_range: i64,
    /// Accepted for containerd compatibility (no AppArmor here).
    pub disable_apparmor: bool,
    /// Accepted for containerd compatibility.
    pub disable_cgroup: bool,
    /// Accepted for containerd compatibility.
    pub tolerate_missing_hugetlb_controller: bool,
    /// Accepted for containerd compatibility.
    pub disable_hugetlb_controller: bool,
    /// Device nodes of a container belong to its run-as user and group (not 0) instead of
    /// the host node's owner.
    pub device_ownership_from_security_context: bool,
    /// Pin network namespaces under berthd's state dir (Berth always does).
    pub netns_mounts_under_state_dir: bool,
    /// Set `net.ipv4.ip_unprivileged_port_start=0` in pods with their own network.
    pub enable_unprivileged_ports: bool,
    /// Set `net.ipv4.ping_group_range=0 2147483647` in pods with their own network.
    pub enable_unprivileged_icmp: bool,
    /// Blobs fetched at once per pull.
    pub max_concurrent_downloads: usize,
    /// Seconds between stats collections (accepted; Berth reads stats on demand).
    pub stats_collect_period: u64,
    /// Accepted for containerd compatibility (the runtime's options say it).
    pub systemd_cgroup: bool,
    /// `[...cni]`.
    pub cni: CniConfig,
    /// `[...containerd]`.
    pub containerd: ContainerdConfig,
    /// `[...registry]`.
    pub registry: RegistryConfig,
    /// `[...image_decryption]` (accepted, not acted on).
    pub image_decryption: ImageDecryption,
}

impl Default for CriConfig {
    fn default() -> Self {
        CriConfig {
            sandbox_image: "registry.k8s.io/pause:3.6".to_owned(),
            stream_server_address: "127.0.0.1".to_owned(),
            stream_server_port: "0".to_owned(),
            stream_idle_timeout: "4h0m0s".to_owned(),
            enable_tls_streaming: false,
            x509_key_pair_streaming: X509KeyPair::default(),
            max_container_log_line_size: 16 * 1024,
            restrict_oom_score_adj: false,
            disable_proc_mount: false,
            ignore_image_defined_volumes: false,
            enable_selinux: false,
            selinux_category_range: 1024,
            disable_apparmor: false,
            disable_cgroup: false,
            tolerate_missing_hugetlb_controller: true,
            disable_hugetlb_controller: true,
            device_ownership_from_security_context: false,
            netns_mounts_under_state_dir: false,
            enable_unprivileged_ports: false,
            enable_unprivileged_icmp: false,
            max_concurrent_downloads: 3,
            stats_collect_period: 10,
            systemd_cgroup: false,
            cni: CniConfig::default(),
            containerd: ContainerdConfig::default(),
            registry: RegistryConfig::default(),
            image_decryption: ImageDecryption::default(),
        }
    }
}

/// `[...x509_key_pair_streaming]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct X509KeyPair {
    /// PEM certificate.
    pub tls_cert_file: String,
    /// PEM key.
    pub tls_key_file: String,
}

/// `[...cni]`: where CNI plugins and network configs are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CniConfig {
    /// Directory of the CNI plugin binaries. containerd's default is `/opt/cni/bin`; Berth's
    /// is where Debian's `containernetworking-plugins` installs them.
    pub bin_dir: String,
    /// Directory of the network configs (`.conflist`, `.conf`, `.json`), read in name order.
    pub conf_dir: String,
    /// How many configs are used, in name order (containerd's default 1).
    pub max_conf_num: usize,
    /// A template for a config written from `UpdateRuntimeConfig`'s pod CIDR (empty: none).
    pub conf_template: String,
    /// Which address family's IP is the pod IP: "" or "ipv4", "ipv6", "cni".
    pub ip_pref: String,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            bin_dir: "/usr/lib/cni".to_owned(),
            conf_dir: "/etc/cni/net.d".to_owned(),
            max_conf_num: 1,
            conf_template: String::new(),
            ip_pref: String::new(),
        }
    }
}

/// `[...containerd]`: snapshotter and runtimes of CRI containers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerdConfig {
    /// The snapshotter images are unpacked into and containers run on.
    pub snapshotter: String,
    /// The runtime handler used when a pod names none.
    pub default_runtime_name: String,
    /// Accepted for containerd compatibility.
    pub no_pivot: bool,
    /// Accepted for containerd compatibility.
    pub disable_snapshot_annotations: bool,
    /// Accepted for containerd compatibility.
    pub discard_unpacked_layers: bool,
    /// Runtime handlers by name.
    pub runtimes: BTreeMap<String, RuntimeHandler>,
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        ContainerdConfig {
            snapshotter: "overlayfs".to_owned(),
            default_runtime_name: DEFAULT_RUNTIME_NAME.to_owned(),
            no_pivot: false,
            disable_snapshot_annotations: true,
            discard_unpacked_layers: false,
            runtimes: BTreeMap::from([(
                DEFAULT_RUNTIME_NAME.to_owned(),
                RuntimeHandler::default(),
            )]),
        }
    }
}

/// `[...containerd.runtimes.<name>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeHandler {
    /// The runtime v2 name (`io.containerd.runc.v2`).
    pub runtime_type: String,
    /// Accepted for containerd compatibility.
    pub runtime_engine: String,
    /// Accepted for containerd compatibility.
    pub runtime_root: String,
    /// Pod annotations passed into the OCI spec (prefix match, `*` for all).
    pub pod_annotations: Vec<String>,
    /// Container annotations passed into the OCI spec.
    pub container_annotations: Vec<String>,
    /// Privileged containers of this runtime do not get the host's devices.
    pub privileged_without_host_devices: bool,
    /// A JSON OCI spec used as the base of every container's spec (empty: Berth's default).
    pub base_runtime_spec: String,
    /// Per-runtime CNI conf dir (empty: the plugin's).
    pub cni_conf_dir: String,
    /// Per-runtime CNI max conf num (0: the plugin's).
    pub cni_max_conf_num: usize,
    /// The runtime's options (`containerd.runc.v1.Options` for runc: `BinaryName`,
    /// `SystemdCgroup`, ...), as TOML.
    pub options: Option<toml::Table>,
}

impl Default for RuntimeHandler {
    fn default() -> Self {
        RuntimeHandler {
            runtime_type: berth_runtime::config::RUNC_V2.to_owned(),
            runtime_engine: String::new(),
            runtime_root: String::new(),
            pod_annotations: Vec::new(),
            container_annotations: Vec::new(),
            privileged_without_host_devices: false,
            base_runtime_spec: String::new(),
            cni_conf_dir: String::new(),
            cni_max_conf_num: 0,
            options: None,
        }
    }
}

/// `[...registry]`: how images are resolved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// A directory of `<host>/hosts.toml` files (containerd's `config_path`).
    pub config_path: String,
    /// Deprecated in containerd in favour of `config_path`; accepted, not acted on.
    pub mirrors: BTreeMap<String, toml::Table>,
    /// Deprecated in containerd in favour of `config_path`; accepted, not acted on.
    pub configs: BTreeMap<String, toml::Table>,
    /// Extra HTTP headers on registry requests (accepted, not acted on).
    pub headers: BTreeMap<String, Vec<String>>,
}

/// `[...image_decryption]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageDecryption {
    /// Accepted for containerd compatibility.
    pub key_model: String,
}

impl CriConfig {
    /// The handler for a pod's `runtime_handler` (empty: the default one); `None` if not
    /// configured.
    pub fn runtime(&self, handler: &str) -> Option<&RuntimeHandler> {
        let name = if handler.is_empty() {
            &self.containerd.default_runtime_name
        } else {
            handler
        };
        self.containerd.runtimes.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_style_section_parses() {
        let text = r#"
sandbox_image = "registry.k8s.io/pause:3.8"
restrict_oom_score_adj = true
[cni]
bin_dir = "/usr/lib/cni"
conf_dir = "/tmp/net.d"
max_conf_num = 1
[containerd]
snapshotter = "native"
default_runtime_name = "runc"
[containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"
[containerd.runtimes.runc.options]
SystemdCgroup = false
[registry]
config_path = "/etc/containerd/certs.d"
"#;
        let c: CriConfig = toml::from_str(text).unwrap();
        assert_eq!(c.sandbox_image, "registry.k8s.io/pause:3.8");
        assert!(c.restrict_oom_score_adj);
        assert_eq!(c.cni.conf_dir, "/tmp/net.d");
        assert_eq!(c.containerd.snapshotter, "native");
        assert_eq!(c.registry.config_path, "/etc/containerd/certs.d");
        assert_eq!(
            c.runtime("").map(|r| r.runtime_type.as_str()),
            Some("io.containerd.runc.v2")
        );
        assert!(c.runtime("kata").is_none());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<CriConfig>("sandbox_imag = \"x\"").is_err());
    }
}
