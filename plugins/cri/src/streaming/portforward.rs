//! `portforward.k8s.io` over SPDY: per forwarded connection the client opens an error stream
//! and a data stream with the same `requestID` and a `port`; once both are there the data
//! stream is connected to the port in the pod, and a failure is written to the error stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::spdy::frame::rst;
use super::spdy::{Connection, Incoming, Stream};
use super::StreamRuntime;

/// The protocol name.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// How long half a pair waits for the other half.
pub const PAIR_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Pair {
    data: Option<Stream>,
    error: Option<Stream>,
    since: Option<Instant>,
}

/// Checks a new stream's headers: `(streamType, port)`.
fn validate(stream: &Stream) -> Result<(String, u16), String> {
    let port = stream
        .headers()
        .get("port")
        .ok_or_else(|| "\"port\" header is required".to_owned())?;
    let port: u16 = port
        .parse()
        .map_err(|e| format!("unable to parse {port:?} as a port: {e}"))?;
    if port < 1 {
        return Err(format!("port {port} must be > 0"));
    }
    let kind = stream
        .headers()
        .get("streamtype")
        .ok_or_else(|| "\"streamType\" header is required".to_owned())?;
    if kind != "data" && kind != "error" {
        return Err(format!("invalid stream type {kind:?}"));
    }
    Ok((kind.to_owned(), port))
}

/// The pair a stream belongs to: its `requestID`, or (old clients) one made from stream ids.
fn request_id(stream: &Stream, kind: &str) -> String {
    match stream.headers().get("requestid") {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ if kind == "data" => stream.id().saturating_sub(2).to_string(),
        _ => stream.id().to_string(),
    }
}

/// Serves one upgraded connection until the client closes it.
pub async fn serve(
    conn: Connection,
    mut incoming: Incoming,
    sandbox_id: String,
    runtime: Arc<dyn StreamRuntime>,
) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let stream = tokio::select! {
            s = incoming.recv() => s,
            _ = tick.tick() => {
                expire(&mut pairs).await;
                continue;
            }
        };
        let Some(mut stream) = stream else { break };
        let (kind, port) = match validate(&stream) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "port-forward stream refused");
                stream.reset(rst::PROTOCOL_ERROR).await;
                continue;
            }
        };
        if stream.reply().await.is_err() {
            break;
        }
        let id = request_id(&stream, &kind);
        let pair = pairs.entry(id.clone()).or_default();
        pair.since.get_or_insert_with(Instant::now);
        let slot = if kind == "data" {
            &mut pair.data
        } else {
            &mut pair.error
        };
        if slot.is_some() {
            let msg =
                format!("error processing stream for request {id}: {kind} stream already assigned");
            if let Some(err) = pair.error.as_mut() {
                let _ = err.write_all(msg.as_bytes()).await;
            }
            continue;
        }
        *slot = Some(stream);
        if pair.data.is_some() && pair.error.is_some() {
            if let Some(Pair {
                data: Some(data),
                error: Some(error),
                ..
            }) = pairs.remove(&id)
            {
                tokio::spawn(forward(
                    conn.clone(),
                    runtime.clone(),
                    sandbox_id.clone(),
                    port,
                    data,
                    error,
                ));
            }
        }
    }
    conn.close().await;
}

async fn expire(pairs: &mut HashMap<String, Pair>) {
    let old: Vec<String> = pairs
        .iter()
        .filter(|(_, p)| p.since.is_some_and(|t| t.elapsed() >= PAIR_TIMEOUT))
        .map(|(id, _)| id.clone())
        .collect();
    for id in old {
        if let Some(mut pair) = pairs.remove(&id) {
            if let Some(err) = pair.error.as_mut() {
                let msg = format!("timed out waiting for streams of request {id}");
                let _ = err.write_all(msg.as_bytes()).await;
            }
        }
    }
}

async fn forward(
    conn: Connection,
    runtime: Arc<dyn StreamRuntime>,
    sandbox_id: String,
    port: u16,
    data: Stream,
    mut error: Stream,
) {
    // A connection gone drops the forward (and its socket into the pod) even when the pod
    // stays silent.
    let result = tokio::select! {
        r = runtime.port_forward(&sandbox_id, port, Box::new(data)) => r,
        () = conn.closed() => return,
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, port, "port-forward failed");
        let msg = format!("error forwarding port {port} to pod {sandbox_id}, uid : {e}");
        let _ = error.write_all(msg.as_bytes()).await;
    }
    let _ = error.shutdown().await;
}
