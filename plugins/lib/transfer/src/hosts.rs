//! Registry host configuration as containerd reads it (`remotes/docker/config/hosts.go`): a
//! `config_path` directory with one `<host>/hosts.toml` per registry (a `host:port` registry
//! may also use `host_port_`), `_default/` for every other registry, giving the endpoints a
//! pull tries in order: each `[host."URL"]` in file order, then `server` (default: the
//! registry itself, `https://registry-1.docker.io` for `docker.io`, plain HTTP for
//! localhost).
//!
//! ```toml
//! server = "https://registry-1.docker.io"
//!
//! [host."http://127.0.0.1:5000"]
//!   capabilities = ["pull", "resolve"]
//!   skip_verify = true
//!   ca = "/etc/certs/ca.pem"        # a path or a list, relative to the host directory
//!   override_path = false
//!   [host."http://127.0.0.1:5000".header]
//!     x-custom = "value"
//! ```
//!
//! A mirror keeps the repository path of the name: `docker.io/library/busybox` is fetched
//! as `library/busybox` from every endpoint.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::TransferError;

/// The registry host of `docker.io` names.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

/// What an endpoint may be used for (containerd's `HostCapabilities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Fetching content by digest.
    pub pull: bool,
    /// Resolving a tag to a digest.
    pub resolve: bool,
    /// Pushing.
    pub push: bool,
}

impl Capabilities {
    /// Every capability (the default of an endpoint that names none).
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities::ALL
    }
}

/// One registry endpoint to try.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RegistryHost {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub host: String,
    /// The API path (`/v2`, or the configured one with `override_path`).
    pub path: String,
    /// What the endpoint is used for.
    pub capabilities: Capabilities,
    /// Accept any certificate (`skip_verify`); `None` when not configured.
    pub skip_verify: Option<bool>,
    /// CA certificate files (`ca`), absolute.
    pub ca: Vec<PathBuf>,
    /// The PEM contents of [`RegistryHost::ca`], read by [`registry_hosts`].
    pub ca_pem: Vec<Vec<u8>>,
    /// Client certificate and key files (`client`); parsed, not used (see docs/CRI.md).
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    /// Extra request headers (`header`); parsed, not sent (see docs/CRI.md).
    pub header: BTreeMap<String, Vec<String>>,
}

impl std::fmt::Debug for RegistryHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryHost")
            .field(
                "url",
                &format!("{}://{}{}", self.scheme, self.host, self.path),
            )
            .field("capabilities", &self.capabilities)
            .field("skip_verify", &self.skip_verify)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl RegistryHost {
    /// The default endpoint of `registry`: `https://registry-1.docker.io/v2` for `docker.io`,
    /// `http://<host>/v2` (certificates not verified) for localhost and loopback addresses,
    /// `https://<host>/v2` otherwise.
    pub fn default_for(registry: &str) -> RegistryHost {
        let (scheme, host, skip_verify) = if registry == "docker.io" {
            ("https", DOCKER_HUB_HOST, None)
        } else if is_localhost(registry) {
            ("http", registry, Some(true))
        } else {
            ("https", registry, None)
        };
        RegistryHost {
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            path: "/v2".to_owned(),
            skip_verify,
            ..RegistryHost::default()
        }
    }

    /// The endpoint's URL (`https://host/v2`).
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.path)
    }

    /// Is the endpoint served at the standard `/v2` path (the only one the registry client
    /// speaks)?
    pub fn standard_path(&self) -> bool {
        self.path == "/v2" || self.path == "/v2/"
    }
}

