//! Version, UpdateRuntimeConfig, Status (containerd `pkg/cri/server/version.go`, `status.go`,
//! `update_runtime_config_linux.go`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use berth_proto::runtime::v1::{
    RuntimeCondition, RuntimeStatus, StatusRequest, StatusResponse, UpdateRuntimeConfigRequest,
    UpdateRuntimeConfigResponse, VersionRequest, VersionResponse,
};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// The version of the kubelet's runtime API (containerd's `kubeAPIVersion`).
pub const KUBE_API_VERSION: &str = "0.1.0";
/// The runtime's name in Version.
pub const RUNTIME_NAME: &str = "berth";
/// The CRI API version served.
pub const RUNTIME_API_VERSION: &str = "v1";
/// The RuntimeReady condition.
pub const RUNTIME_READY: &str = "RuntimeReady";
/// The NetworkReady condition.
pub const NETWORK_READY: &str = "NetworkReady";
/// NetworkReady's reason when no network config loads (containerd's).
pub const NETWORK_NOT_READY_REASON: &str = "NetworkPluginNotReady";
/// The file UpdateRuntimeConfig writes from `conf_template` (containerd's name).
pub const CNI_CONFIG_FILE_NAME: &str = "10-containerd-net.conflist";

/// Version.
#[tracing::instrument(skip_all)]
pub async fn version(_cri: &Cri, _req: VersionRequest) -> Result<VersionResponse> {
    Ok(VersionResponse {
        version: KUBE_API_VERSION.to_owned(),
        runtime_name: RUNTIME_NAME.to_owned(),
        runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
        runtime_api_version: RUNTIME_API_VERSION.to_owned(),
    })
}

/// UpdateRuntimeConfig: the kubelet's pod CIDR. With a `conf_template` and no loadable
/// network config, a conflist is written from the template; otherwise nothing happens.
#[tracing::instrument(skip_all)]
pub async fn update_runtime_config(
    cri: &Cri,
    req: UpdateRuntimeConfigRequest,
) -> Result<UpdateRuntimeConfigResponse> {
    let pod_cidr = req
        .runtime_config
        .and_then(|c| c.network_config)
        .map(|n| n.pod_cidr)
        .unwrap_or_default();
    let template = cri.config.cni.conf_template.clone();
    if pod_cidr.is_empty() {
        return Ok(UpdateRuntimeConfigResponse::default());
    }
    if template.is_empty() {
        tracing::info!(pod_cidr, "no cni config template is configured: waiting for another component to write the network config");
        return Ok(UpdateRuntimeConfigResponse::default());
    }
    let cidrs: Vec<String> = pod_cidr.split(',').map(|c| c.trim().to_owned()).collect();
    for (i, cidr) in cidrs.iter().enumerate() {
        if !valid_cidr(cidr) {
            return Err(CriError::invalid(
                "runtime_config.network_config.pod_cidr",
                format!("entry {i} ({cidr:?}) is not a CIDR"),
            ));
        }
    }
    let cni = crate::cni::for_config(cri, "");
    let conf_dir = cni.conf_dir.clone();
    crate::blocking::blocking(move || {
        if cni.status().is_ok() {
            tracing::info!(
                template,
                "network config present: not generating one from the template"
            );
            return Ok(());
        }
        write_from_template(Path::new(&template), &conf_dir, &cidrs)
    })
    .await?;
    Ok(UpdateRuntimeConfigResponse::default())
}

