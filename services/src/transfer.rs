//! `containerd.services.transfer.v1.Transfer` (containerd 1.7 `services/transfer` over
//! `pkg/transfer/local`): moves an image between two endpoints given as `Any` messages of
//! `containerd.types.transfer`. Served here:
//!
//! - `OCIRegistry` → `ImageStore`: a pull through the transfer library CRI's PullImage uses,
//!   into the daemon's own stores, unpacked into the snapshotter of the store's first
//!   `unpacks` entry (its empty snapshotter is the default, `overlayfs`); the record is named
//!   `ImageStore.name` (the reference when empty) with its labels, plus its plain
//!   `extra_references`.
//! - `ImageStore` → `OCIRegistry`: a push of the image named `ImageStore.name`.
//!
//! Registry endpoints come from the containerd `hosts.toml` directory of the resolver's
//! `host_dir` (else this plugin's `config_path`), the resolver's `default_scheme` applying
//! where no directory configures the registry. With an `auth_stream`, the credentials of the
//! registry are asked on that Streaming stream (`AuthRequest{host, reference}` out,
//! `AuthResponse` back) as containerd's credential callback does; with a `progress_stream`,
//! `Progress` events go out on that stream (containerd's event names: `waiting`,
//! `downloading`/`uploading`, `complete`, `already exists`, `saved`, ...), and the stream is
//! closed when the transfer ends.
//!
//! - `ImageImportStream` → `ImageStore`: an OCI layout tar streamed by the client (module
//!   [`import`]), its images unpacked for each `unpacks` entry (nerdctl's `load` and
//!   containerd 2's `ctr images import` ask for one).
//! - `ImageStore` → `ImageExportStream`: an OCI layout tar of the image streamed to the
//!   client (module [`export`]).
//!
//! A type URL this service does not know is InvalidArgument naming it; a known pair it does
//! not serve (say `ImageImportStream` → `ImageExportStream`) is Unimplemented, as containerd
//! answers; registry refusal of the credentials is Unauthenticated with the registry's words.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_core::layer_content::layer_differ;
use berth_core::metadata::plugin::{content_view, snapshot_view};
use berth_core::namespaced_content::NamespacedContent;
use berth_core::namespaced_snapshots::NamespacedSnapshots;
use berth_core::transfer_local::LocalStores;
use berth_core::MetadataStore;
use berth_proto::containerd::services::transfer::v1::transfer_server::{
    Transfer, TransferServer, SERVICE_NAME,
};
use berth_proto::containerd::services::transfer::v1::TransferRequest;
use berth_proto::containerd::types::transfer::{
    AuthRequest, AuthResponse, AuthType, ImageExportStream, ImageImportStream,
    ImageStore as ApiImageStore, OciRegistry, Progress as ApiProgress, RegistryResolver,
    UnpackConfiguration,
};
use berth_proto::containerd::types::{Descriptor as ApiDescriptor, Platform as ApiPlatform};
use berth_registry::{types, Classify, ErrorKind, PluginError, Registration};
use berth_transfer::grpc::to_proto_descriptor;
use berth_transfer::hosts::{self, RegistryHost};
use berth_transfer::types::ingest_ref;
use berth_transfer::{
    Cx, Descriptor, Image, ImageRef, Platform, Progress, PullOptions, PushOptions, RegistryOptions,
    StoreError, Stores, TransferError,
};
use prost::Message as _;
use prost_types::Any;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

mod export;
mod import;

use crate::grpc::{GrpcService, MessageLimits};
use crate::namespace;
use crate::status::{bounded, to_status};
use crate::streaming::{
    type_name, ManagedStream, StreamError, StreamManager, MANAGER_ID, STREAMING_PLUGIN,
};

/// Type URL (typeurl's name: the message's full name) of `OCIRegistry`.
pub const OCI_REGISTRY_TYPE: &str = "containerd.types.transfer.OCIRegistry";
/// Type URL of `ImageStore`.
pub const IMAGE_STORE_TYPE: &str = "containerd.types.transfer.ImageStore";
/// Type URL of `ImageImportStream`.
pub const IMAGE_IMPORT_TYPE: &str = "containerd.types.transfer.ImageImportStream";
/// Type URL of `ImageExportStream`.
pub const IMAGE_EXPORT_TYPE: &str = "containerd.types.transfer.ImageExportStream";
/// Type URL of `Progress`.
pub const PROGRESS_TYPE: &str = "containerd.types.transfer.Progress";
/// Type URL of `AuthRequest`.
pub const AUTH_REQUEST_TYPE: &str = "containerd.types.transfer.AuthRequest";
/// Type URL of `AuthResponse`.
pub const AUTH_RESPONSE_TYPE: &str = "containerd.types.transfer.AuthResponse";