/// Is `host` (with or without a port) `localhost` or a loopback address (containerd's
/// `docker.IsLocalhost`)?
pub fn is_localhost(host: &str) -> bool {
    let bare = match host.rsplit_once(':') {
        // `[::1]:5000`, `127.0.0.1:5000`, `localhost:5000`.
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    let bare = bare.trim_start_matches('[').trim_end_matches(']');
    bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The directory configuring `registry` under `root`, if any: `<root>/<host>_<port>_` for a
/// `host:port`, then `<root>/<registry>`, then `<root>/_default` (containerd's `hostPaths`).
pub fn host_dir(root: &Path, registry: &str) -> std::io::Result<Option<PathBuf>> {
    let mut candidates = Vec::new();
    if let Some((h, port)) = registry.rsplit_once(':') {
        if !h.is_empty() {
            candidates.push(root.join(format!("{h}_{port}_")));
        }
    }
    candidates.push(root.join(registry));
    candidates.push(root.join("_default"));
    for dir in candidates {
        match std::fs::metadata(&dir) {
            Ok(_) => return Ok(Some(dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The endpoints of `registry` configured under the first of `roots` that has a directory for
/// it (containerd's `config_path` may list several), with their CA files read; the registry's
/// default endpoint when none does. A registry name that cannot be a directory name
/// (`/`, `..`) is never looked up.
pub fn registry_hosts(
    roots: &[PathBuf],
    registry: &str,
) -> Result<Vec<RegistryHost>, TransferError> {
    let io_err = |path: &Path, e: std::io::Error| TransferError::HostsConfig {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let safe =
        !registry.is_empty() && !registry.contains('/') && registry != "." && registry != "..";
    let mut hosts = None;
    if safe {
        for root in roots {
            if let Some(dir) = host_dir(root, registry).map_err(|e| io_err(root, e))? {
                tracing::debug!(dir = %dir.display(), registry, "loading registry host directory");
                hosts = Some(load_host_dir(&dir)?);
                break;
            }
        }
    }
    let mut hosts = hosts.unwrap_or_else(|| vec![HostEntry::default()]);
    // The last entry is the `server`: the registry itself when the file names none.
    let mut out = Vec::with_capacity(hosts.len());
    let last = hosts.len() - 1;
    for (i, entry) in hosts.drain(..).enumerate() {
        let mut host = match entry.url {
            Some(h) => h,
            None if i == last => {
                let mut d = RegistryHost::default_for(registry);
                d.capabilities = entry.host.capabilities;
                if entry.host.skip_verify.is_some() {
                    d.skip_verify = entry.host.skip_verify;
                }
                d.ca = entry.host.ca;
                d.client = entry.host.client;
                d.header = entry.host.header;
                d
            }
            None => continue,
        };
        for file in &host.ca {
            let pem = std::fs::read(file).map_err(|e| io_err(file, e))?;
            host.ca_pem.push(pem);
        }
        out.push(host);
    }
    Ok(out)
}

/// One parsed entry: a URL (none for a file without `server`) and its settings.
#[derive(Debug, Default)]
struct HostEntry {
    url: Option<RegistryHost>,
    host: RegistryHost,
}

/// Loads `<dir>/hosts.toml`; without one, the `*.crt` files of `dir` are CAs of the default
/// endpoint (and `*.cert`/`*.key` its client pairs), as containerd's `loadCertFiles`.
fn load_host_dir(dir: &Path) -> Result<Vec<HostEntry>, TransferError> {
    let file = dir.join("hosts.toml");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(TransferError::HostsConfig {
                path: file.display().to_string(),
                reason: e.to_string(),
            })
        }
    };
    if text.trim().is_empty() {
        return cert_files(dir);
    }
    parse_hosts_file(dir, &text).map_err(|reason| TransferError::HostsConfig {
        path: file.display().to_string(),
        reason,
    })
}

fn cert_files(dir: &Path) -> Result<Vec<HostEntry>, TransferError> {
    let mut entry = HostEntry::default();
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![entry]),
        Err(e) => {
            return Err(TransferError::HostsConfig {
                path: dir.display().to_string(),
                reason: e.to_string(),
            })
        }
    };
    let mut names: Vec<PathBuf> = listing
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.path())
        .collect();
    names.sort();
    for path in names {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => entry.host.ca.push(path),
            Some("cert") => {
                let key = path.with_extension("key");
                let key = key.exists().then_some(key);
                entry.host.client.push((path, key));
            }
            _ => {}
        }
    }
    Ok(vec![entry])
}

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// One `client` entry: a combined cert+key file, or a `[cert, key]` pair.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ClientEntry {
    File(String),
    Pair(Vec<String>),
}

/// `client`: one file or a list of entries.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ClientSetting {
    File(String),
    List(Vec<ClientEntry>),
}

/// The settings of one host (and of the top level, for `server`).
#[derive(Debug, Default, Deserialize)]
struct HostFileConfig {
    #[serde(default)]
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    ca: Option<OneOrMany>,
    #[serde(default)]
    client: Option<ClientSetting>,
    #[serde(default)]
    skip_verify: Option<bool>,
    #[serde(default)]
    header: Option<BTreeMap<String, OneOrMany>>,
    #[serde(default)]
    override_path: bool,
}

