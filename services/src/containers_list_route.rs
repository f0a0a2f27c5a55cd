//! `Containers/List` answered from bytes encoded once per change.
//!
//! The generated server encodes every `Container` of every answer with prost. A listing is
//! read far more often than containers change (orchestrators poll it), so
//! [`ContainerListings`](crate::container_listing::ContainerListings) keeps each container's
//! encoding framed as field 1, and an answer is the concatenation of the framed containers that
//! match: the exact bytes prost would produce for `ListContainersResponse`. This route sends
//! them with a codec that writes bytes as they are; every other method goes to the generated
//! server unchanged.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use berth_proto::containerd::services::containers::v1::containers_server::ContainersServer;
use berth_proto::containerd::services::containers::v1::ListContainersRequest;
use bytes::{BufMut, Bytes};
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstDecoder;

use crate::containers::ContainersService;
use crate::grpc::MessageLimits;

/// The method this route answers itself.
const LIST_PATH: &str = "/containerd.services.containers.v1.Containers/List";

/// An already encoded `ListContainersResponse`.
#[derive(Debug, Clone)]
pub struct EncodedList(pub Bytes);

/// Writes [`EncodedList`] bytes as they are and decodes requests with prost.
#[derive(Debug, Default, Clone, Copy)]
struct PreEncodedCodec;

#[derive(Debug, Default, Clone, Copy)]
struct PreEncodedEncoder;

impl Encoder for PreEncodedEncoder {
    type Item = EncodedList;
    type Error = Status;

    fn encode(&mut self, item: EncodedList, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}

impl Codec for PreEncodedCodec {
    type Encode = EncodedList;
    type Decode = ListContainersRequest;
    type Encoder = PreEncodedEncoder;
    type Decoder = ProstDecoder<ListContainersRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

/// The List method over the service's encoded listings.
struct ListMethod(ContainersService);

impl UnaryService<ListContainersRequest> for ListMethod {
    type Response = EncodedList;
    type Future = Pin<Box<dyn Future<Output = Result<Response<EncodedList>, Status>> + Send>>;

    fn call(&mut self, req: Request<ListContainersRequest>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move { svc.list_encoded(&req).await.map(Response::new) })
    }
}

/// The Containers service with List answered from encoded listings.
#[derive(Debug, Clone)]
pub struct ContainersRoutes {
    generated: ContainersServer<ContainersService>,
    svc: ContainersService,
    /// The message size limit of the List route, as the generated server's.
    max_message_size: Option<usize>,
}

impl ContainersRoutes {
    /// Routes for `svc`.
    pub fn new(svc: ContainersService) -> Self {
        ContainersRoutes {
            generated: ContainersServer::new(svc.clone()),
            svc,
            max_message_size: None,
        }
    }
}

impl MessageLimits for ContainersRoutes {
    fn with_message_limits(self, max: usize) -> Self {
        ContainersRoutes {
            generated: self.generated.with_message_limits(max),
            svc: self.svc,
            max_message_size: Some(max),
        }
    }
}

impl NamedService for ContainersRoutes {
    const NAME: &'static str = <ContainersServer<ContainersService> as NamedService>::NAME;
}

type BoxResponse = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl tower::Service<http::Request<Body>> for ContainersRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxResponse;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<http::Request<Body>>::poll_ready(&mut self.generated, cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != LIST_PATH {
            return Box::pin(self.generated.call(req));
        }
        let method = ListMethod(self.svc.clone());
        let mut grpc = tonic::server::Grpc::new(PreEncodedCodec);
        if let Some(max) = self.max_message_size {
            grpc = grpc
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
        }
        Box::pin(async move { Ok(grpc.unary(method, req).await) })
    }
}