/// The snapshotter an unpack entry without one uses (containerd's default snapshotter).
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

/// How long the client may take to answer a credential request.
const AUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// The least time between two `downloading`/`uploading` events of one blob.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// The transfer plugin's config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directories (`:`-separated) of `<host>/hosts.toml` files used when a request's
    /// resolver names no `host_dir` (containerd's transfer `config_path`).
    pub config_path: String,
}

/// Why a Transfer call failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferServiceError {
    /// A required field is missing or empty.
    #[error("{0} is required")]
    Missing(&'static str),
    /// The source or destination has a type this service does not know.
    #[error("unsupported {field} type {type_url:?} (supported: {OCI_REGISTRY_TYPE}, {IMAGE_STORE_TYPE}, {IMAGE_IMPORT_TYPE}, {IMAGE_EXPORT_TYPE})")]
    UnknownType {
        /// `source` or `destination`.
        field: &'static str,
        /// The type URL as sent.
        type_url: String,
    },
    /// The source or destination does not decode as its type.
    #[error("{field} {type_url:?} does not decode: {reason}")]
    Decode {
        /// `source` or `destination`.
        field: &'static str,
        /// The type URL.
        type_url: String,
        /// The decoder's words.
        reason: String,
    },
    /// A request field has a value this service refuses.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Both endpoints are known, but this service does not move images between them.
    #[error("transfer from {from} to {to} is not implemented")]
    Unsupported {
        /// The source type.
        from: &'static str,
        /// The destination type.
        to: &'static str,
    },
    /// A progress or credential stream.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The client answered a credential request with something else.
    #[error("auth stream {stream:?}: {reason}")]
    Auth {
        /// The stream id.
        stream: String,
        /// What was wrong.
        reason: String,
    },
    /// The pull or push itself.
    #[error("failed to {op} {reference}: {}", transfer_text(cause))]
    Transfer {
        /// `pull` or `push`.
        op: &'static str,
        /// The reference.
        reference: String,
        /// The transfer library's error.
        cause: TransferError,
    },
    /// The registry host configuration.
    #[error("{}", transfer_text(.0))]
    Hosts(TransferError),
    /// An image to export is not in the store.
    #[error("{0} not found")]
    NotFound(String),
    /// An export failed.
    #[error("failed to export: {0}")]
    Export(String),
    /// An imported archive is not one this service can read.
    #[error("invalid image archive: {0}")]
    Archive(String),
}

/// A transfer error's text, with the registry's own words where the library's message leaves
/// them out (refused credentials).
fn transfer_text(err: &TransferError) -> String {
    match err {
        TransferError::Unauthorized { registry, detail } => {
            format!("authentication failed for {registry}: {detail}")
        }
        TransferError::Store { op, target, source } => format!("{op} {target}: {source}"),
        other => other.to_string(),
    }
}

impl TransferServiceError {
    fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            TransferServiceError::Transfer {
                cause: TransferError::Unauthorized { .. },
                ..
            }
        )
    }
}

impl Classify for TransferServiceError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Missing(_)
            | Self::UnknownType { .. }
            | Self::Decode { .. }
            | Self::Invalid { .. }
            | Self::Archive(_) => ErrorKind::InvalidArgument,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Export(_) => ErrorKind::Internal,
            Self::Unsupported { .. } => ErrorKind::NotImplemented,
            Self::Stream(e) => e.kind(),
            Self::Auth { .. } => ErrorKind::FailedPrecondition,
            Self::Transfer { cause, .. } | Self::Hosts(cause) => cause.kind(),
        }
    }
}

/// The status of a failed Transfer: Unauthenticated (which errdefs has no class for, as
/// containerd's has none) for refused credentials, else the errdefs mapping.
fn status(err: &TransferServiceError) -> Status {
    if err.is_unauthorized() {
        let message = err.to_string();
        tracing::debug!(error = %message, "request refused");
        return Status::unauthenticated(bounded(&message).into_owned());
    }
    to_status(err)
}

/// A decoded transfer endpoint.
#[derive(Debug)]
enum Endpoint {
    Registry(OciRegistry),
    Store(ApiImageStore),
    Import(ImageImportStream),
    Export(ImageExportStream),
}

