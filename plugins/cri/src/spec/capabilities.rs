//! Linux capability names and sets: the request's add/drop lists (with or without `CAP_`,
//! any case, `ALL`), and what berthd itself holds (containerd `pkg/cap`,
//! `opts.WithCapabilities`).

use berth_proto::runtime::v1::Capability as CriCapability;

use super::draft::Draft;
use crate::error::{CriError, Result};

/// Capability names by bit number (`linux/capability.h`).
pub use berth_wellknown::oci::ALL_CAPS as KNOWN;

/// `name` as `CAP_NAME`: upper case, one `CAP_` prefix.
pub fn normalize(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    let mut bare = upper.as_str();
    while let Some(rest) = bare.strip_prefix("CAP_") {
        bare = rest;
    }
    format!("CAP_{bare}")
}

/// The known capabilities set in a `/proc/<pid>/status` mask (`CapEff:` hex).
pub fn from_mask(mask: u64) -> Vec<String> {
    KNOWN
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, name)| (*name).to_owned())
        .collect()
}

/// berthd's effective capabilities (containerd `cap.Current`): what "ALL" and privileged
/// containers get, since runc cannot hand out more than the caller has.
pub fn current_effective() -> Result<Vec<String>> {
    let path = "/proc/self/status";
    let status = std::fs::read_to_string(path).map_err(|e| CriError::io("reading", path, e))?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .ok_or_else(|| CriError::Internal(format!("no CapEff line in {path}")))?;
    let mask = u64::from_str_radix(hex.trim(), 16)
        .map_err(|e| CriError::Internal(format!("parsing CapEff of {path}: {e}")))?;
    Ok(from_mask(mask))
}

/// Applies the request's add and drop lists to the draft's capabilities: `ALL` in add gives
/// `all` (berthd's own), `ALL` in drop empties the set first; then the named ones are added
/// and dropped, in that order (containerd `WithCapabilities`). An unknown name is refused.
pub fn apply(draft: &mut Draft, caps: &CriCapability, all: &[String], field: &str) -> Result<()> {
    let is_all = |c: &String| c.trim().eq_ignore_ascii_case("ALL");
    if caps.add_capabilities.iter().any(is_all) {
        draft.caps = all.to_vec();
    }
    if caps.drop_capabilities.iter().any(is_all) {
        draft.caps.clear();
    }
    for (list, what) in [
        (&caps.add_capabilities, "add_capabilities"),
        (&caps.drop_capabilities, "drop_capabilities"),
    ] {
        for name in list.iter().filter(|c| !is_all(c)) {
            let cap = normalize(name);
            if !KNOWN.contains(&cap.as_str()) {
                return Err(CriError::invalid(
                    format!("{field}.{what}"),
                    format!("unknown capability {name:?}"),
                ));
            }
            if what == "add_capabilities" {
                if !draft.caps.contains(&cap) {
                    draft.caps.push(cap);
                }
            } else {
                draft.caps.retain(|c| *c != cap);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::defaults::DEFAULT_CAPS;

    const FIELD: &str = "config.linux.security_context.capabilities";

    fn draft() -> Draft {
        Draft {
            caps: DEFAULT_CAPS.iter().map(|c| (*c).to_owned()).collect(),
            ..Draft::default()
        }
    }

    fn caps(add: &[&str], drop: &[&str]) -> CriCapability {
        CriCapability {
            add_capabilities: add.iter().map(|c| (*c).to_owned()).collect(),
            drop_capabilities: drop.iter().map(|c| (*c).to_owned()).collect(),
            ..CriCapability::default()
        }
    }

    #[test]
    fn names_normalise() {
        assert_eq!(normalize("sys_admin"), "CAP_SYS_ADMIN");
        assert_eq!(normalize("CAP_NET_ADMIN"), "CAP_NET_ADMIN");
        assert_eq!(normalize("cap_cap_kill"), "CAP_KILL");
    }

    #[test]
    fn masks_name_their_bits() {
        assert_eq!(from_mask(0b1), vec!["CAP_CHOWN"]);
        let all_but_resource = 0x1fffeffffff_u64;
        let names = from_mask(all_but_resource);
        assert_eq!(names.len(), KNOWN.len() - 1);
        assert!(!names.contains(&"CAP_SYS_RESOURCE".to_owned()));
        assert!(!current_effective().unwrap().is_empty() || !nix::unistd::geteuid().is_root());
    }

    #[test]
    fn add_and_drop_with_and_without_prefix() {
        let mut d = draft();
        apply(
            &mut d,
            &caps(&["SYS_ADMIN", "CAP_NET_ADMIN"], &["chown", "CAP_KILL"]),
            &[],
            FIELD,
        )
        .unwrap();
        assert!(d.caps.contains(&"CAP_SYS_ADMIN".to_owned()));
        assert!(d.caps.contains(&"CAP_NET_ADMIN".to_owned()));
        assert!(!d.caps.contains(&"CAP_CHOWN".to_owned()));
        assert!(!d.caps.contains(&"CAP_KILL".to_owned()));
    }

    #[test]
    fn all_adds_berthds_set_and_drops_everything() {
        let all = vec!["CAP_CHOWN".to_owned(), "CAP_SYS_ADMIN".to_owned()];
        let mut d = draft();
        apply(&mut d, &caps(&["ALL"], &[]), &all, FIELD).unwrap();
        assert_eq!(d.caps, all);

        let mut d = draft();
        apply(&mut d, &caps(&[], &["all"]), &all, FIELD).unwrap();
        assert!(d.caps.is_empty());

        let mut d = draft();
        apply(&mut d, &caps(&["NET_RAW"], &["ALL"]), &all, FIELD).unwrap();
        assert_eq!(d.caps, vec!["CAP_NET_RAW"]);

        let mut d = draft();
        apply(&mut d, &caps(&["ALL"], &["SYS_ADMIN"]), &all, FIELD).unwrap();
        assert_eq!(d.caps, vec!["CAP_CHOWN"]);
    }

    #[test]
    fn unknown_names_are_refused() {
        let err = apply(&mut draft(), &caps(&["CAP_FLY"], &[]), &[], FIELD).unwrap_err();
        assert!(err.to_string().contains("add_capabilities"), "{err}");
    }
}
