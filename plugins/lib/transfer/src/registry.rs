//! Registry connection options and the `oci-client` client built from them.

use std::fmt;
use std::time::Duration;

use berth_wellknown::label;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::error::TransferError;
use crate::hosts::RegistryHost;

/// How long connecting to a registry may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a registry may stay silent in the middle of a response.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// How to reach and authenticate to a registry (ctr's `--user`, `--plain-http`, `--tlscacert`).
#[derive(Clone, Default)]
pub struct RegistryOptions {
    /// `user:password` credentials for HTTP basic auth or a token service; `None` is anonymous.
    pub credentials: Option<(String, String)>,
    /// Speak plain HTTP instead of HTTPS.
    pub plain_http: bool,
    /// PEM certificates trusted besides the system roots (a test or private CA).
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any server certificate (ctr's `--skip-verify`).
    pub skip_verify: bool,
    /// How many blobs move at once (0: 3, as ctr's default `max-concurrent-downloads`).
    pub concurrency: usize,
    /// The endpoints a pull tries in order (see [`crate::hosts`]); empty: the name's own
    /// registry with the flags above.
    pub hosts: Vec<RegistryHost>,
    /// A bearer token sent as is (the CRI's `registry_token`), when there are no credentials.
    pub token: Option<String>,
    /// When set, credentials and token go only to this endpoint host (the CRI's
    /// `server_address`); other endpoints are asked anonymously.
    pub credentials_host: Option<String>,
}

impl fmt::Debug for RegistryOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryOptions")
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .field("plain_http", &self.plain_http)
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("skip_verify", &self.skip_verify)
            .field("concurrency", &self.concurrency)
            .field("hosts", &self.hosts)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("credentials_host", &self.credentials_host)
            .finish()
    }
}

impl RegistryOptions {
    /// Parses ctr's `--user user[:password]` (a missing password is empty).
    pub fn with_user(mut self, user: &str) -> Self {
        let (u, p) = user.split_once(':').unwrap_or((user, ""));
        self.credentials = Some((u.to_owned(), p.to_owned()));
        self
    }

    /// The number of parallel blob transfers.
    pub fn parallelism(&self) -> usize {
        if self.concurrency == 0 {
            3
        } else {
            self.concurrency
        }
    }

    pub(crate) fn auth(&self) -> RegistryAuth {
        match (&self.credentials, &self.token) {
            (Some((u, p)), _) => RegistryAuth::Basic(u.clone(), p.clone()),
            (None, Some(t)) => RegistryAuth::Bearer(t.clone()),
            (None, None) => RegistryAuth::Anonymous,
        }
    }

    /// The credentials for the endpoint `host` (anonymous where `credentials_host` says
    /// another host).
    pub(crate) fn auth_for(&self, host: &str) -> RegistryAuth {
        match &self.credentials_host {
            Some(only) if only != host => RegistryAuth::Anonymous,
            _ => self.auth(),
        }
    }

    /// The endpoints to try for `registry`: [`RegistryOptions::hosts`], or the registry
    /// itself with these options' scheme and TLS flags.
    pub(crate) fn endpoints(&self, registry: &str) -> Vec<RegistryHost> {
        if !self.hosts.is_empty() {
            return self.hosts.clone();
        }
        vec![self.own_endpoint(registry)]
    }

    /// `registry` itself with these options' scheme and TLS flags.
    fn own_endpoint(&self, registry: &str) -> RegistryHost {
        let mut own = RegistryHost::default_for(registry);
        // Without configured hosts the name's registry is asked directly (oci-client maps
        // `docker.io` to its index host itself).
        own.host = registry.to_owned();
        own.scheme = if self.plain_http { "http" } else { "https" }.to_owned();
        own.skip_verify = Some(self.skip_verify);
        own.ca_pem = self.ca_pem.iter().cloned().collect();
        own
    }

    /// A fresh client for `endpoint` (its scheme and TLS settings, these options' timeouts and
    /// parallelism).
    pub(crate) fn client_for(&self, endpoint: &RegistryHost) -> Client {
        let mut config = ClientConfig {
            protocol: if endpoint.scheme == "http" {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: endpoint.skip_verify.unwrap_or(self.skip_verify),
            platform_resolver: None,
            max_concurrent_download: self.parallelism(),
            max_concurrent_upload: self.parallelism(),
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            ..ClientConfig::default()
        };
        for pem in &endpoint.ca_pem {
            config.extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            });
        }
        Client::new(config)
    }

    /// A fresh `oci-client` client (one per transfer, so credentials and tokens never leak
    /// between transfers) for the flags of these options, whatever the registry.
    pub(crate) fn client(&self) -> Client {
        self.client_for(&self.own_endpoint(""))
    }
}

