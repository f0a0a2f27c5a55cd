//! PullImage: a daemon-side pull through the transfer library into the CRI snapshotter, with
//! the request's registry credentials and the registry hosts of `config_path`, then the image
//! records containerd's CRI makes (containerd `pkg/cri/server/image_pull.go`): the pulled name,
//! the image id (`sha256:<config digest>`), the repo tag and the repo digest, each labelled
//! `io.cri-containerd.image=managed`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use berth_proto::runtime::v1::{AuthConfig, PullImageRequest, PullImageResponse};
use berth_transfer::hosts::{self, RegistryHost};
use berth_transfer::{
    Cx, Descriptor, Image, ImageStore as _, PullOptions, RegistryOptions, TransferError,
};

use super::lookup::local_image;
use super::reference::Named;
use crate::blocking::blocking;
use crate::error::{CriError, Result};
use crate::service::{Cri, K8S_NAMESPACE};

/// The label marking image records the CRI manages (containerd's `imageLabelKey`).
pub const IMAGE_LABEL_KEY: &str = "io.cri-containerd.image";
/// Its value.
pub const IMAGE_LABEL_VALUE: &str = "managed";

/// PullImage.
#[tracing::instrument(skip_all, fields(image = req.image.as_ref().map(|i| i.image.as_str())))]
pub async fn pull_image(cri: &Cri, req: PullImageRequest) -> Result<PullImageResponse> {
    let reference = req.image.map(|i| i.image).unwrap_or_default();
    let image_ref = pull_reference(cri, &reference, "image.image", req.auth.as_ref()).await?;
    Ok(PullImageResponse { image_ref })
}

/// Pulls `reference` (a malformed one is InvalidArgument naming `field`) with `auth`, makes
/// the CRI's image records and returns the image id.
pub(crate) async fn pull_reference(
    cri: &Cri,
    reference: &str,
    field: &str,
    auth: Option<&AuthConfig>,
) -> Result<String> {
    let named = Named::parse(reference, field)?;
    let name = named.full();
    let credentials = Credentials::from_auth(auth)?;
    let endpoints = endpoints(cri, named.registry()).await?;
    let opts = PullOptions {
        registry: RegistryOptions {
            concurrency: cri.config.max_concurrent_downloads,
            hosts: endpoints,
            credentials: credentials.basic,
            token: credentials.token,
            credentials_host: credentials.server,
            ..RegistryOptions::default()
        },
        platform: None,
        all_platforms: false,
        unpack: true,
        labels: managed_labels(),
        ..PullOptions::default()
    };
    let stores = cri.transfer.stores(K8S_NAMESPACE);
    let pulled = berth_transfer::pull(&name, &opts, &stores)
        .await
        .map_err(|source| CriError::Transfer {
            op: format!("failed to pull and unpack image {name:?}"),
            source,
        })?;
    let image = local_image(cri, &pulled.name).await?;
    let mut names = vec![image.id.clone()];
    names.extend(named.repo_tag());
    names.push(named.repo_digest(&pulled.target.digest));
    for n in names {
        create_reference(cri, &n, &pulled.target).await?;
    }
    tracing::debug!(reference, id = %image.id, "pulled");
    Ok(image.id)
}

/// The records' labels.
fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(IMAGE_LABEL_KEY.to_owned(), IMAGE_LABEL_VALUE.to_owned())])
}