impl Endpoint {
    fn kind(&self) -> &'static str {
        match self {
            Endpoint::Registry(_) => "OCIRegistry",
            Endpoint::Store(_) => "ImageStore",
            Endpoint::Import(_) => "ImageImportStream",
            Endpoint::Export(_) => "ImageExportStream",
        }
    }
}

/// Decodes the `field` (`source` or `destination`) of a request.
fn endpoint(field: &'static str, any: Option<&Any>) -> Result<Endpoint, TransferServiceError> {
    let any = any.ok_or(TransferServiceError::Missing(field))?;
    let decode_err = |e: prost::DecodeError| TransferServiceError::Decode {
        field,
        type_url: any.type_url.clone(),
        reason: e.to_string(),
    };
    match type_name(&any.type_url) {
        OCI_REGISTRY_TYPE => OciRegistry::decode(any.value.as_slice())
            .map(Endpoint::Registry)
            .map_err(decode_err),
        IMAGE_STORE_TYPE => ApiImageStore::decode(any.value.as_slice())
            .map(Endpoint::Store)
            .map_err(decode_err),
        IMAGE_IMPORT_TYPE => ImageImportStream::decode(any.value.as_slice())
            .map(Endpoint::Import)
            .map_err(decode_err),
        IMAGE_EXPORT_TYPE => ImageExportStream::decode(any.value.as_slice())
            .map(Endpoint::Export)
            .map_err(decode_err),
        _ => Err(TransferServiceError::UnknownType {
            field,
            type_url: any.type_url.clone(),
        }),
    }
}

fn platform_from_api(p: &ApiPlatform) -> Platform {
    Platform {
        os: p.os.clone(),
        architecture: p.architecture.clone(),
        variant: p.variant.clone(),
    }
    .normalized()
}

/// The Transfer service.
#[derive(Debug, Clone)]
pub struct TransferService {
    meta: Arc<MetadataStore>,
    content: NamespacedContent,
    snapshots: NamespacedSnapshots,
    tmp: PathBuf,
    streams: Arc<StreamManager>,
    config: Config,
}

impl TransferService {
    /// A service over the daemon's stores, applying layers under `tmp`, finding streams in
    /// `streams`.
    pub fn new(
        meta: Arc<MetadataStore>,
        content: NamespacedContent,
        snapshots: NamespacedSnapshots,
        tmp: PathBuf,
        streams: Arc<StreamManager>,
        config: Config,
    ) -> Self {
        Self {
            meta,
            content,
            snapshots,
            tmp,
            streams,
            config,
        }
    }

    /// The local stores unpacking into `snapshotter`.
    fn stores(&self, snapshotter: &str) -> LocalStores {
        LocalStores::new(
            self.meta.clone(),
            self.content.clone(),
            self.snapshots.clone(),
            snapshotter,
            layer_differ(self.content.clone(), self.tmp.clone()),
        )
    }

    /// The registry options of `resolver` for `image_ref`: endpoints from the hosts directory
    /// and credentials from the auth stream.
    async fn registry_options(
        &self,
        ns: &str,
        image_ref: &ImageRef,
        resolver: Option<&RegistryResolver>,
        capability: &'static str,
    ) -> Result<RegistryOptions, TransferServiceError> {
        let default = RegistryResolver::default();
        let resolver = resolver.unwrap_or(&default);
        let dirs = if resolver.host_dir.is_empty() {
            self.config.config_path.clone()
        } else {
            resolver.host_dir.clone()
        };
        let roots: Vec<PathBuf> = std::env::split_paths(&dirs)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        let scheme = match resolver.default_scheme.as_str() {
            "" => None,
            s @ ("http" | "https") => Some(s.to_owned()),
            other => {
                return Err(TransferServiceError::Invalid {
                    field: "resolver.default_scheme",
                    reason: format!("{other:?} is neither \"http\" nor \"https\""),
                })
            }
        };
        let registry = image_ref.registry().to_owned();
        let endpoints = crate::blocking::run(move || {
            let mut configured = false;
            for root in &roots {
                match hosts::host_dir(root, &registry) {
                    Ok(Some(_)) => configured = true,
                    Ok(None) => {}
                    Err(e) => {
                        return Err(TransferError::HostsConfig {
                            path: root.display().to_string(),
                            reason: e.to_string(),
                        })
                    }
                }
            }
            let mut endpoints = hosts::registry_hosts(&roots, &registry)?;
            if let (false, Some(scheme)) = (configured, scheme) {
                for ep in &mut endpoints {
                    ep.scheme.clone_from(&scheme);
                }
            }
            Ok(endpoints)
        })
        .await
        .map_err(|e| TransferServiceError::Invalid {
            field: "resolver",
            reason: e.message().to_owned(),
        })?
        .map_err(TransferServiceError::Hosts)?;
        tracing::debug!(?endpoints, "registry endpoints");

        let mut options = RegistryOptions {
            hosts: endpoints.clone(),
            ..RegistryOptions::default()
        };
        if !resolver.auth_stream.is_empty() {
            let stream = self.streams.get(ns, &resolver.auth_stream)?;
            let host = first_host(&endpoints, capability);
            let answer = ask_credentials(&stream, &host, &image_ref.name).await?;
            match answer {
                Credentials::None => {}
                Credentials::Basic(user, secret) => {
                    options.credentials = Some((user, secret));
                    options.credentials_host = Some(host);
                }
                Credentials::Bearer(token) => {
                    options.token = Some(token);
                    options.credentials_host = Some(host);
                }
            }
        }
        Ok(options)
    }

