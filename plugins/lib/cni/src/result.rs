//! A plugin's result (CNI spec "Result"): `interfaces` and `ips` in 0.3.x/0.4.0/1.0.0, or
//! `ip4`/`ip6` in 0.1.0/0.2.0; and its error document (`code`, `msg`, `details`).

use std::net::IpAddr;

use serde_json::Value;

/// One address a result assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// The address without its prefix length.
    pub address: IpAddr,
    /// The interface it is on (an index into `interfaces`), when the result says.
    pub interface: Option<usize>,
}

/// The addresses of `result` on interface `ifname` inside the pod (go-cni's per-interface
/// `IPConfigs`); an address naming no interface counts too.
pub fn pod_ips(result: &Value, ifname: &str) -> Vec<IpAddr> {
    let interfaces: Vec<(String, bool)> = result
        .get("interfaces")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    let name = i.get("name").and_then(Value::as_str).unwrap_or_default();
                    let in_pod = i
                        .get("sandbox")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty());
                    (name.to_owned(), in_pod)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for ip in all_ips(result) {
        let on_ifname = match ip.interface {
            None => true,
            Some(idx) => interfaces
                .get(idx)
                .is_some_and(|(name, in_pod)| *in_pod && name == ifname),
        };
        if on_ifname && !out.contains(&ip.address) {
            out.push(ip.address);
        }
    }
    out
}

/// Every address in `result`.
pub fn all_ips(result: &Value) -> Vec<IpConfig> {
    let mut out = Vec::new();
    if let Some(ips) = result.get("ips").and_then(Value::as_array) {
        for ip in ips {
            let Some(address) = ip
                .get("address")
                .and_then(Value::as_str)
                .and_then(parse_cidr)
            else {
                continue;
            };
            let interface = ip
                .get("interface")
                .and_then(Value::as_u64)
                .and_then(|i| usize::try_from(i).ok());
            out.push(IpConfig { address, interface });
        }
    }
    // 0.1.0 and 0.2.0.
    for key in ["ip4", "ip6"] {
        if let Some(address) = result
            .get(key)
            .and_then(|v| v.get("ip"))
            .and_then(Value::as_str)
            .and_then(parse_cidr)
        {
            out.push(IpConfig {
                address,
                interface: None,
            });
        }
    }
    out
}

fn parse_cidr(s: &str) -> Option<IpAddr> {
    s.split('/').next()?.parse().ok()
}

/// The message of a plugin's error document on stdout (`msg` and `details`, with `code`), or
/// `None` if stdout holds none.
pub fn error_message(stdout: &[u8]) -> Option<String> {
    let doc: Value = serde_json::from_slice(stdout).ok()?;
    let msg = doc.get("msg").and_then(Value::as_str)?;
    let code = doc.get("code").and_then(Value::as_u64).unwrap_or(0);
    let mut text = msg.to_owned();
    if let Some(details) = doc
        .get("details")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
    {
        text.push_str("; ");
        text.push_str(details);
    }
    Some(format!("{text} (code {code})"))
}

/// Orders pod IPs by `ip_pref` (containerd `selectPodIPs`): "" or "ipv4" puts the first IPv4
/// first, "ipv6" the first IPv6, "cni" keeps the plugin's order. Returns the pod IP and the
/// others.
pub fn select_pod_ips(ips: &[IpAddr], ip_pref: &str) -> (String, Vec<String>) {
    let want_v6 = match ip_pref {
        "cni" => {
            let mut all = ips.iter().map(IpAddr::to_string);
            let first = all.next().unwrap_or_default();
            return (first, all.collect());
        }
        "ipv6" => true,
        _ => false,
    };
    let primary = ips
        .iter()
        .position(|ip| ip.is_ipv6() == want_v6)
        .or(if ips.is_empty() { None } else { Some(0) });
    match primary {
        None => (String::new(), Vec::new()),
        Some(p) => {
            let others = ips
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != p)
                .map(|(_, ip)| ip.to_string())
                .collect();
            (ips[p].to_string(), others)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ips_are_those_of_the_pod_interface() {
        let result = serde_json::json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa"},
                {"name": "veth1", "mac": "bb"},
                {"name": "eth0", "mac": "cc", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"address": "10.88.0.1/16", "interface": 0},
                {"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2},
                {"address": "fd00::5/64", "interface": 2}
            ]
        });
        let ips = pod_ips(&result, "eth0");
        assert_eq!(ips.len(), 2);
        assert_eq!(
            select_pod_ips(&ips, ""),
            ("10.88.0.5".to_owned(), vec!["fd00::5".to_owned()])
        );
        assert_eq!(
            select_pod_ips(&ips, "ipv6"),
            ("fd00::5".to_owned(), vec!["10.88.0.5".to_owned()])
        );
    }

    #[test]
    fn old_results_have_ip4() {
        let result = serde_json::json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.2/24"}});
        assert_eq!(
            pod_ips(&result, "eth0"),
            vec!["10.1.0.2".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn error_documents_are_read() {
        let doc = br#"{"cniVersion":"1.0.0","code":7,"msg":"bad","details":"very"}"#;
        assert_eq!(error_message(doc).unwrap(), "bad; very (code 7)");
        assert!(error_message(b"garbage").is_none());
    }
}
