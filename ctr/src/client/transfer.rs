//! The daemon-side transfer, as containerd 1.7's client drives it (`pkg/transfer/proxy`): the
//! client opens Streaming streams (progress, and credentials when it has some), then calls
//! `Transfer` with the source and destination as `Any` messages of
//! `containerd.types.transfer`; the daemon sends `Progress` events on the progress stream and
//! asks credentials on the auth stream (`AuthRequest` → `AuthResponse`).

use std::time::Duration;

use anyhow::{Context as _, Result};
use berth_proto::containerd::services::streaming::v1::streaming_client::StreamingClient;
use berth_proto::containerd::services::streaming::v1::StreamInit;
use berth_proto::containerd::services::transfer::v1::transfer_client::TransferClient;
use berth_proto::containerd::services::transfer::v1::{TransferOptions, TransferRequest};
use berth_proto::containerd::types::transfer::{
    AuthRequest, AuthResponse, AuthType, Data, ImageExportStream, ImageImportStream,
    ImageReference, ImageStore, OciRegistry, Progress, RegistryResolver, UnpackConfiguration,
    WindowUpdate,
};
use berth_proto::containerd::types::Platform;
use prost::Message as _;
use prost_types::Any;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::Client;

/// Type URLs as containerd's typeurl names proto messages (their full names).
const STREAM_INIT: &str = "containerd.services.streaming.v1.StreamInit";
const OCI_REGISTRY: &str = "containerd.types.transfer.OCIRegistry";
const IMAGE_STORE: &str = "containerd.types.transfer.ImageStore";
const PROGRESS: &str = "containerd.types.transfer.Progress";
const IMAGE_IMPORT: &str = "containerd.types.transfer.ImageImportStream";
const IMAGE_EXPORT: &str = "containerd.types.transfer.ImageExportStream";
const DATA: &str = "containerd.types.transfer.Data";
const WINDOW_UPDATE: &str = "containerd.types.transfer.WindowUpdate";
const AUTH_REQUEST: &str = "containerd.types.transfer.AuthRequest";
const AUTH_RESPONSE: &str = "containerd.types.transfer.AuthResponse";

/// How long the progress already queued may take to arrive after the transfer answered.
const PROGRESS_DRAIN: Duration = Duration::from_secs(10);

/// A pull the daemon does (ctr 1.7 `images pull --local=false`).
#[derive(Debug, Clone, Default)]
pub struct RemotePull {
    /// The reference to pull (and the image name recorded).
    pub reference: String,
    /// Labels set on the image.
    pub labels: Vec<(String, String)>,
    /// Platforms to fetch; empty is all of them.
    pub platforms: Vec<Platform>,
    /// Unpack for this platform into this snapshotter (empty: the daemon's default).
    pub unpack: Option<(Platform, String)>,
    /// `user`, `password` answered to the daemon's credential requests.
    pub credentials: Option<(String, String)>,
    /// A hosts directory on the daemon's machine (`<host>/hosts.toml`).
    pub host_dir: Option<String>,
    /// `http` for registries without a hosts.toml (ctr's `--plain-http`).
    pub default_scheme: Option<String>,
}

fn any<M: prost::Message>(type_url: &str, msg: &M) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: msg.encode_to_vec(),
    }
}

/// The name part of a type URL (with or without a `type.googleapis.com/` prefix).
fn type_name(type_url: &str) -> &str {
    type_url.rsplit_once('/').map_or(type_url, |(_, n)| n)
}

/// A fresh stream id, `<prefix>-<random>` as containerd's `GenerateID`.
fn stream_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// An open Streaming stream: what is sent goes to the daemon, `inbound` is what it sends.
struct OpenStream {
    tx: mpsc::Sender<Any>,
    inbound: Streaming<Any>,
}

/// Opens the stream `id` and waits for the daemon to register it.
async fn open_stream(client: &Client, id: &str) -> Result<OpenStream> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(any(STREAM_INIT, &StreamInit { id: id.to_owned() }))
        .await
        .context("stream closed before its init")?;
    let mut inbound = StreamingClient::new(client.channel())
        .stream(client.req(ReceiverStream::new(rx)))
        .await
        .with_context(|| format!("open stream {id}"))?
        .into_inner();
    // The daemon answers with an Empty once the stream is registered.
    inbound
        .message()
        .await
        .with_context(|| format!("open stream {id}"))?
        .with_context(|| format!("stream {id} ended before it was registered"))?;
    Ok(OpenStream { tx, inbound })
}

/// Answers the daemon's credential requests on `stream` with `user`/`secret` until it ends.
fn answer_credentials(mut stream: OpenStream, user: String, secret: String) {
    tokio::spawn(async move {
        while let Ok(Some(msg)) = stream.inbound.message().await {
            // The same credentials go to every host asked for (ctr's `--user`).
            if type_name(&msg.type_url) != AUTH_REQUEST
                || AuthRequest::decode(msg.value.as_slice()).is_err()
            {
                continue;
            }
            let answer = AuthResponse {
                auth_type: AuthType::Credentials as i32,
                username: user.clone(),
                secret: secret.clone(),
                expire_at: None,
            };
            if stream.tx.send(any(AUTH_RESPONSE, &answer)).await.is_err() {
                return;
            }
        }
    });
}

