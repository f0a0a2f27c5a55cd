//! Conversions between domain records and wire types, kept at the service edge.

use std::time::SystemTime;

use berth_core::Descriptor;
use berth_proto::containerd::types::Descriptor as ProtoDescriptor;
use prost_types::Timestamp;

/// A time on the wire.
pub fn timestamp(t: SystemTime) -> Option<Timestamp> {
    Some(Timestamp::from(t))
}

/// A descriptor from the wire (absent = empty, which validation then refuses).
pub fn descriptor_from_proto(d: Option<ProtoDescriptor>) -> Descriptor {
    let d = d.unwrap_or_default();
    Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations.into_iter().collect(),
    }
}

/// A descriptor for the wire.
pub fn descriptor_to_proto(d: Descriptor) -> ProtoDescriptor {
    ProtoDescriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations.into_iter().collect(),
    }
}