    /// The snapshotter an `unpacks` entry names (the default when empty); InvalidArgument
    /// unless it is loaded.
    fn unpack_snapshotter(&self, u: &UnpackConfiguration) -> Result<String, TransferServiceError> {
        let snapshotter = if u.snapshotter.is_empty() {
            DEFAULT_SNAPSHOTTER
        } else {
            u.snapshotter.as_str()
        };
        if self.snapshots.names().all(|n| n != snapshotter) {
            return Err(TransferServiceError::Invalid {
                field: "destination.unpacks.snapshotter",
                reason: format!("snapshotter {snapshotter:?} is not loaded"),
            });
        }
        Ok(snapshotter.to_owned())
    }

    /// OCIRegistry → ImageStore.
    async fn pull(
        &self,
        ns: &str,
        reg: OciRegistry,
        store: ApiImageStore,
        progress: &Arc<ProgressSink>,
    ) -> Result<(), TransferServiceError> {
        let reference = reg.reference.clone();
        let failed = failed("pull", &reference);
        let image_ref = parse_reference(&reg, "source.reference", &failed)?;
        let (platform, snapshotter) = match store.unpacks.first() {
            Some(u) => (
                u.platform.as_ref().map(platform_from_api),
                self.unpack_snapshotter(u)?,
            ),
            None => (None, DEFAULT_SNAPSHOTTER.to_owned()),
        };
        let unpack = !store.unpacks.is_empty();
        let platform = platform.or_else(|| store.platforms.first().map(platform_from_api));
        for extra in &store.extra_references {
            if extra.is_prefix || extra.add_digest {
                return Err(TransferServiceError::Invalid {
                    field: "destination.extra_references",
                    reason: format!(
                        "{:?}: prefix and digest references are not supported",
                        extra.name
                    ),
                });
            }
        }
        let name = if store.name.is_empty() {
            image_ref.name.clone()
        } else {
            store.name.clone()
        };

        let what = format!("OCI Registry ({reference})");
        progress.event(&format!("Resolving from {what}"), "");
        let registry = self
            .registry_options(ns, &image_ref, reg.resolver.as_ref(), "resolve")
            .await?;
        progress.set_root(&image_ref.name);
        progress.set_verb("downloading");
        let opts = PullOptions {
            registry,
            all_platforms: store.platforms.is_empty(),
            platform,
            unpack,
            labels: store.labels.into_iter().collect::<BTreeMap<_, _>>(),
            progress: progress.clone(),
        };
        let local = self.stores(&snapshotter);
        let named = Named {
            inner: &local.images,
            name: name.clone(),
        };
        let stores = Stores {
            images: &named,
            ..local.stores(ns)
        };
        progress.event(&format!("Pulling from {what}"), "");
        let pulled = berth_transfer::pull(&reg.reference, &opts, &stores)
            .await
            .map_err(&failed)?;
        progress.event("saved", &pulled.name);
        for extra in &store.extra_references {
            let record = Image {
                name: extra.name.clone(),
                ..pulled.clone()
            };
            save(&local.images, ns, &record, extra.allow_overwrite)
                .await
                .map_err(&failed)?;
            progress.event("saved", &record.name);
        }
        progress.event(&format!("Completed pull from {what}"), "");
        tracing::info!(reference = %reg.reference, image = %pulled.name, digest = %pulled.target.digest, "pulled");
        Ok(())
    }