/// Pulls through the daemon's Transfer service, passing each progress event to `on_progress`
/// as it arrives.
pub async fn pull(
    client: &Client,
    spec: &RemotePull,
    on_progress: impl FnMut(&Progress),
) -> Result<(), tonic::Status> {
    let open = |id: String| async move {
        open_stream(client, &id)
            .await
            .map_err(|e| tonic::Status::unavailable(format!("{e:#}")))
    };
    let mut resolver = RegistryResolver {
        host_dir: spec.host_dir.clone().unwrap_or_default(),
        default_scheme: spec.default_scheme.clone().unwrap_or_default(),
        ..RegistryResolver::default()
    };
    if let Some((user, secret)) = &spec.credentials {
        let id = stream_id("creds");
        let stream = open(id.clone()).await?;
        answer_credentials(stream, user.clone(), secret.clone());
        resolver.auth_stream = id;
    }
    let source = OciRegistry {
        reference: spec.reference.clone(),
        resolver: Some(resolver),
    };
    let destination = ImageStore {
        name: spec.reference.clone(),
        labels: spec.labels.iter().cloned().collect(),
        platforms: spec.platforms.clone(),
        unpacks: spec
            .unpack
            .iter()
            .map(|(platform, snapshotter)| UnpackConfiguration {
                platform: Some(platform.clone()),
                snapshotter: snapshotter.clone(),
            })
            .collect(),
        ..ImageStore::default()
    };
    run(
        client,
        any(OCI_REGISTRY, &source),
        any(IMAGE_STORE, &destination),
        on_progress,
    )
    .await
}

/// Calls `Transfer` from `source` to `destination`, passing each progress event to
/// `on_progress` as it arrives.
async fn run(
    client: &Client,
    source: Any,
    destination: Any,
    mut on_progress: impl FnMut(&Progress),
) -> Result<(), tonic::Status> {
    let progress_id = stream_id("progress");
    let mut progress = open_stream(client, &progress_id)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:#}")))?;
    let request = TransferRequest {
        source: Some(source),
        destination: Some(destination),
        options: Some(TransferOptions {
            progress_stream: progress_id,
        }),
    };
    let mut transfer_client = TransferClient::new(client.channel());
    let transfer = transfer_client.transfer(client.req(request));
    tokio::pin!(transfer);
    let mut ended = false;
    let mut handle = |msg: Any| {
        if type_name(&msg.type_url) == PROGRESS {
            if let Ok(p) = Progress::decode(msg.value.as_slice()) {
                on_progress(&p);
            }
        }
    };
    let result = loop {
        tokio::select! {
            answer = &mut transfer => break answer,
            msg = progress.inbound.message(), if !ended => match msg {
                Ok(Some(msg)) => handle(msg),
                _ => ended = true,
            },
        }
    };
    if result.is_ok() && !ended {
        // The daemon closes the progress stream before it answers: what is left is queued.
        let drain = async {
            while let Ok(Some(msg)) = progress.inbound.message().await {
                handle(msg);
            }
        };
        let _ = tokio::time::timeout(PROGRESS_DRAIN, drain).await;
    }
    drop(progress.tx);
    result.map(|_| ())
}

/// An import the daemon does (ctr 1.7 `images import --local=false`).
#[derive(Debug, Clone, Default)]
pub struct RemoteImport {
    /// The name of the archive's index as an image (`--index-name`), or empty.
    pub index_name: String,
    /// The prefix of names from the archive's ref-name annotations.
    pub prefix: String,
    /// Also name each image `<prefix>@<digest>`.
    pub digests: bool,
    /// Platforms to keep; empty is all of them.
    pub platforms: Vec<Platform>,
    /// What the daemon unpacks: a platform and a snapshotter each; empty is nothing.
    pub unpacks: Vec<UnpackConfiguration>,
}

/// The largest `Data` message sent (containerd's `maxRead`).
const MAX_READ: usize = 32 * 1024;

/// Streams `file` on `stream` as `Data` messages, within the daemon's `WindowUpdate` credit
/// (containerd's `SendStream`), then ends the stream.
async fn send_file(mut stream: OpenStream, mut file: tokio::fs::File) -> Result<()> {
    use tokio::io::AsyncReadExt as _;
    let mut remaining: i64 = 0;
    let mut buf = vec![0; MAX_READ];
    loop {
        while remaining <= 0 {
            let msg = stream
                .inbound
                .message()
                .await
                .context("import stream")?
                .context("the daemon ended the import stream")?;
            if type_name(&msg.type_url) == WINDOW_UPDATE {
                if let Ok(w) = WindowUpdate::decode(msg.value.as_slice()) {
                    remaining += i64::from(w.update);
                }
            }
        }
        let max = usize::try_from(remaining).unwrap_or(MAX_READ).min(MAX_READ);
        let n = file
            .read(&mut buf[..max])
            .await
            .context("read the archive")?;
        if n == 0 {
            // End the data, and keep the stream until the daemon ends it: dropping it now
            // would reset the stream and lose what the daemon has not read yet.
            drop(stream.tx);
            while let Ok(Some(_)) = stream.inbound.message().await {}
            return Ok(());
        }
        remaining -= i64::try_from(n).unwrap_or(i64::MAX);
        let data = Data {
            data: buf[..n].to_vec(),
        };
        stream
            .tx
            .send(any(DATA, &data))
            .await
            .context("the import stream closed")?;
    }
}