/// A whole `hosts.toml`. Unknown keys are ignored, as containerd's decoder does.
#[derive(Debug, Default, Deserialize)]
struct HostsFile {
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    ca: Option<OneOrMany>,
    #[serde(default)]
    client: Option<ClientSetting>,
    #[serde(default)]
    skip_verify: Option<bool>,
    #[serde(default)]
    header: Option<BTreeMap<String, OneOrMany>>,
    #[serde(default)]
    override_path: bool,
    #[serde(default)]
    host: BTreeMap<String, toml::Spanned<HostFileConfig>>,
}

/// Parses a `hosts.toml` whose relative paths are relative to `base`: the `[host."..."]`
/// entries in file order, then the `server` entry (without a URL when there is no `server`).
fn parse_hosts_file(base: &Path, text: &str) -> Result<Vec<HostEntry>, String> {
    let file: HostsFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut hosts: Vec<(usize, String, HostFileConfig)> = file
        .host
        .into_iter()
        .map(|(url, spanned)| (spanned.span().start, url, spanned.into_inner()))
        .collect();
    hosts.sort_by_key(|(pos, _, _)| *pos);
    let mut out = Vec::with_capacity(hosts.len() + 1);
    for (_, url, config) in hosts {
        out.push(parse_host(Some(&url), base, config)?);
    }
    let top = HostFileConfig {
        capabilities: file.capabilities,
        ca: file.ca,
        client: file.client,
        skip_verify: file.skip_verify,
        header: file.header,
        override_path: file.override_path,
    };
    out.push(parse_host(
        file.server.as_deref().filter(|s| !s.is_empty()),
        base,
        top,
    )?);
    Ok(out)
}

/// containerd's `parseHostConfig`.
fn parse_host(
    server: Option<&str>,
    base: &Path,
    config: HostFileConfig,
) -> Result<HostEntry, String> {
    let mut host = RegistryHost::default();
    if let Some(capabilities) = config.capabilities.filter(|c| !c.is_empty()) {
        host.capabilities = Capabilities {
            pull: false,
            resolve: false,
            push: false,
        };
        for c in capabilities {
            match c.to_ascii_lowercase().as_str() {
                "pull" => host.capabilities.pull = true,
                "resolve" => host.capabilities.resolve = true,
                "push" => host.capabilities.push = true,
                other => return Err(format!("unknown capability {other:?}")),
            }
        }
    }
    host.skip_verify = config.skip_verify;
    let abs = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    if let Some(ca) = config.ca {
        host.ca = ca.into_vec().iter().map(|p| abs(p)).collect();
    }
    match config.client {
        None => {}
        Some(ClientSetting::File(f)) => host.client.push((abs(&f), None)),
        Some(ClientSetting::List(entries)) => {
            for entry in entries {
                match entry {
                    ClientEntry::File(f) => host.client.push((abs(&f), None)),
                    ClientEntry::Pair(pair) => match pair.as_slice() {
                        [cert, key] => host.client.push((abs(cert), Some(abs(key)))),
                        _ => return Err(format!("invalid pair {pair:?} for \"client\"")),
                    },
                }
            }
        }
    }
    if let Some(header) = config.header {
        host.header = header.into_iter().map(|(k, v)| (k, v.into_vec())).collect();
    }
    let Some(server) = server else {
        return Ok(HostEntry { url: None, host });
    };
    let with_scheme = if server.starts_with("http") {
        server.to_owned()
    } else {
        format!("https://{server}")
    };
    let (scheme, rest) = with_scheme
        .split_once("://")
        .ok_or_else(|| format!("unable to parse server {server:?}"))?;
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "unable to parse server {server:?}: scheme {scheme:?}"
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], clean_path(&rest[i..])),
        None => (rest, String::new()),
    };
    if authority.is_empty() {
        return Err(format!("unable to parse server {server:?}: no host"));
    }
    let path = if path.is_empty() || path == "/" {
        if config.override_path {
            path
        } else {
            "/v2".to_owned()
        }
    } else if !path.ends_with("/v2") && !config.override_path {
        format!("{path}/v2")
    } else {
        path
    };
    host.scheme = scheme.to_owned();
    host.host = authority.to_owned();
    host.path = path;
    Ok(HostEntry {
        url: Some(host.clone()),
        host,
    })
}

