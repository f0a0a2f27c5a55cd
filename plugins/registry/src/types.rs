//! Plugin type strings, exactly as containerd spells them (`plugins/types.go`); `ctr plugins ls`
//! and `disabled_plugins` use these.

/// Content stores.
pub const CONTENT: &str = "io.containerd.content.v1";
/// Snapshotters.
pub const SNAPSHOTTER: &str = "io.containerd.snapshotter.v1";
/// The metadata store.
pub const METADATA: &str = "io.containerd.metadata.v1";
/// gRPC services.
pub const GRPC: &str = "io.containerd.grpc.v1";
/// Runtime v2 task managers.
pub const RUNTIME_V2: &str = "io.containerd.runtime.v2";
/// Garbage collectors.
pub const GC: &str = "io.containerd.gc.v1";
/// Event exchanges.
pub const EVENT: &str = "io.containerd.event.v1";
/// Lease managers.
pub const LEASE: &str = "io.containerd.lease.v1";
/// Differs (layer apply and compare).
pub const DIFF: &str = "io.containerd.differ.v1";
/// Internal plugins.
pub const INTERNAL: &str = "io.containerd.internal.v1";
/// ttrpc services.
pub const TTRPC: &str = "io.containerd.ttrpc.v1";

/// The `requires` entry meaning "every other type".
pub const ALL: &str = "*";