    /// ImageStore → OCIRegistry.
    async fn push(
        &self,
        ns: &str,
        store: ApiImageStore,
        reg: OciRegistry,
        progress: &Arc<ProgressSink>,
    ) -> Result<(), TransferServiceError> {
        if store.name.is_empty() {
            return Err(TransferServiceError::Missing("source.name"));
        }
        let reference = reg.reference.clone();
        let failed = failed("push", &reference);
        let image_ref = parse_reference(&reg, "destination.reference", &failed)?;
        let mut registry = self
            .registry_options(ns, &image_ref, reg.resolver.as_ref(), "push")
            .await?;
        // The library's push talks to the reference's registry with the options' own flags:
        // those of the endpoint that may push there (its scheme, TLS verification, CA).
        if let Some(ep) = registry.hosts.iter().find(|h| h.capabilities.push) {
            registry.plain_http = ep.scheme == "http";
            registry.skip_verify = ep.skip_verify.unwrap_or(registry.skip_verify);
            if let Some(ca) = ep.ca_pem.first() {
                registry.ca_pem = Some(ca.clone());
            }
        }
        progress.set_root(&store.name);
        progress.set_verb("uploading");
        let opts = PushOptions {
            registry,
            platform: store.platforms.first().map(platform_from_api),
            progress: progress.clone(),
        };
        let local = self.stores(DEFAULT_SNAPSHOTTER);
        let pushed = push_on_own_thread(
            local,
            ns.to_owned(),
            store.name.clone(),
            reg.reference.clone(),
            opts,
        )
        .await
        .map_err(&failed)?;
        progress.event(&format!("Pushed to OCI Registry ({reference})"), "");
        tracing::info!(image = %store.name, reference = %reg.reference, digest = %pushed.digest, "pushed");
        Ok(())
    }
}

/// Wraps the transfer library's errors of `op` on `reference`.
fn failed<'a>(
    op: &'static str,
    reference: &'a str,
) -> impl Fn(TransferError) -> TransferServiceError + 'a {
    move |cause| TransferServiceError::Transfer {
        op,
        reference: reference.to_owned(),
        cause,
    }
}

/// The registry's reference (`field`, required), parsed.
fn parse_reference(
    reg: &OciRegistry,
    field: &'static str,
    failed: &impl Fn(TransferError) -> TransferServiceError,
) -> Result<ImageRef, TransferServiceError> {
    if reg.reference.is_empty() {
        return Err(TransferServiceError::Missing(field));
    }
    ImageRef::parse(&reg.reference).map_err(failed)
}

/// Runs a push on a thread of its own (with a runtime of its own): the push future is not
/// `Send` (a stream of per-blob futures borrowing their descriptors), and a tonic handler's
/// future must be.
async fn push_on_own_thread(
    local: LocalStores,
    ns: String,
    image: String,
    reference: String,
    opts: PushOptions,
) -> Result<Descriptor, TransferError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("berth-push".into())
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(berth_transfer::push(
                    &image,
                    &reference,
                    &opts,
                    &local.stores(&ns),
                )),
                Err(e) => Err(TransferError::Network {
                    registry: reference.clone(),
                    detail: format!("cannot start the push runtime: {e}"),
                }),
            };
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Err(TransferError::Network {
            registry: String::new(),
            detail: format!("cannot start the push thread: {e}"),
        });
    }
    rx.await.unwrap_or_else(|_| {
        Err(TransferError::DownloadLost {
            layer: "push thread ended without an answer".into(),
        })
    })
}

/// The endpoint host credentials are asked for: the first that can do `capability`.
fn first_host(endpoints: &[RegistryHost], capability: &str) -> String {
    endpoints
        .iter()
        .find(|h| match capability {
            "push" => h.capabilities.push,
            _ => h.capabilities.resolve || h.capabilities.pull,
        })
        .or(endpoints.first())
        .map(|h| h.host.clone())
        .unwrap_or_default()
}

/// Creates `record`, or (with `overwrite`) points an existing record of its name at its target.
async fn save(
    images: &dyn berth_transfer::ImageStore,
    ns: &str,
    record: &Image,
    overwrite: bool,
) -> Result<(), TransferError> {
    let cx = Cx::new(ns);
    match images.create(&cx, record).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_already_exists() && overwrite => {
            let mut paths = vec!["target".to_owned()];
            paths.extend(record.labels.keys().map(|k| format!("labels.{k}")));
            images
                .update(&cx, record, &paths)
                .await
                .map(|_| ())
                .map_err(|e| TransferError::store("update image", &record.name, e))
        }
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => Err(TransferError::store("create image", &record.name, e)),
    }
}