/// Imports the archive `file` through the daemon's Transfer service; returns the names of the
/// images it recorded (its `saved` events).
pub async fn import(
    client: &Client,
    spec: &RemoteImport,
    file: tokio::fs::File,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Vec<String>, tonic::Status> {
    let stream_name = stream_id("import");
    let stream = open_stream(client, &stream_name)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:#}")))?;
    let sender = tokio::spawn(send_file(stream, file));
    let source = ImageImportStream {
        stream: stream_name,
        media_type: String::new(),
        force_compress: false,
    };
    let destination = ImageStore {
        name: spec.index_name.clone(),
        platforms: spec.platforms.clone(),
        extra_references: vec![ImageReference {
            name: spec.prefix.clone(),
            is_prefix: true,
            allow_overwrite: true,
            add_digest: spec.digests,
            ..ImageReference::default()
        }],
        unpacks: spec.unpacks.clone(),
        ..ImageStore::default()
    };
    let mut saved = Vec::new();
    let result = run(
        client,
        any(IMAGE_IMPORT, &source),
        any(IMAGE_STORE, &destination),
        |p| {
            if p.event == "saved" {
                saved.push(p.name.clone());
            }
            on_progress(p);
        },
    )
    .await;
    if let Err(status) = result {
        sender.abort();
        return Err(status);
    }
    let sent = sender.await;
    match sent {
        Ok(Ok(())) => Ok(saved),
        Ok(Err(e)) => Err(tonic::Status::unavailable(format!("{e:#}"))),
        Err(e) => Err(tonic::Status::internal(format!("import sender: {e}"))),
    }
}

/// An export the daemon does (ctr 1.7 `images export --local=false`).
#[derive(Debug, Clone, Default)]
pub struct RemoteExport {
    /// The image to export.
    pub image: String,
    /// Platforms to keep (the first is used); empty with `all_platforms` false is the daemon's.
    pub platforms: Vec<Platform>,
    /// Every platform.
    pub all_platforms: bool,
    /// Leave out Docker's `manifest.json`.
    pub skip_compatibility_manifest: bool,
    /// Leave out non-distributable layers.
    pub skip_non_distributable: bool,
}

/// The credit granted to the daemon whenever fewer bytes are outstanding (containerd's
/// `windowSize`).
const WINDOW: i32 = 64 * 1024;

/// Writes the `Data` the daemon sends on `stream` to `out`, granting `WindowUpdate` credit
/// (containerd's `ReceiveStream`), until the daemon ends the stream.
async fn receive_file(mut stream: OpenStream, mut out: tokio::fs::File) -> Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut window: i32 = 0;
    loop {
        if window < WINDOW {
            let update = WindowUpdate { update: WINDOW };
            if stream.tx.send(any(WINDOW_UPDATE, &update)).await.is_ok() {
                window += WINDOW;
            }
        }
        let Some(msg) = stream.inbound.message().await.context("export stream")? else {
            break;
        };
        if type_name(&msg.type_url) != DATA {
            continue;
        }
        let data = Data::decode(msg.value.as_slice()).context("Data does not decode")?;
        out.write_all(&data.data)
            .await
            .context("write the archive")?;
        window -= i32::try_from(data.data.len()).unwrap_or(i32::MAX);
    }
    out.flush().await.context("write the archive")?;
    Ok(())
}

/// Exports an image through the daemon's Transfer service into `out`.
pub async fn export(
    client: &Client,
    spec: &RemoteExport,
    out: tokio::fs::File,
) -> Result<(), tonic::Status> {
    let stream_name = stream_id("export");
    let stream = open_stream(client, &stream_name)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:#}")))?;
    let receiver = tokio::spawn(receive_file(stream, out));
    let source = ImageStore {
        name: spec.image.clone(),
        ..ImageStore::default()
    };
    let destination = ImageExportStream {
        stream: stream_name,
        media_type: String::new(),
        platforms: spec.platforms.clone(),
        all_platforms: spec.all_platforms,
        skip_compatibility_manifest: spec.skip_compatibility_manifest,
        skip_non_distributable: spec.skip_non_distributable,
    };
    let result = run(
        client,
        any(IMAGE_STORE, &source),
        any(IMAGE_EXPORT, &destination),
        |_| {},
    )
    .await;
    if let Err(status) = result {
        receiver.abort();
        return Err(status);
    }
    match receiver.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(tonic::Status::unavailable(format!("{e:#}"))),
        Err(e) => Err(tonic::Status::internal(format!("export receiver: {e}"))),
    }
}
