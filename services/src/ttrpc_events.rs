//! ttrpc `containerd.services.events.ttrpc.v1.Events` on `<grpc address>.ttrpc` (containerd
//! `services/events/ttrpc.go`): how shims hand their task events to the daemon. Forward checks
//! the envelope as the gRPC Forward does and re-emits it on the exchange.

use std::future::Future;
use std::sync::Arc;

use berth_core::events::Exchange;
use berth_proto::containerd::services::events::ttrpc::v1::ForwardRequest;
use berth_ttrpc::{code, status, unary, Context, HandlerFuture, RpcStatus, Server, Service};
use tokio::net::UnixListener;

use crate::events::envelope_from_parts;
use crate::status::to_status;

/// The ttrpc service name.
pub const SERVICE_NAME: &str = "containerd.services.events.ttrpc.v1.Events";

/// The ttrpc metadata key carrying the shim's namespace.
pub const NAMESPACE_TTRPC_HEADER: &str = "containerd-namespace-ttrpc";

/// A gRPC status as a ttrpc one (same codes, same message).
fn rpc_status(s: tonic::Status) -> RpcStatus {
    status(s.code() as i32, s.message())
}

/// The ttrpc Events service over the exchange.
#[derive(Debug, Clone)]
pub struct TtrpcEventsService {
    exchange: Arc<Exchange>,
}

impl TtrpcEventsService {
    /// A service forwarding to `exchange`.
    pub fn new(exchange: Arc<Exchange>) -> Self {
        TtrpcEventsService { exchange }
    }

    fn forward(&self, ctx: &Context, req: ForwardRequest) -> Result<(), RpcStatus> {
        let envelope = req
            .envelope
            .ok_or_else(|| status(code::INVALID_ARGUMENT, "envelope is required"))?;
        // The shim sends its namespace both ways; the header wins when present.
        let namespace = ctx
            .get(NAMESPACE_TTRPC_HEADER)
            .filter(|ns| !ns.is_empty())
            .map(str::to_owned)
            .unwrap_or(envelope.namespace);
        tracing::debug!(namespace = %namespace, topic = %envelope.topic, "shim event");
        let envelope = envelope_from_parts(
            envelope.timestamp,
            namespace,
            envelope.topic,
            envelope.event,
        )
        .map_err(rpc_status)?;
        self.exchange
            .forward(envelope)
            .map_err(|e| rpc_status(to_status(&e)))
    }
}

impl Service for TtrpcEventsService {
    fn name(&self) -> &str {
        SERVICE_NAME
    }

    fn call(&self, method: &str, ctx: Context, payload: Vec<u8>) -> HandlerFuture {
        match method {
            "Forward" => {
                let svc = self.clone();
                unary::<ForwardRequest, (), _, _>(&payload, move |req| async move {
                    svc.forward(&ctx, req)
                })
            }
            other => berth_ttrpc::unimplemented_method(other),
        }
    }
}

/// Serves the ttrpc Events service on `listener` until `shutdown` completes. The lead binds
/// the listener at the daemon's ttrpc address (`Config::ttrpc_address`), mode 0600.
pub async fn serve_ttrpc_events(
    listener: UnixListener,
    exchange: Arc<Exchange>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let mut server = Server::new();
    server.add_service(Arc::new(TtrpcEventsService::new(exchange)));
    server.serve(listener, shutdown).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use berth_core::events::Event;
    use berth_proto::containerd::events::TaskExit;
    use berth_proto::containerd::services::events::ttrpc::v1::Envelope;
    use berth_ttrpc::{CallOptions, Client, TtrpcError};

    use super::*;

    #[tokio::test]
    async fn shims_forward_events_onto_the_exchange() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("d.sock.ttrpc");
        let exchange = Arc::new(Exchange::new());
        let mut sub = exchange.subscribe(berth_filters::parse_any::<&str>(&[]).unwrap());
        let listener = UnixListener::bind(&sock).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_ttrpc_events(listener, exchange.clone(), async move {
            let _ = stopped.await;
        }));

        let client = Client::connect(&sock).await.unwrap();
        let exit = TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            exit_status: 137,
            ..Default::default()
        };
        let envelope = Envelope {
            timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            namespace: "ns1".into(),
            topic: "/tasks/exit".into(),
            event: Some(exit.to_any()),
        };
        let opts = CallOptions {
            timeout: Some(Duration::from_secs(5)),
            metadata: vec![(NAMESPACE_TTRPC_HEADER.into(), "ns1".into())],
        };
        client
            .call::<_, ()>(
                SERVICE_NAME,
                "Forward",
                &ForwardRequest {
                    envelope: Some(envelope.clone()),
                },
                opts.clone(),
            )
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(e) = sub.try_recv() {
                    return e;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(got.namespace, "ns1");
        assert_eq!(got.topic, "/tasks/exit");
        assert_eq!(got.event.type_url, "containerd.events.TaskExit");

        // No timestamp, a bad topic, no envelope: InvalidArgument.
        for bad in [
            Some(Envelope {
                timestamp: None,
                ..envelope.clone()
            }),
            Some(Envelope {
                topic: "tasks".into(),
                ..envelope.clone()
            }),
            None,
        ] {
            let err = client
                .call::<_, ()>(
                    SERVICE_NAME,
                    "Forward",
                    &ForwardRequest { envelope: bad },
                    opts.clone(),
                )
                .await
                .unwrap_err();
            match err {
                TtrpcError::Status(st) => assert_eq!(st.code, code::INVALID_ARGUMENT, "{st:?}"),
                other => panic!("unexpected {other}"),
            }
        }
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
