//! The well-known strings of the image and metadata world, defined once: OCI and Docker media
//! types ([`media_type`]), the `containerd.io/...` label keys the daemon, the transfer library
//! and the CLI read and write ([`label`]), and the descriptor annotations images carry
//! ([`annotation`]).
//!
//! Why a crate of its own: the users sit on every layer of the tree (the snapshotters' layer
//! applier, the core's garbage collector and snapshot views, the transfer library, the services
//! and `ctr`), and no crate below all of them fits: `berth-errdefs` is about error classes and
//! `berth-proto` is generated wire code. A leaf with no dependencies can be reached from any of
//! them without a cycle. Strings that only one component knows (the overlay snapshotter's
//! `upperdir` label, whiteout names) stay with that component.

/// Media types (`ocispec.MediaType*`, containerd `images.MediaType*`).
pub mod media_type {
    /// OCI image index (`ocispec.MediaTypeImageIndex`).
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image manifest (`ocispec.MediaTypeImageManifest`).
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image config (`ocispec.MediaTypeImageConfig`).
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Uncompressed OCI layer (`ocispec.MediaTypeImageLayer`).
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// Gzip-compressed OCI layer (`ocispec.MediaTypeImageLayerGzip`).
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// Zstd-compressed OCI layer (`ocispec.MediaTypeImageLayerZstd`).
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Uncompressed non-distributable OCI layer, before any `+<compression>` suffix.
    pub const OCI_LAYER_NONDISTRIBUTABLE: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar";
    /// What every OCI layer media type starts with.
    pub const OCI_LAYER_PREFIX: &str = "application/vnd.oci.image.layer.";
    /// What every non-distributable OCI layer media type starts with.
    pub const OCI_LAYER_NONDISTRIBUTABLE_PREFIX: &str =
        "application/vnd.oci.image.layer.nondistributable.";

    /// Docker v2 schema 2 manifest list (`images.MediaTypeDockerSchema2ManifestList`).
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker v2 schema 2 manifest (`images.MediaTypeDockerSchema2Manifest`).
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker v2 schema 2 image config (`images.MediaTypeDockerSchema2Config`).
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker layer, compression unknown (`images.MediaTypeDockerSchema2Layer`).
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Gzip-compressed Docker layer (`images.MediaTypeDockerSchema2LayerGzip`).
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Foreign Docker layer (`images.MediaTypeDockerSchema2LayerForeign`).
    pub const DOCKER_LAYER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";
    /// Gzip-compressed foreign Docker layer (`images.MediaTypeDockerSchema2LayerForeignGzip`).
    pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    /// What every Docker layer media type starts with.
    pub const DOCKER_LAYER_PREFIX: &str = "application/vnd.docker.image.rootfs.";
    /// What every foreign Docker layer media type starts with.
    pub const DOCKER_LAYER_FOREIGN_PREFIX: &str = "application/vnd.docker.image.rootfs.foreign.";

    /// Every manifest media type a pull accepts, sent as `Accept` when resolving a reference.
    pub const MANIFESTS: [&str; 4] = [
        OCI_INDEX,
        DOCKER_MANIFEST_LIST,
        OCI_MANIFEST,
        DOCKER_MANIFEST,
    ];
}

/// Label keys and key prefixes (containerd `labels`, `metadata/gc.go`, `snapshots`).
pub mod label {
    /// Any value: the blob, snapshot or image is a GC root.
    pub const GC_ROOT: &str = "containerd.io/gc.root";
    /// `…content`, `…content.<x>` or `…content/<x>`: the value is a digest the object references.
    pub const GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";
    /// Child keys a parent blob uses for its config (`images.ChildGCLabels`).
    pub const GC_REF_CONTENT_CONFIG: &str = "containerd.io/gc.ref.content.config";
    /// Child key prefix for manifests, followed by the child's index.
    pub const GC_REF_CONTENT_MANIFEST: &str = "containerd.io/gc.ref.content.m.";
    /// Child key prefix for layers, followed by the child's index.
    pub const GC_REF_CONTENT_LAYER: &str = "containerd.io/gc.ref.content.l.";
    /// Child key prefix for any other child, followed by the child's index.
    pub const GC_REF_CONTENT_OTHER: &str = "containerd.io/gc.ref.content.";
    /// `…snapshot.<snapshotter>[/<x>]`: the value is a snapshot key the object references.
    /// Without the `.` that separates the snapshotter's name.
    pub const GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot";
    /// On a lease: RFC 3339 time after which the lease protects nothing and is removed.
    pub const GC_EXPIRE: &str = "containerd.io/gc.expire";
    /// On a lease: hold the resources without following their references.
    pub const GC_FLAT: &str = "containerd.io/gc.flat";
    /// On a layer blob: the diffID (uncompressed digest), set after a verified apply
    /// (`labels.LabelUncompressed`).
    pub const UNCOMPRESSED: &str = "containerd.io/uncompressed";
    /// Blob label prefix naming the repositories a blob was pulled from, per registry host.
    pub const DISTRIBUTION_SOURCE: &str = "containerd.io/distribution.source";
    /// On a prepare or commit: the chain ID an unpack snapshot becomes.
    pub const SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";
    /// Descriptor annotations and snapshot labels with this prefix are inherited by the
    /// snapshots an unpack makes (`snapshots.FilterInheritedLabels`).
    pub const SNAPSHOT_INHERITED_PREFIX: &str = "containerd.io/snapshot/";
    /// On a namespace: the snapshotter its clients use by default.
    pub const DEFAULT_SNAPSHOTTER: &str = "containerd.io/defaults/snapshotter";
}

/// Descriptor annotation keys.
pub mod annotation {
    /// The full image name (containerd `images.AnnotationImageName`).
    pub const IMAGE_NAME: &str = "io.containerd.image.name";
    /// The reference (tag) name (`ocispec.AnnotationRefName`).
    pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
}

/// Facts of the OCI runtime spec as containerd 1.6 fills it (`oci/spec.go`
/// `populateDefaultUnixSpec`, `defaultUnixCaps`), shared by `berth run` and the CRI.
pub mod oci {
    /// The `ociVersion` containerd 1.6 writes (`specs.Version`).
    pub const VERSION: &str = "1.0.2-dev";

    /// `PATH` of a process whose image sets none (`defaultUnixEnv`).
    pub const DEFAULT_PATH_ENV: &str =
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    /// The capabilities a container gets by default (`defaultUnixCaps`).
    pub const DEFAULT_CAPS: &[&str] = &[
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];

    /// Every capability Linux defines, by bit number (`linux/capability.h`): a privileged
    /// container's set.
    pub const ALL_CAPS: &[&str] = &[
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
    ];

    /// Paths of the default spec that read as empty inside the container.
    pub const DEFAULT_MASKED_PATHS: &[&str] = &[
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/sys/firmware",
        "/proc/scsi",
    ];

    /// Paths of the default spec mounted read-only inside the container.
    pub const DEFAULT_READONLY_PATHS: &[&str] = &[
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ];
}
