//! `containerd.services.events.v1.Events` over the exchange (containerd
//! `services/events/service.go`). Publish is namespaced by the request header; Forward carries
//! its namespace in the envelope; Subscribe is not namespaced and streams every namespace,
//! whatever the header says.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use berth_core::events::{forwarded_timestamp, Envelope, Exchange, Subscription};
use berth_proto::containerd::services::events::v1::events_server::{
    Events, EventsServer, SERVICE_NAME,
};
use berth_proto::containerd::services::events::v1::{
    Envelope as ProtoEnvelope, ForwardRequest, PublishRequest, SubscribeRequest,
};
use berth_registry::{types, Classify, ErrorKind, Registration};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::grpc::GrpcService;
use crate::status::to_status;
use crate::{namespace, rpc_span};

/// A request missing a part the exchange needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum RequestError {
    /// Publish without an event.
    #[error("event is required")]
    MissingEvent,
    /// Forward without an envelope.
    #[error("envelope is required")]
    MissingEnvelope,
}

impl Classify for RequestError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

/// The Events service.
#[derive(Debug, Clone)]
pub struct EventsService {
    exchange: Arc<Exchange>,
}

impl EventsService {
    /// A service over `exchange`.
    pub fn new(exchange: Arc<Exchange>) -> Self {
        EventsService { exchange }
    }
}

/// An envelope as sent to subscribers.
pub fn to_proto(envelope: Envelope) -> ProtoEnvelope {
    ProtoEnvelope {
        timestamp: Some(envelope.timestamp.into()),
        namespace: envelope.namespace,
        topic: envelope.topic,
        event: Some(envelope.event),
    }
}

/// A forwarded envelope from its wire parts, shared by the gRPC Forward and the ttrpc Forward
/// that shims call: the timestamp must be set (Go's zero time counts as unset) and the event
/// present. Namespace and topic are checked by the exchange.
pub fn envelope_from_parts(
    timestamp: Option<prost_types::Timestamp>,
    namespace: String,
    topic: String,
    event: Option<prost_types::Any>,
) -> Result<Envelope, Status> {
    let timestamp = forwarded_timestamp(timestamp).map_err(|e| to_status(&e))?;
    let event = event.ok_or_else(|| to_status(&RequestError::MissingEvent))?;
    Ok(Envelope {
        timestamp,
        namespace,
        topic,
        event,
    })
}

/// A subscription as the server stream of Subscribe; dropped (and so unsubscribed) when the
/// client goes away.
#[derive(Debug)]
pub struct EnvelopeStream(Subscription);

impl Stream for EnvelopeStream {
    type Item = Result<ProtoEnvelope, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|next| next.map(|envelope| Ok(to_proto(envelope))))
    }
}

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(&self, req: Request<PublishRequest>) -> Result<Response<()>, Status> {
        rpc_span::record("topic", &req.get_ref().topic);
        let ns = namespace::from_request(&req)?;
        let req = req.into_inner();
        let event = req
            .event
            .ok_or_else(|| to_status(&RequestError::MissingEvent))?;
        self.exchange
            .publish(&ns, &req.topic, event)
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(()))
    }

    async fn forward(&self, req: Request<ForwardRequest>) -> Result<Response<()>, Status> {
        let envelope = req
            .into_inner()
            .envelope
            .ok_or_else(|| to_status(&RequestError::MissingEnvelope))?;
        let span = tracing::Span::current();
        span.record("namespace", envelope.namespace.as_str());
        span.record("topic", envelope.topic.as_str());
        let envelope = envelope_from_parts(
            envelope.timestamp,
            envelope.namespace,
            envelope.topic,
            envelope.event,
        )?;
        self.exchange.forward(envelope).map_err(|e| to_status(&e))?;
        Ok(Response::new(()))
    }

    type SubscribeStream = EnvelopeStream;

    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        tracing::Span::current().record("filters", tracing::field::debug(&req.get_ref().filters));
        // Deliberately no namespace: ctr events sees every namespace whatever its header.
        let filter = berth_filters::parse_any(&req.get_ref().filters).map_err(|e| to_status(&e))?;
        Ok(Response::new(EnvelopeStream(
            self.exchange.subscribe(filter),
        )))
    }
}

/// Publishes the event of a change that is already committed. A failed publish is logged, not
/// returned: containerd returns it, which makes clients retry a write that already happened.
pub fn publish_committed<E: berth_core::events::Event>(exchange: &Exchange, ns: &str, event: &E) {
    if let Err(e) = exchange.publish_event(ns, event) {
        tracing::warn!(topic = E::TOPIC, error = %e, "publish event");
    }
}