/// The image store seen by a pull: the record it makes is named as the request's `ImageStore`
/// asks (the reference as written, or another name) rather than the normalized reference.
struct Named<'a> {
    inner: &'a dyn berth_transfer::ImageStore,
    name: String,
}

#[async_trait::async_trait]
impl berth_transfer::ImageStore for Named<'_> {
    async fn get(&self, cx: &Cx, name: &str) -> Result<Option<Image>, StoreError> {
        self.inner.get(cx, name).await
    }

    async fn create(&self, cx: &Cx, image: &Image) -> Result<Image, StoreError> {
        let renamed = Image {
            name: self.name.clone(),
            ..image.clone()
        };
        self.inner.create(cx, &renamed).await
    }

    async fn update(&self, cx: &Cx, image: &Image, paths: &[String]) -> Result<Image, StoreError> {
        let renamed = Image {
            name: self.name.clone(),
            ..image.clone()
        };
        self.inner.update(cx, &renamed, paths).await
    }
}

/// What the client answered to a credential request.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    None,
    Basic(String, String),
    Bearer(String),
}

/// Asks the client for the credentials of `host` on its auth stream (containerd's
/// `credCallback.GetCredentials`).
async fn ask_credentials(
    stream: &ManagedStream,
    host: &str,
    reference: &str,
) -> Result<Credentials, TransferServiceError> {
    let request = AuthRequest {
        host: host.to_owned(),
        reference: reference.to_owned(),
        wwwauthenticate: Vec::new(),
    };
    stream
        .send(Any {
            type_url: AUTH_REQUEST_TYPE.to_owned(),
            value: request.encode_to_vec(),
        })
        .await?;
    let auth_err = |reason: String| TransferServiceError::Auth {
        stream: stream.id().to_owned(),
        reason,
    };
    let answer = tokio::time::timeout(AUTH_TIMEOUT, stream.recv())
        .await
        .map_err(|_| auth_err(format!("no answer within {AUTH_TIMEOUT:?}")))??;
    if type_name(&answer.type_url) != AUTH_RESPONSE_TYPE {
        return Err(auth_err(format!(
            "expected {AUTH_RESPONSE_TYPE}, got {:?}",
            answer.type_url
        )));
    }
    let response = AuthResponse::decode(answer.value.as_slice())
        .map_err(|e| auth_err(format!("AuthResponse does not decode: {e}")))?;
    Ok(credentials(response))
}

fn credentials(response: AuthResponse) -> Credentials {
    match response.auth_type() {
        AuthType::None => Credentials::None,
        AuthType::Credentials => Credentials::Basic(response.username, response.secret),
        // An identity token goes as the password of an empty user (as containerd's
        // authorizer sends a refresh token to the token service).
        AuthType::Refresh => Credentials::Basic(String::new(), response.secret),
        AuthType::Header => match response.secret.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                Credentials::Bearer(token.trim().to_owned())
            }
            Some((scheme, encoded)) if scheme.eq_ignore_ascii_case("basic") => {
                basic_header(encoded.trim()).unwrap_or(Credentials::None)
            }
            _ => Credentials::Bearer(response.secret),
        },
    }
}

/// `user:password` of a basic `Authorization` value.
fn basic_header(encoded: &str) -> Option<Credentials> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some(Credentials::Basic(user.to_owned(), pass.to_owned()))
}

/// The transfer's progress, as `Progress` events on the client's stream (or nowhere). Events
/// are queued here and sent by a task, so the transfer never waits for the client.
pub struct ProgressSink {
    tx: Mutex<Option<mpsc::UnboundedSender<ApiProgress>>>,
    state: Mutex<SinkState>,
}

#[derive(Default)]
struct SinkState {
    root: String,
    verb: &'static str,
    /// Bytes seen and the time of the last event, per blob digest.
    blobs: HashMap<String, (u64, Option<Instant>)>,
}

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressSink").finish_non_exhaustive()
    }
}

impl ProgressSink {
    /// A sink that drops every event.
    fn none() -> Arc<Self> {
        Arc::new(Self {
            tx: Mutex::new(None),
            state: Mutex::new(SinkState::default()),
        })
    }

    /// A sink sending on `stream`, and the task doing so (it ends after [`Self::finish`]).
    fn to_stream(stream: Arc<ManagedStream>) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<ApiProgress>();
        let task = tokio::spawn(async move {
            let mut failed = false;
            while let Some(p) = rx.recv().await {
                if failed {
                    continue;
                }
                let msg = Any {
                    type_url: PROGRESS_TYPE.to_owned(),
                    value: p.encode_to_vec(),
                };
                if let Err(e) = stream.send(msg).await {
                    tracing::warn!(error = %e, event = %p.event, name = %p.name, "progress not sent");
                    failed = true;
                }
            }
            stream.close();
        });
        let sink = Arc::new(Self {
            tx: Mutex::new(Some(tx)),
            state: Mutex::new(SinkState::default()),
        });
        (sink, task)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_root(&self, root: &str) {
        root.clone_into(&mut self.state().root);
    }

