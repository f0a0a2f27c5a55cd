//! Mounting snapshot mounts locally (containerd `mount.All` for the `bind` and `overlay` types
//! the snapshotters return) and unmounting a target completely.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use berth_proto::containerd::types::Mount;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Splits options into mount flags and the data string.
fn parse_options(options: &[String]) -> (MsFlags, Vec<String>) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in options {
        match opt.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" | "defaults" => {}
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "private" => flags |= MsFlags::MS_PRIVATE,
            "rprivate" => flags |= MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            other => data.push(other.to_owned()),
        }
    }
    (flags, data)
}

/// Mounts every mount in order on `target`.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for m in mounts {
        let (flags, data) = parse_options(&m.options);
        let data = data.join(",");
        let data = (!data.is_empty()).then_some(data.as_str());
        if flags.contains(MsFlags::MS_BIND) || m.r#type == "bind" {
            let bind = flags & (MsFlags::MS_BIND | MsFlags::MS_REC) | MsFlags::MS_BIND;
            mount(
                Some(m.source.as_str()),
                target,
                None::<&str>,
                bind,
                None::<&str>,
            )
            .with_context(|| format!("cannot bind mount {} on {}", m.source, target.display()))?;
            let extra = flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
            if !extra.is_empty() {
                // Read-only (and other) flags on a bind need a remount.
                mount(
                    None::<&str>,
                    target,
                    None::<&str>,
                    extra | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                    None::<&str>,
                )
                .with_context(|| {
                    format!("cannot remount {} with {:?}", target.display(), m.options)
                })?;
            }
        } else if m.r#type == "overlay" || !m.r#type.is_empty() {
            mount(
                Some(m.source.as_str()),
                target,
                Some(m.r#type.as_str()),
                flags,
                data,
            )
            .with_context(|| {
                format!(
                    "cannot mount {} ({}) on {}",
                    m.source,
                    m.r#type,
                    target.display()
                )
            })?;
        } else {
            bail!("mount of {} has no type", m.source);
        }
    }
    Ok(())
}

/// Unmounts everything stacked on `target` (containerd `mount.UnmountAll`).
pub fn unmount_all(target: &Path) -> Result<()> {
    loop {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            Err(Errno::EINVAL) => return Ok(()),
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot unmount {}", target.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let opts: Vec<String> = ["ro", "rbind", "index=off", "lowerdir=/a:/b"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let (flags, data) = parse_options(&opts);
        assert!(flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC));
        assert_eq!(data, ["index=off", "lowerdir=/a:/b"]);
    }
}