/// The `io.containerd.grpc.v1.events` plugin, over the `exchange` event plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "events")
        .serves(&[SERVICE_NAME])
        .reloadable()
        .requires(&[types::EVENT])
        .init(|ctx| {
            let exchange: Arc<Exchange> =
                ctx.get_by_id(types::EVENT, berth_core::events::plugin::ID)?;
            let svc = EventsService::new(exchange);
            Ok(Arc::new(GrpcService::new(EventsServer::new(svc))))
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use berth_core::events::{payload, topic, Event};
    use berth_proto::containerd::events::{NamespaceCreate, TaskExit};
    use tokio_stream::StreamExt;
    use tonic::Code;

    use super::*;
    use crate::namespace::NAMESPACE_HEADER;

    fn service() -> EventsService {
        EventsService::new(Arc::new(Exchange::new()))
    }

    fn with_ns<T>(ns: &str, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut()
            .insert(NAMESPACE_HEADER, ns.parse().unwrap());
        req
    }

    async fn subscribe(svc: &EventsService, ns: &str, filters: &[&str]) -> EnvelopeStream {
        svc.subscribe(with_ns(
            ns,
            SubscribeRequest {
                filters: filters.iter().map(|f| (*f).to_owned()).collect(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
    }

    async fn next(stream: &mut EnvelopeStream) -> ProtoEnvelope {
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("an envelope arrives")
            .expect("the stream is open")
            .expect("the item is an envelope")
    }

    fn publish_req(ns: &str, topic: &str, event: prost_types::Any) -> Request<PublishRequest> {
        with_ns(
            ns,
            PublishRequest {
                topic: topic.into(),
                event: Some(event),
            },
        )
    }

    #[tokio::test]
    async fn subscribe_sees_published_events_with_bare_type_urls() {
        let svc = service();
        // The subscriber's header names another namespace: Subscribe is not namespaced.
        let mut stream = subscribe(&svc, "elsewhere", &[]).await;
        let event = NamespaceCreate {
            name: "n1".into(),
            ..Default::default()
        }
        .to_any();
        svc.publish(publish_req("n1", topic::NAMESPACE_CREATE, event.clone()))
            .await
            .unwrap();
        let env = next(&mut stream).await;
        assert_eq!(env.namespace, "n1");
        assert_eq!(env.topic, "/namespaces/create");
        assert!(env.timestamp.is_some_and(|t| t.seconds > 0));
        let got = env.event.unwrap();
        assert_eq!(got.type_url, "containerd.events.NamespaceCreate");
        assert_eq!(got, event);
    }

    #[tokio::test]
    async fn subscribe_filters() {
        let svc = service();
        let mut exits =
            subscribe(&svc, "default", &["topic~=/tasks/,event.container_id==c2"]).await;
        for (ns, id) in [("a", "c1"), ("b", "c2")] {
            let exit = TaskExit {
                container_id: id.into(),
                ..Default::default()
            };
            svc.publish(publish_req(ns, TaskExit::TOPIC, exit.to_any()))
                .await
                .unwrap();
        }
        let env = next(&mut exits).await;
        assert_eq!(env.namespace, "b");
        assert_eq!(env.event.unwrap().type_url, payload::TASK_EXIT);

        let err = svc
            .subscribe(Request::new(SubscribeRequest {
                filters: vec!["topic==".into()],
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().starts_with("filters: parse error"),
            "{}",
            err.message()
        );
    }

    #[tokio::test]
    async fn publish_needs_namespace_topic_and_event() {
        let svc = service();
        let any = TaskExit::default().to_any();
        let err = svc
            .publish(Request::new(PublishRequest {
                topic: topic::TASK_EXIT.into(),
                event: Some(any.clone()),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        let err = svc
            .publish(publish_req("default", "tasks/exit", any))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(
            err.message(),
            "envelope topic \"tasks/exit\": must start with '/': invalid argument"
        );
        let err = svc
            .publish(with_ns(
                "default",
                PublishRequest {
                    topic: topic::TASK_EXIT.into(),
                    event: None,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }

    #[tokio::test]
    async fn forward_keeps_the_envelope() {
        let svc = service();
        let mut stream = subscribe(&svc, "default", &[]).await;
        let sent = ProtoEnvelope {
            timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 42,
            }),
            namespace: "shimns".into(),
            topic: topic::TASK_EXIT.into(),
            event: Some(TaskExit::default().to_any()),
        };
        svc.forward(Request::new(ForwardRequest {
            envelope: Some(sent.clone()),
        }))
        .await
        .unwrap();
        assert_eq!(next(&mut stream).await, sent);

        let go_zero = ProtoEnvelope {
            timestamp: Some(prost_types::Timestamp {
                seconds: -62_135_596_800,
                nanos: 0,
            }),
            ..sent.clone()
        };
        let no_time = ProtoEnvelope {
            timestamp: None,
            ..sent.clone()
        };
        let bad_ns = ProtoEnvelope {
            namespace: String::new(),
            ..sent
        };
        for envelope in [Some(go_zero), Some(no_time), Some(bad_ns), None] {
            let err = svc
                .forward(Request::new(ForwardRequest { envelope }))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        }
    }

    #[tokio::test]
    async fn closing_the_stream_unsubscribes() {
        let exchange = Arc::new(Exchange::new());
        let svc = EventsService::new(exchange.clone());
        let stream = subscribe(&svc, "default", &[]).await;
        assert_eq!(exchange.subscriber_count(), 1);
        drop(stream);
        assert_eq!(exchange.subscriber_count(), 0);
    }
}