    fn set_verb(&self, verb: &'static str) {
        self.state().verb = verb;
    }

    fn send(&self, p: ApiProgress) {
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = tx.as_ref() {
            let _ = tx.send(p);
        }
    }

    /// An event about the whole transfer (or the named image).
    fn event(&self, event: &str, name: &str) {
        self.send(ApiProgress {
            event: event.to_owned(),
            name: name.to_owned(),
            ..ApiProgress::default()
        });
    }

    /// An event about the blob `desc`, `progress` bytes of it done.
    fn blob(&self, event: &str, desc: &Descriptor, progress: u64) {
        let root = self.state().root.clone();
        let parents = if root.is_empty() { vec![] } else { vec![root] };
        let total = i64::try_from(desc.size).unwrap_or(i64::MAX);
        let proto: ApiDescriptor = to_proto_descriptor(desc);
        self.send(ApiProgress {
            event: event.to_owned(),
            name: ingest_ref(desc),
            parents,
            progress: i64::try_from(progress).unwrap_or(i64::MAX),
            total,
            desc: Some(proto),
        });
    }

    /// Stops sending: the sending task ends once the queued events are out.
    fn finish(&self) {
        self.tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }
}

impl Progress for ProgressSink {
    fn on_start(&self, desc: &Descriptor) {
        self.state().blobs.insert(desc.digest.clone(), (0, None));
        self.blob("waiting", desc, 0);
    }

    fn on_bytes(&self, desc: &Descriptor, n: u64) {
        let (due, done, verb) = {
            let mut state = self.state();
            let verb = state.verb;
            let entry = state.blobs.entry(desc.digest.clone()).or_default();
            entry.0 += n;
            let due = entry.1.is_none_or(|at| at.elapsed() >= PROGRESS_INTERVAL);
            if due {
                entry.1 = Some(Instant::now());
            }
            (due, entry.0, verb)
        };
        if due {
            self.blob(
                if verb.is_empty() { "downloading" } else { verb },
                desc,
                done,
            );
        }
    }

    fn on_done(&self, desc: &Descriptor) {
        self.blob("complete", desc, desc.size);
    }

    fn on_exists(&self, desc: &Descriptor) {
        self.blob("already exists", desc, desc.size);
    }

    fn on_unpacked(&self, desc: &Descriptor) {
        self.blob("unpacked", desc, desc.size);
    }
}

#[tonic::async_trait]
impl Transfer for TransferService {
    #[tracing::instrument(skip_all, fields(namespace, source, destination))]
    async fn transfer(&self, req: Request<TransferRequest>) -> Result<Response<()>, Status> {
        let ns = namespace::from_request(&req)?;
        let req = req.into_inner();
        let span = tracing::Span::current();
        span.record("namespace", ns.as_str());
        // The progress stream first, so that it is closed however the transfer ends.
        let progress_stream = req.options.map(|o| o.progress_stream).unwrap_or_default();
        let (sink, sender) = if progress_stream.is_empty() {
            (ProgressSink::none(), None)
        } else {
            let stream = self
                .streams
                .get(&ns, &progress_stream)
                .map_err(|e| status(&e.into()))?;
            let (sink, task) = ProgressSink::to_stream(stream);
            (sink, Some(task))
        };
        let result = async {
            let source = endpoint("source", req.source.as_ref())?;
            let destination = endpoint("destination", req.destination.as_ref())?;
            span.record("source", source.kind());
            span.record("destination", destination.kind());
            match (source, destination) {
                (Endpoint::Registry(reg), Endpoint::Store(store)) => {
                    self.pull(&ns, reg, store, &sink).await
                }
                (Endpoint::Store(store), Endpoint::Registry(reg)) => {
                    self.push(&ns, store, reg, &sink).await
                }
                (Endpoint::Import(source), Endpoint::Store(store)) => {
                    self.import(&ns, source, store, &sink).await
                }
                (Endpoint::Store(store), Endpoint::Export(dest)) => {
                    self.export(&ns, store, dest, &sink).await
                }
                (from, to) => Err(TransferServiceError::Unsupported {
                    from: from.kind(),
                    to: to.kind(),
                }),
            }
        }
        .await;
        sink.finish();
        if let Some(task) = sender {
            // The queued events go out before the answer.
            let _ = task.await;
        }
        result.map_err(|e| status(&e))?;
        Ok(Response::new(()))
    }
}