/// `path.Clean` for an absolute URL path: no empty, `.` or trailing segments, `..` resolved.
fn clean_path(path: &str) -> String {
    format!("/{}", crate::types::clean_path(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, host: &str, text: &str) {
        let d = dir.join(host);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("hosts.toml"), text).unwrap();
    }

    #[test]
    fn defaults_follow_containerd() {
        let root = tempfile::tempdir().unwrap();
        let roots = [root.path().to_path_buf()];
        let hub = registry_hosts(&roots, "docker.io").unwrap();
        assert_eq!(hub.len(), 1);
        assert_eq!(hub[0].url(), "https://registry-1.docker.io/v2");
        assert_eq!(hub[0].capabilities, Capabilities::ALL);
        let local = registry_hosts(&roots, "127.0.0.1:5000").unwrap();
        assert_eq!(local[0].url(), "http://127.0.0.1:5000/v2");
        assert_eq!(local[0].skip_verify, Some(true));
        let other = registry_hosts(&[], "registry.k8s.io").unwrap();
        assert_eq!(other[0].url(), "https://registry.k8s.io/v2");
        assert!(is_localhost("localhost:5000"));
        assert!(is_localhost("[::1]:5000"));
        assert!(is_localhost("127.0.0.2"));
        assert!(!is_localhost("registry.k8s.io"));
    }

    #[test]
    fn hosts_come_in_file_order_then_the_server() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("ca.pem"), b"PEM").unwrap();
        write(
            root.path(),
            "docker.io",
            r#"
server = "https://registry-1.docker.io"

[host."http://127.0.0.1:5001"]
  capabilities = ["pull", "resolve"]
  skip_verify = true

[host."https://mirror.example/base"]
  capabilities = ["pull"]
  ca = ["../ca.pem"]
  [host."https://mirror.example/base".header]
    x-a = "1"
    x-b = ["2", "3"]

[host."https://aaa.example"]
  override_path = true
"#,
        );
        let hosts = registry_hosts(&[root.path().to_path_buf()], "docker.io").unwrap();
        let urls: Vec<String> = hosts.iter().map(RegistryHost::url).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:5001/v2",
                "https://mirror.example/base/v2",
                "https://aaa.example",
                "https://registry-1.docker.io/v2"
            ]
        );
        assert_eq!(hosts[0].skip_verify, Some(true));
        assert!(hosts[0].capabilities.resolve && !hosts[0].capabilities.push);
        assert!(hosts[1].capabilities.pull && !hosts[1].capabilities.resolve);
        assert_eq!(hosts[1].ca_pem, vec![b"PEM".to_vec()]);
        assert_eq!(hosts[1].header["x-b"], ["2", "3"]);
        assert!(!hosts[2].standard_path());
        assert_eq!(hosts[3].capabilities, Capabilities::ALL);
    }

    #[test]
    fn host_dirs_port_form_and_default() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "_default", "[host.\"http://127.0.0.1:9\"]\n");
        write(
            root.path(),
            "reg.example_5000_",
            "server = \"http://reg.example:5000\"\n",
        );
        let roots = [root.path().to_path_buf()];
        let h = registry_hosts(&roots, "reg.example:5000").unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].url(), "http://reg.example:5000/v2");
        // Any other registry gets `_default`, then itself.
        let h = registry_hosts(&roots, "registry.k8s.io").unwrap();
        let urls: Vec<String> = h.iter().map(RegistryHost::url).collect();
        assert_eq!(
            urls,
            ["http://127.0.0.1:9/v2", "https://registry.k8s.io/v2"]
        );
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        let root = tempfile::tempdir().unwrap();
        write(
            root.path(),
            "x.example",
            "[host.\"https://m\"]\ncapabilities = [\"fly\"]\n",
        );
        let err = registry_hosts(&[root.path().to_path_buf()], "x.example").unwrap_err();
        assert!(err.to_string().contains("hosts.toml"), "{err}");
        assert!(err.to_string().contains("fly"), "{err}");
    }

    #[test]
    fn a_directory_without_hosts_toml_gives_its_certificates() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("reg.example");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ca.crt"), b"CA").unwrap();
        let h = registry_hosts(&[root.path().to_path_buf()], "reg.example").unwrap();
        assert_eq!(h[0].url(), "https://reg.example/v2");
        assert_eq!(h[0].ca_pem, vec![b"CA".to_vec()]);
    }
}
