//! CNI for pods: the implementation is `berth-cni` (shared with `berth run`); this module
//! builds it from the CRI config and gives it containerd's `CNI_ARGS` for a pod.

use std::path::PathBuf;

pub use berth_cni::{config, load_networks, result, Cni, NetworkList, PortMapping, DEFAULT_IFNAME};

/// What a pod's network is set up for.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    /// The sandbox id (`CNI_CONTAINERID`).
    pub id: String,
    /// The pinned netns (`CNI_NETNS`).
    pub netns: PathBuf,
    /// The pod's Kubernetes namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's uid.
    pub uid: String,
    /// Host ports.
    pub port_mappings: Vec<PortMapping>,
}

impl PodNetwork {
    /// The CNI target: containerd's `CNI_ARGS` for the pod (`toCNILabels`).
    pub fn target(&self) -> berth_cni::Target {
        berth_cni::Target {
            id: self.id.clone(),
            netns: self.netns.clone(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAMESPACE".into(), self.namespace.clone()),
                ("K8S_POD_NAME".into(), self.name.clone()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), self.id.clone()),
                ("K8S_POD_UID".into(), self.uid.clone()),
            ],
            port_mappings: self.port_mappings.clone(),
        }
    }
}

/// Makes `[cni]` in the CRI config (and a runtime handler's own conf dir and count, when set) a
/// [`Cni`] whose records are under the CRI state dir.
pub fn for_config(cri: &crate::service::Cri, runtime_handler: &str) -> Cni {
    let config = &cri.config.cni;
    let handler = cri.config.runtime(runtime_handler);
    let conf_dir = handler
        .map(|h| h.cni_conf_dir.as_str())
        .filter(|d| !d.is_empty())
        .unwrap_or(&config.conf_dir);
    let max = handler
        .map(|h| h.cni_max_conf_num)
        .filter(|n| *n > 0)
        .unwrap_or(config.max_conf_num);
    Cni {
        bin_dir: PathBuf::from(&config.bin_dir),
        conf_dir: PathBuf::from(conf_dir),
        max_conf_num: max,
        cache_dir: cri.state.join("cni"),
    }
}