impl<T> MessageLimits for TransferServer<T> {
    fn with_message_limits(self, max: usize) -> Self {
        self.max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }
}

/// The `io.containerd.grpc.v1.transfer` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "transfer")
        .serves(&[SERVICE_NAME])
        .requires(&[
            types::METADATA,
            types::CONTENT,
            types::SNAPSHOTTER,
            STREAMING_PLUGIN,
        ])
        .config::<Config>()
        .init(|ctx| {
            let config: Config = ctx.config()?;
            let meta: Arc<MetadataStore> = ctx.get_single(types::METADATA)?;
            let streams: Arc<StreamManager> = ctx.get_by_id(STREAMING_PLUGIN, MANAGER_ID)?;
            let content = content_view(ctx)?;
            let snapshots = snapshot_view(ctx)?;
            let tmp = ctx.create_state()?;
            std::fs::create_dir_all(&tmp).map_err(PluginError::init)?;
            let svc = TransferService::new(meta, content, snapshots, tmp, streams, config);
            Ok(Arc::new(GrpcService::new(TransferServer::new(svc))))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> Any {
        Any {
            type_url: type_url.to_owned(),
            value,
        }
    }

    #[test]
    fn unknown_types_are_invalid_argument_naming_the_type() {
        let err = endpoint("source", Some(&any("example.com/Nope", vec![]))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let st = status(&err);
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
        assert!(
            st.message().contains("\"example.com/Nope\""),
            "{}",
            st.message()
        );
        assert!(st.message().contains("source"), "{}", st.message());
        let err = endpoint("destination", None).unwrap_err();
        assert_eq!(err.to_string(), "destination is required");
    }

    #[test]
    fn known_types_decode_with_or_without_prefix() {
        let reg = OciRegistry {
            reference: "r/x:1".into(),
            resolver: None,
        };
        let e = endpoint(
            "source",
            Some(&any(
                &format!("type.googleapis.com/{OCI_REGISTRY_TYPE}"),
                reg.encode_to_vec(),
            )),
        )
        .unwrap();
        assert!(matches!(e, Endpoint::Registry(r) if r.reference == "r/x:1"));
        let e = endpoint("destination", Some(&any(IMAGE_STORE_TYPE, vec![]))).unwrap();
        assert_eq!(e.kind(), "ImageStore");
        let err = endpoint("source", Some(&any(IMAGE_STORE_TYPE, vec![0xff]))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn refused_credentials_are_unauthenticated_with_the_registry_words() {
        let err = TransferServiceError::Transfer {
            op: "pull",
            reference: "127.0.0.1:5000/bb:1".into(),
            cause: TransferError::Unauthorized {
                registry: "127.0.0.1:5000".into(),
                detail: "authentication required".into(),
            },
        };
        let st = status(&err);
        assert_eq!(st.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            st.message(),
            "failed to pull 127.0.0.1:5000/bb:1: authentication failed for 127.0.0.1:5000: authentication required"
        );
        let long = TransferServiceError::Transfer {
            op: "pull",
            reference: "r".into(),
            cause: TransferError::Unauthorized {
                registry: "r".into(),
                detail: "x".repeat(100_000),
            },
        };
        assert!(status(&long).message().len() <= crate::status::MAX_MESSAGE_LEN);
    }

    #[test]
    fn auth_responses_map_to_credentials() {
        let r = |t: AuthType, user: &str, secret: &str| AuthResponse {
            auth_type: t as i32,
            username: user.into(),
            secret: secret.into(),
            expire_at: None,
        };
        assert_eq!(
            credentials(r(AuthType::Credentials, "u", "p")),
            Credentials::Basic("u".into(), "p".into())
        );
        assert_eq!(
            credentials(r(AuthType::Refresh, "", "tok")),
            Credentials::Basic(String::new(), "tok".into())
        );
        assert_eq!(
            credentials(r(AuthType::Header, "", "Bearer abc")),
            Credentials::Bearer("abc".into())
        );
        // "dTpw" is base64 of "u:p".
        assert_eq!(
            credentials(r(AuthType::Header, "", "Basic dTpw")),
            Credentials::Basic("u".into(), "p".into())
        );
        assert_eq!(credentials(r(AuthType::None, "", "")), Credentials::None);
    }
}
