//! Device nodes in a container: the request's devices, and every host device for a
//! privileged container (containerd `opts.WithDevices`, `oci.HostDevices`,
//! `oci.DeviceFromPath`).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_proto::runtime::v1::Device as CriDevice;
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};

use super::draft::Draft;
use crate::error::{CriError, Result};

/// `/dev` entries a host device scan skips (containerd `getDevices`).
const SKIPPED_DIRS: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// The device node at `path` (not followed if a symlink); `None` when it is not a block or
/// character device.
pub fn device_from_path(path: &Path) -> Result<Option<LinuxDevice>> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| CriError::io("stat", path, e))?;
    let ft = meta.file_type();
    let typ = if ft.is_block_device() {
        LinuxDeviceType::B
    } else if ft.is_char_device() {
        LinuxDeviceType::C
    } else {
        return Ok(None);
    };
    let rdev = meta.rdev();
    let dev = LinuxDeviceBuilder::default()
        .path(path.to_path_buf())
        .typ(typ)
        .major(nix::sys::stat::major(rdev) as i64)
        .minor(nix::sys::stat::minor(rdev) as i64)
        .file_mode(meta.mode() & 0o7777)
        .uid(meta.uid())
        .gid(meta.gid())
        .build()
        .map_err(|e| CriError::Internal(format!("building the OCI spec: {e}")))?;
    Ok(Some(dev))
}

/// The devices at `path`: the node itself, or every node under a directory (recursively,
/// skipping `pts`, `shm`, ... and `console`), placed under `container_path` when given.
pub fn devices_at(path: &Path, container_path: Option<&Path>) -> Result<Vec<LinuxDevice>> {
    let meta = std::fs::metadata(path).map_err(|e| CriError::io("stat", path, e))?;
    if !meta.is_dir() {
        let mut dev = device_from_path(path)?.ok_or_else(|| {
            CriError::invalid(
                "config.devices",
                format!("{} is not a device node", path.display()),
            )
        })?;
        if let Some(cp) = container_path {
            dev.set_path(cp.to_path_buf());
        }
        return Ok(vec![dev]);
    }
    let mut out = Vec::new();
    let entries = std::fs::read_dir(path).map_err(|e| CriError::io("reading", path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| CriError::io("reading", path, e))?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        let ft = entry
            .file_type()
            .map_err(|e| CriError::io("stat", entry.path(), e))?;
        let cp: Option<PathBuf> = container_path.map(|c| c.join(&name));
        if ft.is_dir() {
            if SKIPPED_DIRS.contains(&name_str.as_ref()) {
                continue;
            }
            out.extend(devices_at(&entry.path(), cp.as_deref())?);
        } else if name_str != "console" {
            match device_from_path(&entry.path()) {
                Ok(Some(mut dev)) => {
                    if let Some(cp) = cp {
                        dev.set_path(cp);
                    }
                    out.push(dev);
                }
                Ok(None) => {}
                Err(CriError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}

/// Adds the request's devices: the host path (symlinks followed) as the container path,
/// with a cgroup rule allowing the requested permissions (`rwm`).
pub fn apply(draft: &mut Draft, devices: &[CriDevice]) -> Result<()> {
    for (i, d) in devices.iter().enumerate() {
        let field = format!("config.devices[{i}]");
        if d.host_path.is_empty() {
            return Err(CriError::invalid(
                format!("{field}.host_path"),
                "empty host path",
            ));
        }
        let host = std::fs::canonicalize(&d.host_path).map_err(|e| {
            CriError::invalid(
                format!("{field}.host_path"),
                format!("{}: {e}", d.host_path),
            )
        })?;
        let perms = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if perms.chars().any(|c| !"rwm".contains(c)) {
            return Err(CriError::invalid(
                format!("{field}.permissions"),
                format!("{perms:?} is not made of r, w and m"),
            ));
        }
        let cp = (!d.container_path.is_empty()).then(|| Path::new(&d.container_path));
        for dev in devices_at(&host, cp)? {
            let rule = LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(dev.typ())
                .major(dev.major())
                .minor(dev.minor())
                .access(perms)
                .build()
                .map_err(|e| CriError::Internal(format!("building the OCI spec: {e}")))?;
            draft.device_rules.push(rule);
            draft.devices.push(dev);
        }
    }
    Ok(())
}

/// Gives the devices added from index `from` on the owner `uid` and group `gid` where they
/// are not 0 (containerd's `device_ownership_from_security_context`: the run-as user and
/// group own the container's device nodes).
pub fn own_devices(draft: &mut Draft, from: usize, uid: u32, gid: u32) {
    for dev in draft.devices.iter_mut().skip(from) {
        if uid != 0 {
            dev.set_uid(Some(uid));
        }
        if gid != 0 {
            dev.set_gid(Some(gid));
        }
    }
}

/// Adds every device of the host's `/dev` and allows all devices (a privileged container
/// with host devices).
pub fn add_host_devices(draft: &mut Draft) -> Result<()> {
    draft.devices.extend(devices_at(Path::new("/dev"), None)?);
    draft.device_rules = vec![LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .access("rwm")
        .build()
        .map_err(|e| CriError::Internal(format!("building the OCI spec: {e}")))?];
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_is_a_char_device() {
        let dev = device_from_path(Path::new("/dev/null")).unwrap().unwrap();
        assert_eq!(dev.typ(), LinuxDeviceType::C);
        assert_eq!((dev.major(), dev.minor()), (1, 3));
        assert!(device_from_path(Path::new("/etc/hostname"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn requested_devices_get_nodes_and_rules() {
        let mut d = Draft::default();
        let req = CriDevice {
            container_path: "/dev/mynull".into(),
            host_path: "/dev/null".into(),
            permissions: "rw".into(),
        };
        apply(&mut d, &[req]).unwrap();
        assert_eq!(d.devices[0].path(), Path::new("/dev/mynull"));
        assert_eq!(d.device_rules[0].access().as_deref(), Some("rw"));
        assert!(d.device_rules[0].allow());

        let bad = CriDevice {
            container_path: "/dev/x".into(),
            host_path: "/dev/null".into(),
            permissions: "rwx".into(),
        };
        let err = apply(&mut Draft::default(), &[bad]).unwrap_err();
        assert!(err.to_string().contains("permissions"), "{err}");
        let missing = CriDevice {
            host_path: "/dev/not-there".into(),
            ..CriDevice::default()
        };
        assert!(apply(&mut Draft::default(), &[missing]).is_err());
    }

    #[test]
    fn devices_can_belong_to_the_run_as_user() {
        let mut d = Draft::default();
        let req = CriDevice {
            container_path: "/dev/mynull".into(),
            host_path: "/dev/null".into(),
            permissions: "rwm".into(),
        };
        apply(&mut d, &[req]).unwrap();
        own_devices(&mut d, 0, 1000, 0);
        assert_eq!(d.devices[0].uid(), Some(1000));
        assert_eq!(d.devices[0].gid(), Some(0), "gid 0 keeps the node's group");
    }

    #[test]
    fn host_devices_allow_everything() {
        let mut d = Draft::default();
        add_host_devices(&mut d).unwrap();
        assert!(d.devices.iter().any(|x| x.path() == Path::new("/dev/null")));
        assert_eq!(d.device_rules.len(), 1);
        assert!(d.device_rules[0].allow());
    }
}
