//! The instance every `io.containerd.grpc.v1` plugin returns: a way to add its tonic service to
//! the daemon's router, so the daemon serves whatever loaded without knowing the types.

use std::fmt;
use std::sync::Mutex;

use tonic::service::Routes;

type AddFn = Box<dyn FnOnce(Routes) -> Routes + Send>;

/// A gRPC service ready to be served.
pub struct GrpcService {
    name: &'static str,
    add: Mutex<Option<AddFn>>,
}

impl fmt::Debug for GrpcService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcService")
            .field("name", &self.name)
            .finish()
    }
}

impl GrpcService {
    /// A service named `name` that `add` puts on the router, e.g.
    /// `|routes| routes.add_service(NamespacesServer::new(svc))`.
    pub fn new(name: &'static str, add: impl FnOnce(Routes) -> Routes + Send + 'static) -> Self {
        GrpcService {
            name,
            add: Mutex::new(Some(Box::new(add))),
        }
    }

    /// The fully qualified gRPC service name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Adds the service to `routes`; a second call adds nothing.
    pub fn add_to(&self, routes: Routes) -> Routes {
        let add = self
            .add
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match add {
            Some(add) => add(routes),
            None => routes,
        }
    }
}