/// Status: RuntimeReady is always true while berthd serves; NetworkReady says whether a
/// network config loads from the CNI conf dir.
#[tracing::instrument(skip_all)]
pub async fn status(cri: &Cri, req: StatusRequest) -> Result<StatusResponse> {
    let cni = crate::cni::for_config(cri, "");
    let network = crate::blocking::blocking(move || Ok(cni.status())).await?;
    let network_condition = match &network {
        Ok(()) => RuntimeCondition {
            r#type: NETWORK_READY.to_owned(),
            status: true,
            ..RuntimeCondition::default()
        },
        Err(e) => RuntimeCondition {
            r#type: NETWORK_READY.to_owned(),
            status: false,
            reason: NETWORK_NOT_READY_REASON.to_owned(),
            message: format!("Network plugin returns error: {e}"),
        },
    };
    let mut info = HashMap::new();
    if req.verbose {
        let config = serde_json::to_string(&cri.config).unwrap_or_else(|e| e.to_string());
        info.insert("config".to_owned(), config);
        let load = match &network {
            Ok(()) => "OK".to_owned(),
            Err(e) => e.to_string(),
        };
        info.insert("lastCNILoadStatus".to_owned(), load);
    }
    Ok(StatusResponse {
        status: Some(RuntimeStatus {
            conditions: vec![
                RuntimeCondition {
                    r#type: RUNTIME_READY.to_owned(),
                    status: true,
                    ..RuntimeCondition::default()
                },
                network_condition,
            ],
        }),
        info,
    })
}

