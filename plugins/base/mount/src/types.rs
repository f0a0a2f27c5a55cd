//! The domain mount (containerd `mount.Mount`), apart from its wire form.

use berth_proto::containerd::types::Mount as ProtoMount;

/// A filesystem mount to perform, as a snapshotter returns it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    /// Filesystem type: `bind`, `overlay`, `btrfs`, ...
    pub mount_type: String,
    /// Source: a path, a device or `overlay`.
    pub source: String,
    /// Where to mount, relative to the target given to `mount_all`; usually empty.
    pub target: String,
    /// Options as `mount(8)` spells them (`ro`, `rbind`, `lowerdir=...`).
    pub options: Vec<String>,
}

impl From<ProtoMount> for Mount {
    fn from(m: ProtoMount) -> Mount {
        let ProtoMount {
            r#type: mount_type,
            source,
            target,
            options,
        } = m;
        Mount {
            mount_type,
            source,
            target,
            options,
        }
    }
}

impl From<&ProtoMount> for Mount {
    fn from(m: &ProtoMount) -> Mount {
        Mount::from(m.clone())
    }
}

impl From<Mount> for ProtoMount {
    fn from(m: Mount) -> ProtoMount {
        ProtoMount {
            r#type: m.mount_type,
            source: m.source,
            target: m.target,
            options: m.options,
        }
    }
}

impl From<&Mount> for ProtoMount {
    fn from(m: &Mount) -> ProtoMount {
        ProtoMount::from(m.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip() {
        let m = Mount {
            mount_type: "overlay".into(),
            source: "overlay".into(),
            target: "sub".into(),
            options: vec!["lowerdir=/a:/b".into()],
        };
        let wire = ProtoMount::from(m.clone());
        assert_eq!(wire.r#type, "overlay");
        assert_eq!(Mount::from(&wire), m);
        assert_eq!(ProtoMount::from(&m), wire);
    }
}