/// A parsed, docker-normalized reference.
#[derive(Debug, Clone)]
pub struct ImageRef {
    /// The `oci-client` form.
    pub reference: Reference,
    /// The full name the image record gets (`docker.io/library/x:latest` for `x`).
    pub name: String,
}

impl ImageRef {
    /// Parses `reference` the way docker normalizes names: `x` is
    /// `docker.io/library/x:latest`, `host:5000/a/b` is `host:5000/a/b:latest`.
    pub fn parse(reference: &str) -> Result<Self, TransferError> {
        let parsed: Reference = reference.parse().map_err(|e: oci_client::ParseError| {
            TransferError::InvalidReference {
                reference: reference.to_owned(),
                reason: e.to_string(),
            }
        })?;
        let parsed = if parsed.tag().is_none() && parsed.digest().is_none() {
            Reference::with_tag(
                parsed.registry().to_owned(),
                parsed.repository().to_owned(),
                "latest".to_owned(),
            )
        } else {
            parsed
        };
        Ok(Self {
            name: parsed.whole(),
            reference: parsed,
        })
    }

    /// The registry host as written (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// The same repository at `digest`.
    pub fn at(&self, digest: &str) -> Reference {
        self.reference.clone_with_digest(digest.to_owned())
    }

    /// The distribution-source label key and value for blobs of this repository
    /// (`containerd.io/distribution.source.<host without port>` = `<repository>`).
    pub fn distribution_source(&self) -> (String, String) {
        let host = self.registry();
        let host = match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        (
            format!("{}.{host}", label::DISTRIBUTION_SOURCE),
            self.reference.repository().to_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_like_docker() {
        assert_eq!(
            ImageRef::parse("busybox").unwrap().name,
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            ImageRef::parse("docker.io/x/y:1").unwrap().name,
            "docker.io/x/y:1"
        );
        let r = ImageRef::parse("127.0.0.1:5000/test/bb").unwrap();
        assert_eq!(r.name, "127.0.0.1:5000/test/bb:latest");
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.reference.repository(), "test/bb");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("localhost:5000/bb@{d}")).unwrap();
        assert_eq!(r.name, format!("localhost:5000/bb@{d}"));
        assert!(ImageRef::parse("library/UPPER").is_err());
        assert!(ImageRef::parse("bad ref").is_err());
    }

    #[test]
    fn distribution_source_drops_the_port() {
        let r = ImageRef::parse("127.0.0.1:5000/test/bb:v1").unwrap();
        assert_eq!(
            r.distribution_source(),
            (
                "containerd.io/distribution.source.127.0.0.1".to_owned(),
                "test/bb".to_owned()
            )
        );
    }

    #[test]
    fn endpoints_default_to_the_registry_and_credentials_follow_the_server() {
        let o = RegistryOptions {
            plain_http: true,
            ..RegistryOptions::default()
        };
        let own = o.endpoints("127.0.0.1:5000");
        assert_eq!(own.len(), 1);
        assert_eq!(own[0].url(), "http://127.0.0.1:5000/v2");
        let mut mirror = RegistryHost::default_for("127.0.0.1:6000");
        mirror.capabilities.push = false;
        let o = RegistryOptions {
            hosts: vec![mirror.clone(), RegistryHost::default_for("docker.io")],
            credentials: Some(("u".into(), "p".into())),
            credentials_host: Some("127.0.0.1:6000".into()),
            ..RegistryOptions::default()
        };
        assert_eq!(o.endpoints("docker.io")[0], mirror);
        assert!(matches!(
            o.auth_for("127.0.0.1:6000"),
            RegistryAuth::Basic(..)
        ));
        assert!(matches!(
            o.auth_for("registry-1.docker.io"),
            RegistryAuth::Anonymous
        ));
        let token = RegistryOptions {
            token: Some("t".into()),
            ..RegistryOptions::default()
        };
        assert!(matches!(token.auth_for("any"), RegistryAuth::Bearer(_)));
    }

    #[test]
    fn user_flag_splits_at_the_first_colon() {
        let o = RegistryOptions::default().with_user("u:p:q");
        assert_eq!(o.credentials, Some(("u".into(), "p:q".into())));
        assert!(!format!("{o:?}").contains("p:q"));
    }
}
