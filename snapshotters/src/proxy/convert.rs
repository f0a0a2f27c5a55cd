//! Wire conversions shared by the proxy client and server. Mounts convert through
//! `berth-mount`'s `From` impls, not here.

use std::time::SystemTime;

use berth_proto::containerd::services::snapshots::v1::{Info as ProtoInfo, Kind as ProtoKind};

use crate::snapshotter::{Info, Kind};

fn time_from(t: Option<prost_types::Timestamp>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

pub(crate) fn info_to_proto(i: Info) -> ProtoInfo {
    let kind = match i.kind {
        Kind::View => ProtoKind::View,
        Kind::Active => ProtoKind::Active,
        Kind::Committed => ProtoKind::Committed,
    };
    ProtoInfo {
        name: i.name,
        parent: i.parent.unwrap_or_default(),
        kind: kind as i32,
        created_at: Some(i.created_at.into()),
        updated_at: Some(i.updated_at.into()),
        labels: i.labels.into_iter().collect(),
    }
}

pub(crate) fn info_from_proto(i: ProtoInfo) -> Info {
    let kind = match ProtoKind::try_from(i.kind) {
        Ok(ProtoKind::View) => Kind::View,
        Ok(ProtoKind::Committed) => Kind::Committed,
        _ => Kind::Active,
    };
    Info {
        name: i.name,
        parent: (!i.parent.is_empty()).then_some(i.parent),
        kind,
        labels: i.labels.into_iter().collect(),
        created_at: time_from(i.created_at),
        updated_at: time_from(i.updated_at),
    }
}
