//! Content streams: `Content.Write` (STAT / WRITE / COMMIT, resumable by ref), `Content.Read`,
//! and label updates, as containerd's `content/proxy` client does them.

use std::collections::HashMap;

use anyhow::{bail, Result};
use berth_proto::containerd::services::content::v1::{
    Info, InfoRequest, ReadContentRequest, UpdateRequest, WriteAction, WriteContentRequest,
    WriteContentResponse,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use super::Client;
use crate::error::{Object, RpcResultExt};

/// Largest chunk sent in one WRITE (the server's limit is 1 MiB of data per message).
const CHUNK: usize = 1 << 20;

/// What to write: the ingest ref, and optionally the size, digest and labels to commit with.
#[derive(Debug, Clone, Default)]
pub struct WriteSpec {
    pub reference: String,
    /// Expected total size; 0 when unknown.
    pub total: i64,
    /// Expected digest; empty when unknown.
    pub expected: String,
    pub labels: HashMap<String, String>,
}

/// The committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub digest: String,
    pub size: i64,
    /// True when the content already existed and nothing was sent.
    pub existed: bool,
}

/// One request/response exchange on the Write stream.
struct Session<'a> {
    client: &'a Client,
    tx: mpsc::Sender<WriteContentRequest>,
    rx: Streaming<WriteContentResponse>,
    object: Object,
}

impl Session<'_> {
    async fn call(
        &mut self,
        req: WriteContentRequest,
    ) -> Result<Result<WriteContentResponse, tonic::Status>> {
        if self.tx.send(req).await.is_err() {
            // The server closed the stream: its status is on the response side.
        }
        match self.rx.message().await {
            Ok(Some(resp)) => Ok(Ok(resp)),
            Ok(None) => bail!(
                "cannot write {}: the server closed the write stream",
                self.object
            ),
            Err(status) => Ok(Err(status)),
        }
    }

    fn fail<T>(&self, status: tonic::Status) -> Result<T> {
        Err::<T, _>(status).rpc(self.client, "write", self.object.clone())
    }
}

/// Writes `reader` as a blob through `Content.Write`, resuming an ingest with the same ref: the
/// first `offset` bytes the server already has are skipped from `reader`.
pub async fn write_blob<R: AsyncRead + Unpin>(
    client: &Client,
    spec: &WriteSpec,
    mut reader: R,
) -> Result<Written> {
    let object = if spec.expected.is_empty() {
        Object::named("ingest", spec.reference.clone())
    } else {
        Object::content(&spec.expected)
    };
    let existed = || Written {
        digest: spec.expected.clone(),
        size: spec.total,
        existed: true,
    };
    let (tx, rx_req) = mpsc::channel(4);
    tx.send(WriteContentRequest {
        action: WriteAction::Stat as i32,
        r#ref: spec.reference.clone(),
        total: spec.total,
        expected: spec.expected.clone(),
        ..Default::default()
    })
    .await
    .ok();
    let resp = client
        .content()
        .write(client.req(ReceiverStream::new(rx_req)))
        .await;
    let rx = match resp {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == Code::AlreadyExists => return Ok(existed()),
        Err(s) => return Err(s).rpc(client, "write", object),
    };
    let mut session = Session {
        client,
        tx,
        rx,
        object,
    };
    let stat = match session.rx.message().await {
        Ok(Some(stat)) => stat,
        Ok(None) => bail!(
            "cannot write {}: the server closed the write stream",
            session.object
        ),
        Err(s) if s.code() == Code::AlreadyExists => return Ok(existed()),
        Err(s) => return session.fail(s),
    };

    // Resume: skip what the server already has (ctr's content.Copy does the same for readers
    // that cannot seek).
    let mut offset = stat.offset;
    if offset > 0 {
        let skipped = tokio::io::copy(
            &mut (&mut reader).take(u64::try_from(offset).unwrap_or(0)),
            &mut tokio::io::sink(),
        )
        .await?;
        if i64::try_from(skipped).unwrap_or(-1) != offset {
            bail!(
                "cannot resume {}: the input is shorter than the {offset} bytes already written",
                session.object
            );
        }
    }

    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = read_full(&mut reader, &mut buf).await?;
        if n == 0 {
            break;
        }
        let data = buf[..n].to_vec();
        let resp = match session
            .call(WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: spec.reference.clone(),
                offset,
                data,
                ..Default::default()
            })
            .await?
        {
            Ok(r) => r,
            Err(s) => return session.fail(s),
        };
        let now = offset + i64::try_from(n).unwrap_or(0);
        if resp.offset != now {
            bail!(
                "short write to {}: server has {} bytes, expected {now}",
                session.object,
                resp.offset
            );
        }
        offset = now;
    }

    let total = if spec.total > 0 { spec.total } else { offset };
    let commit = session
        .call(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: spec.reference.clone(),
            total,
            offset,
            expected: spec.expected.clone(),
            labels: spec.labels.clone(),
            ..Default::default()
        })
        .await?;
    let resp = match commit {
        Ok(r) => r,
        Err(s) if s.code() == Code::AlreadyExists => return Ok(existed()),
        Err(s) => return session.fail(s),
    };
    drop(session.tx);
    // Drain the rest of the stream (the server repeats the commit reply, then OK).
    while let Ok(Some(_)) = session.rx.message().await {}
    if !spec.expected.is_empty() && resp.digest != spec.expected {
        bail!(
            "unexpected commit digest {}, expected {}",
            resp.digest,
            spec.expected
        );
    }
    Ok(Written {
        digest: resp.digest,
        size: total,
        existed: false,
    })
}

/// Reads until `buf` is full or the input ends.
async fn read_full<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = reader.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// `Content.Info` of `digest`.
pub async fn info(client: &Client, digest: &str) -> Result<Info> {
    let resp = client
        .content()
        .info(client.req(InfoRequest {
            digest: digest.to_owned(),
        }))
        .await
        .rpc(client, "get", Object::content(digest))?;
    Ok(resp.into_inner().info.unwrap_or_default())
}

/// Streams blob `digest` into `out`, returning the byte count.
pub async fn read_to<W: AsyncWrite + Unpin>(
    client: &Client,
    digest: &str,
    out: &mut W,
) -> Result<u64> {
    let mut stream = client
        .content()
        .read(client.req(ReadContentRequest {
            digest: digest.to_owned(),
            offset: 0,
            size: 0,
        }))
        .await
        .rpc(client, "read", Object::content(digest))?
        .into_inner();
    let mut total = 0u64;
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                out.write_all(&chunk.data).await?;
                total += chunk.data.len() as u64;
            }
            Ok(None) => break,
            Err(s) => return Err(s).rpc(client, "read", Object::content(digest)),
        }
    }
    out.flush().await?;
    Ok(total)
}

/// The whole blob `digest` in memory.
pub async fn read_blob(client: &Client, digest: &str) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    read_to(client, digest, &mut data).await?;
    Ok(data)
}

/// Sets (empty value: removes) labels on blob `digest`, one `labels.<key>` mask path each.
pub async fn update_labels(
    client: &Client,
    digest: &str,
    labels: impl IntoIterator<Item = (String, String)>,
) -> Result<Info> {
    let labels: HashMap<String, String> = labels.into_iter().collect();
    let mut paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
    paths.sort();
    let resp = client
        .content()
        .update(client.req(UpdateRequest {
            info: Some(Info {
                digest: digest.to_owned(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        }))
        .await
        .rpc(client, "update", Object::content(digest))?;
    Ok(resp.into_inner().info.unwrap_or_default())
}