/// Is `s` an `address/prefix` CIDR?
fn valid_cidr(s: &str) -> bool {
    let Some((addr, prefix)) = s.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

/// The default routes of the address families of `cidrs` (containerd's `getRoutes`).
fn routes(cidrs: &[String]) -> Vec<String> {
    let mut v4 = false;
    let mut v6 = false;
    for c in cidrs {
        if c.contains(':') {
            v6 = true;
        } else {
            v4 = true;
        }
    }
    let mut out = Vec::new();
    if v4 {
        out.push("0.0.0.0/0".to_owned());
    }
    if v6 {
        out.push("::/0".to_owned());
    }
    out
}

/// Renders the template into `<conf_dir>/10-containerd-net.conflist` (atomically).
fn write_from_template(template: &Path, conf_dir: &Path, cidrs: &[String]) -> Result<()> {
    let text = std::fs::read_to_string(template)
        .map_err(|e| CriError::io("read cni conf_template", template, e))?;
    let rendered = render(&text, cidrs, &routes(cidrs)).map_err(|reason| {
        CriError::FailedPrecondition(format!(
            "cni conf_template {}: {reason}",
            template.display()
        ))
    })?;
    std::fs::create_dir_all(conf_dir).map_err(|e| CriError::io("create", conf_dir, e))?;
    let target: PathBuf = conf_dir.join(CNI_CONFIG_FILE_NAME);
    let tmp = conf_dir.join(format!(".{CNI_CONFIG_FILE_NAME}.tmp"));
    std::fs::write(&tmp, rendered).map_err(|e| CriError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &target).map_err(|e| CriError::io("rename", &target, e))?;
    tracing::info!(file = %target.display(), "network config written from the template");
    Ok(())
}

/// Renders the part of Go's text/template that containerd's CNI templates use:
/// `{{.PodCIDR}}`, and `{{range $i, $x := .PodCIDRRanges}}` / `{{range $i, $x := .Routes}}`
/// blocks with `{{$x}}` and `{{if $i}}...{{end}}` inside.
fn render(template: &str, cidrs: &[String], routes: &[String]) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("unclosed {{")?;
        let action = after[..end].trim().trim_matches('-').trim();
        rest = &after[end + 2..];
        if action == ".PodCIDR" {
            out.push_str(cidrs.first().map(String::as_str).unwrap_or(""));
        } else if let Some(spec) = action.strip_prefix("range ") {
            let (vars, list) = spec.split_once(":=").ok_or("range without :=")?;
            let items = match list.trim() {
                ".PodCIDRRanges" => cidrs,
                ".Routes" => routes,
                other => return Err(format!("unknown range list {other}")),
            };
            let mut names = vars.split(',').map(str::trim);
            let (index_var, item_var) = match (names.next(), names.next()) {
                (Some(i), Some(x)) => (i.to_owned(), x.to_owned()),
                (Some(x), None) => (String::new(), x.to_owned()),
                _ => return Err("range without variables".into()),
            };
            let body_end = find_end(rest).ok_or("range without {{end}}")?;
            let body = &rest[..body_end.0];
            rest = &rest[body_end.1..];
            for (i, item) in items.iter().enumerate() {
                out.push_str(&render_body(body, &index_var, &item_var, i, item)?);
            }
        } else {
            return Err(format!("unsupported action {{{{{action}}}}}"));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The body of a range with its variables: `{{$x}}`, `{{$i}}`, `{{if $i}}...{{end}}`.
fn render_body(
    body: &str,
    index_var: &str,
    item_var: &str,
    index: usize,
    item: &str,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("unclosed {{")?;
        let action = after[..end].trim().trim_matches('-').trim();
        rest = &after[end + 2..];
        if action == item_var {
            out.push_str(item);
        } else if !index_var.is_empty() && action == index_var {
            out.push_str(&index.to_string());
        } else if action.strip_prefix("if ").map(str::trim) == Some(index_var) {
            let close = rest.find("{{end}}").ok_or("if without {{end}}")?;
            if index > 0 {
                out.push_str(&rest[..close]);
            }
            rest = &rest[close + "{{end}}".len()..];
        } else {
            return Err(format!("unsupported action {{{{{action}}}}} in range"));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The `{{end}}` closing a range body that begins at the start of `s` (nested `if`s counted):
/// the body's end and where the text after `{{end}}` starts.
fn find_end(s: &str) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    let mut pos = 0usize;
    while let Some(off) = s[pos..].find("{{") {
        let start = pos + off;
        let close = s[start..].find("}}")? + start;
        let action = s[start + 2..close].trim().trim_matches('-').trim();
        if action.starts_with("if ") || action.starts_with("range ") {
            depth += 1;
        } else if action == "end" {
            if depth == 0 {
                return Some((start, close + 2));
            }
            depth -= 1;
        }
        pos = close + 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// containerd's documented bridge template (docs/cri/config.md).
    const TEMPLATE: &str = r#"{"cniVersion":"0.4.0","name":"containerd-net","plugins":[{"type":"bridge","ipam":{"type":"host-local","ranges":[{{range $i, $range := .PodCIDRRanges}}{{if $i}}, {{end}}[{"subnet": "{{$range}}"}]{{end}}],"routes":[{{range $i, $route := .Routes}}{{if $i}}, {{end}}{"dst": "{{$route}}"}{{end}}]}}],"subnet":"{{.PodCIDR}}"}"#;

    #[test]
    fn templates_render_like_go() {
        let cidrs = vec!["10.88.0.0/16".to_owned(), "fd00::/64".to_owned()];
        let text = render(TEMPLATE, &cidrs, &routes(&cidrs)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let ipam = &v["plugins"][0]["ipam"];
        assert_eq!(ipam["ranges"][1][0]["subnet"], "fd00::/64");
        assert_eq!(ipam["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(ipam["routes"][1]["dst"], "::/0");
        assert_eq!(v["subnet"], "10.88.0.0/16");
        assert!(render("{{.Nope}}", &cidrs, &[]).is_err());
    }

    #[test]
    fn cidrs_are_checked() {
        assert!(valid_cidr("10.0.0.0/8"));
        assert!(valid_cidr("fd00::/64"));
        assert!(!valid_cidr("10.0.0.0"));
        assert!(!valid_cidr("10.0.0.0/33"));
    }

    #[test]
    fn the_template_is_written_once_with_the_cidr() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("t.json");
        std::fs::write(&template, "{\"subnet\":\"{{.PodCIDR}}\"}").unwrap();
        let conf = dir.path().join("net.d");
        write_from_template(&template, &conf, &["10.1.0.0/24".to_owned()]).unwrap();
        let text = std::fs::read_to_string(conf.join(CNI_CONFIG_FILE_NAME)).unwrap();
        assert_eq!(text, "{\"subnet\":\"10.1.0.0/24\"}");
    }
}
