//! The OCI runtime spec of sandboxes and containers, from image config, request and security context.
