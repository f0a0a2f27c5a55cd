//! Registration of the exchange as `io.containerd.event.v1.exchange`.

use std::sync::Arc;

use berth_registry::{types, Registration};

use super::Exchange;

/// The plugin id.
pub const ID: &str = "exchange";

/// The `io.containerd.event.v1.exchange` plugin; its instance is an `Arc<Exchange>`, fetched by
/// publishers with `ctx.get_single::<Exchange>(types::EVENT)`.
pub fn registration() -> Registration {
    Registration::new(types::EVENT, ID).init(|_ctx| Ok(Arc::new(Exchange::new())))
}