/// Creates the record `name` → `target`, or points an existing one there and marks it managed
/// (containerd's `createImageReference`).
async fn create_reference(cri: &Cri, name: &str, target: &Descriptor) -> Result<()> {
    let cx = Cx::new(K8S_NAMESPACE);
    let images = &cri.transfer.images;
    let record = Image {
        name: name.to_owned(),
        target: target.clone(),
        labels: managed_labels(),
    };
    let store_err = |op: &'static str| {
        move |e| CriError::Transfer {
            op: format!("failed to create image reference {name:?}"),
            source: TransferError::store(op, name, e),
        }
    };
    match images.create(&cx, &record).await {
        Ok(_) => return Ok(()),
        Err(e) if e.is_already_exists() => {}
        Err(e) => return Err(store_err("create image")(e)),
    }
    let old = images
        .get(&cx, name)
        .await
        .map_err(store_err("get image"))?;
    if old.as_ref().is_some_and(|o| {
        o.target.digest == target.digest
            && o.labels.get(IMAGE_LABEL_KEY).map(String::as_str) == Some(IMAGE_LABEL_VALUE)
    }) {
        return Ok(());
    }
    let paths = ["target".to_owned(), format!("labels.{IMAGE_LABEL_KEY}")];
    images
        .update(&cx, &record, &paths)
        .await
        .map_err(store_err("update image"))?;
    Ok(())
}

/// The endpoints to try for `registry`, from `[registry] config_path` (containerd's
/// `config_path`: a list of directories, `:`-separated) or the registry's defaults.
pub(crate) async fn endpoints(cri: &Cri, registry: &str) -> Result<Vec<RegistryHost>> {
    let roots: Vec<PathBuf> = std::env::split_paths(&cri.config.registry.config_path)
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    let host = registry.to_owned();
    let op = format!("registry hosts of {registry:?} (registry.config_path)");
    blocking(move || {
        hosts::registry_hosts(&roots, &host).map_err(|source| CriError::Transfer { op, source })
    })
    .await
}

/// The credentials of a PullImage request (containerd's `ParseAuth`).
#[derive(Default)]
struct Credentials {
    basic: Option<(String, String)>,
    token: Option<String>,
    /// `server_address`'s host: credentials go only there.
    server: Option<String>,
}

impl Credentials {
    fn from_auth(auth: Option<&AuthConfig>) -> Result<Credentials> {
        let Some(auth) = auth else {
            return Ok(Credentials::default());
        };
        let server = if auth.server_address.is_empty() {
            None
        } else {
            Some(server_host(&auth.server_address))
        };
        let mut c = Credentials {
            server,
            ..Credentials::default()
        };
        if !auth.username.is_empty() {
            c.basic = Some((auth.username.clone(), auth.password.clone()));
        } else if !auth.identity_token.is_empty() {
            // An OAuth refresh token: sent as the password of an empty user, which registries
            // with basic auth or a token service that accepts it take.
            c.basic = Some((String::new(), auth.identity_token.clone()));
        } else if !auth.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.auth.trim())
                .map_err(|e| CriError::invalid("auth.auth", format!("not base64: {e}")))?;
            let text = String::from_utf8_lossy(&decoded);
            let (user, pass) = text.split_once(':').ok_or_else(|| {
                CriError::invalid("auth.auth", "the decoded value is not user:password")
            })?;
            c.basic = Some((user.to_owned(), pass.trim_matches('\0').to_owned()));
        } else if !auth.registry_token.is_empty() {
            c.token = Some(auth.registry_token.clone());
        }
        Ok(c)
    }
}

/// The host of a `server_address` (`https://host:port/path` or `host:port`).
fn server_host(address: &str) -> String {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_configs_parse_like_containerd() {
        let auth = AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("u:p:q"),
            ..AuthConfig::default()
        };
        let c = Credentials::from_auth(Some(&auth)).unwrap();
        assert_eq!(c.basic, Some(("u".into(), "p:q".into())));
        let auth = AuthConfig {
            username: "a".into(),
            password: "b".into(),
            server_address: "https://127.0.0.1:5000/v2/".into(),
            ..AuthConfig::default()
        };
        let c = Credentials::from_auth(Some(&auth)).unwrap();
        assert_eq!(c.basic, Some(("a".into(), "b".into())));
        assert_eq!(c.server.as_deref(), Some("127.0.0.1:5000"));
        let bad = AuthConfig {
            auth: "!!".into(),
            ..AuthConfig::default()
        };
        let err = Credentials::from_auth(Some(&bad)).err().unwrap();
        assert!(err.to_string().contains("auth.auth"));
        assert!(Credentials::from_auth(None).unwrap().basic.is_none());
    }
}
