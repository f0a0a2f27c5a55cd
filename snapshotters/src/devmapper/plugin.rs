//! Registration of the devmapper snapshotter as `io.containerd.snapshotter.v1.devmapper`
//! (containerd `snapshots/devmapper/plugin/plugin.go`, `config.go`), and its config.
//!
//! containerd's keys, with containerd's defaults and errors: `root_path` (default the plugin's
//! root), `pool_name` (required: without it the plugin fails with `devmapper not configured`),
//! `base_image_size` (required, a size such as `10GB`: binary units as docker's
//! `units.RAMInBytes`), `async_remove`, `discard_blocks`, `fs_type` (`ext4` by default, or
//! `xfs`), `fs_options` (`mkfs.ext4 -E` options).
//!
//! Berth's own keys make the pool when no device-mapper device `pool_name` exists (containerd
//! expects it made beforehand by `dmsetup`): `pool_data_device` and `pool_metadata_device`
//! (block devices, or regular files attached as loop devices; a missing file is made sparse
//! with `pool_data_size`, default 10GB, or `pool_metadata_size`, default 1GB) and
//! `pool_block_size` (the pool's data block size, default 64KB, a multiple of 64KiB up to
//! 1GiB). Without them a missing pool is an error, as in containerd.
//!
//! On a kernel without device-mapper the plugin is skipped with the reason, before the config
//! is looked at (so `ctr plugins ls` says why on such a host whatever the config).

use std::path::PathBuf;
use std::sync::Arc;

use berth_registry::{types, Platform, PluginError, Registration};
use serde::{Deserialize, Serialize};

use super::metadata::FsType;
use super::{dm, DevmapperSnapshotter, Options, PoolSetup};
use crate::snapshotter::Snapshotter;

/// The plugin id.
pub const ID: &str = "devmapper";

/// The `[plugins."io.containerd.snapshotter.v1.devmapper"]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Root directory for the metadata; empty means the plugin's own `<root>/<type>.<id>`.
    pub root_path: String,
    /// The thin-pool's device-mapper name (without `/dev/mapper/`).
    pub pool_name: String,
    /// The virtual size of each thin device, e.g. `10GB`.
    pub base_image_size: String,
    /// Leave the deletion of removed snapshots' devices to cleanup (the GC's).
    pub async_remove: bool,
    /// Discard a device's blocks before it is removed.
    pub discard_blocks: bool,
    /// `ext4` (default) or `xfs`.
    pub fs_type: String,
    /// Options for `mkfs.ext4 -E` (default `nodiscard,lazy_itable_init=0,lazy_journal_init=0`).
    pub fs_options: String,
    /// Berth: the pool's data device (block device or file) when the pool must be made.
    pub pool_data_device: String,
    /// Berth: the pool's metadata device (block device or file) when the pool must be made.
    pub pool_metadata_device: String,
    /// Berth: the size of a data file made because it is missing (default 10GB).
    pub pool_data_size: String,
    /// Berth: the size of a metadata file made because it is missing (default 1GB).
    pub pool_metadata_size: String,
    /// Berth: the pool's data block size (default 64KB).
    pub pool_block_size: String,
}

/// Parses a size as docker's `units.RAMInBytes`: a decimal number, an optional space, an
/// optional unit `k m g t p` (any case, powers of 1024), an optional `i` and an optional `b`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size: '{s}'");
    let mut rest = s;
    if let Some(r) = rest.strip_suffix(['b', 'B']) {
        rest = r;
    }
    if let Some(r) = rest.strip_suffix(['i', 'I']) {
        rest = r;
    }
    let mut multiplier: u64 = 1;
    if let Some(last) = rest.chars().last() {
        let power = match last.to_ascii_lowercase() {
            'k' => Some(1),
            'm' => Some(2),
            'g' => Some(3),
            't' => Some(4),
            'p' => Some(5),
            _ => None,
        };
        if let Some(power) = power {
            multiplier = 1024u64.pow(power);
            rest = &rest[..rest.len() - 1];
        }
    }
    if let Some(r) = rest.strip_suffix(' ') {
        rest = r;
    }
    let well_formed = !rest.is_empty()
        && rest
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    if !well_formed {
        return Err(invalid());
    }
    let number: f64 = rest.parse().map_err(|_| invalid())?;
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(invalid());
    }
    Ok(bytes as u64)
}

const DEFAULT_DATA_SIZE: &str = "10GB";
const DEFAULT_METADATA_SIZE: &str = "1GB";
const DEFAULT_BLOCK_SIZE: &str = "64KB";

impl Config {
    /// containerd's `parse` then `Validate`, then Berth's pool keys: the options the
    /// snapshotter runs with, or the message naming what is wrong. `root_path` must be set
    /// (the plugin fills it in first).
    pub fn options(&self) -> Result<Options, String> {
        let base_image_size = parse_size(&self.base_image_size).map_err(|e| {
            format!(
                "failed to parse base image size: '{}': {e}",
                self.base_image_size
            )
        })?;
        let mut errors = Vec::new();
        if self.pool_name.is_empty() {
            errors.push("pool_name is required".to_owned());
        }
        if self.root_path.is_empty() {
            errors.push("root_path is required".to_owned());
        }
        let fs_type = match self.fs_type.as_str() {
            "" | "ext4" => Some(FsType::Ext4),
            "xfs" => Some(FsType::Xfs),
            other => {
                errors.push(format!("unsupported Filesystem Type: {other:?}"));
                None
            }
        };
        let pool = self.pool_setup(&mut errors);
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        Ok(Options {
            root: PathBuf::from(&self.root_path),
            pool_name: self.pool_name.clone(),
            base_image_size,
            async_remove: self.async_remove,
            discard_blocks: self.discard_blocks,
            fs_type: fs_type.expect("an unsupported fs_type is an error above"),
            fs_options: self.fs_options.clone(),
            pool,
        })
    }

    /// Berth's pool keys; both devices or neither.
    fn pool_setup(&self, errors: &mut Vec<String>) -> Option<PoolSetup> {
        let size = |key: &str, value: &str, default: &str, errors: &mut Vec<String>| {
            let value = if value.is_empty() { default } else { value };
            parse_size(value)
                .map_err(|e| errors.push(format!("{key}: {e}")))
                .unwrap_or(0)
        };
        let data_size = size(
            "pool_data_size",
            &self.pool_data_size,
            DEFAULT_DATA_SIZE,
            errors,
        );
        let metadata_size = size(
            "pool_metadata_size",
            &self.pool_metadata_size,
            DEFAULT_METADATA_SIZE,
            errors,
        );
        let block = size(
            "pool_block_size",
            &self.pool_block_size,
            DEFAULT_BLOCK_SIZE,
            errors,
        );
        if block != 0 && (block % (64 << 10) != 0 || block > (1 << 30)) {
            errors.push(format!(
                "pool_block_size: {block} bytes is not a multiple of 64KiB from 64KiB to 1GiB"
            ));
        }
        match (
            self.pool_data_device.is_empty(),
            self.pool_metadata_device.is_empty(),
        ) {
            (true, true) => None,
            (false, false) => Some(PoolSetup {
                data_device: PathBuf::from(&self.pool_data_device),
                metadata_device: PathBuf::from(&self.pool_metadata_device),
                data_size,
                metadata_size,
                block_sectors: (block / dm::SECTOR_SIZE) as u32,
            }),
            _ => {
                errors.push(
                    "pool_data_device and pool_metadata_device must be set together".to_owned(),
                );
                None
            }
        }
    }
}

/// The `io.containerd.snapshotter.v1.devmapper` plugin: skipped on a kernel without
/// device-mapper; an error without `pool_name` (`devmapper not configured`, as containerd).
/// Its instance is an `Arc<dyn Snapshotter>` (see the crate docs).
pub fn registration() -> Registration {
    Registration::new(types::SNAPSHOTTER, ID)
        .config::<Config>()
        .init(|ctx| {
            // containerd lists its platform even when init fails.
            ctx.meta.platforms.push(Platform::host());
            dm::availability().map_err(PluginError::Skip)?;
            let mut config: Config = ctx.config()?;
            let config_error = |message: String| PluginError::Config {
                uri: ctx.uri().to_owned(),
                message,
            };
            if config.pool_name.is_empty() {
                return Err(config_error("devmapper not configured".to_owned()));
            }
            if config.root_path.is_empty() {
                config.root_path = ctx.root().display().to_string();
            }
            let options = config.options().map_err(config_error)?;
            let root = options.root.clone();
            let snapshotter = DevmapperSnapshotter::new(options).map_err(PluginError::init)?;
            if let Err(e) = snapshotter.cleanup() {
                tracing::warn!(root = %root.display(), error = %e, "devmapper cleanup failed");
            }
            ctx.meta
                .exports
                .insert("root".into(), root.display().to_string());
            ctx.meta
                .exports
                .insert("pool".into(), snapshotter.pool_name().to_owned());
            let snapshotter: Arc<dyn Snapshotter> = Arc::new(snapshotter);
            Ok(Arc::new(snapshotter))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn sizes_parse_as_docker_units() {
        assert_eq!(parse_size("10GB"), Ok(10 << 30));
        assert_eq!(parse_size("10gb"), Ok(10 << 30));
        assert_eq!(parse_size("32KiB"), Ok(32 << 10));
        assert_eq!(parse_size("32k"), Ok(32 << 10));
        assert_eq!(parse_size("1 m"), Ok(1 << 20));
        assert_eq!(parse_size("1.5M"), Ok(3 << 19));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512b"), Ok(512));
        for bad in ["", "GB", "ten", "1.2.3G", "1 2G", "-1G", "1GG", "1X", " 1G"] {
            assert_eq!(
                parse_size(bad),
                Err(format!("invalid size: '{bad}'")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn options_follow_containerd_defaults_and_errors() {
        let c = config(
            r#"
            root_path = "/r"
            pool_name = "p"
            base_image_size = "8GB"
            "#,
        );
        let o = c.options().unwrap();
        assert_eq!(o.pool_name, "p");
        assert_eq!(o.base_image_size, 8 << 30);
        assert_eq!(o.fs_type, FsType::Ext4);
        assert!(!o.async_remove && !o.discard_blocks);
        assert!(o.pool.is_none());

        let mut missing_size = c.clone();
        missing_size.base_image_size.clear();
        assert_eq!(
            missing_size.options().unwrap_err(),
            "failed to parse base image size: '': invalid size: ''"
        );
        let mut bad_fs = c.clone();
        bad_fs.fs_type = "btrfs".into();
        bad_fs.pool_name.clear();
        assert_eq!(
            bad_fs.options().unwrap_err(),
            "pool_name is required; unsupported Filesystem Type: \"btrfs\""
        );
        let mut xfs = c.clone();
        xfs.fs_type = "xfs".into();
        assert_eq!(xfs.options().unwrap().fs_type, FsType::Xfs);
    }

    #[test]
    fn pool_keys_need_both_devices_and_a_valid_block_size() {
        let c = config(
            r#"
            root_path = "/r"
            pool_name = "p"
            base_image_size = "1GB"
            pool_data_device = "/r/data"
            pool_metadata_device = "/r/meta"
            "#,
        );
        let pool = c.options().unwrap().pool.unwrap();
        assert_eq!(pool.data_size, 10 << 30);
        assert_eq!(pool.metadata_size, 1 << 30);
        assert_eq!(pool.block_sectors, 128);

        let mut one = c.clone();
        one.pool_metadata_device.clear();
        assert_eq!(
            one.options().unwrap_err(),
            "pool_data_device and pool_metadata_device must be set together"
        );
        let mut odd = c.clone();
        odd.pool_block_size = "96KB".into();
        assert!(odd
            .options()
            .unwrap_err()
            .contains("pool_block_size: 98304 bytes is not a multiple of 64KiB"));
        let mut big = c.clone();
        big.pool_block_size = "512KB".into();
        big.pool_data_size = "2GB".into();
        let pool = big.options().unwrap().pool.unwrap();
        assert_eq!((pool.block_sectors, pool.data_size), (1024, 2 << 30));
        let mut bad = c;
        bad.pool_data_size = "lots".into();
        assert_eq!(
            bad.options().unwrap_err(),
            "pool_data_size: invalid size: 'lots'"
        );
    }

    #[test]
    fn config_refuses_unknown_keys() {
        assert!(toml::from_str::<Config>("pool = \"x\"").is_err());
        assert!(config("async_remove = true").async_remove);
    }

    /// This host has no device-mapper (the guest test covers the other side): the plugin
    /// skips with a reason that says so, even when configured.
    #[test]
    fn skips_with_the_kernels_reason_without_device_mapper() {
        use berth_registry::{PluginStatus, Registry};

        let Err(reason) = dm::availability() else {
            println!("skipped: this kernel has device-mapper");
            return;
        };
        assert!(reason.contains("device-mapper"), "{reason}");
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "root = {:?}\nstate = {:?}\n[plugins.\"io.containerd.snapshotter.v1.devmapper\"]\n\
             pool_name = \"p\"\nbase_image_size = \"1GB\"\n",
            dir.path().join("root"),
            dir.path().join("state")
        );
        let config = berth_registry::Config::parse(&text, std::path::Path::new("test")).unwrap();
        let mut registry = Registry::new();
        registry.register(registration()).unwrap();
        let plugins = registry.load(&config).unwrap();
        assert!(plugins.get_all(types::SNAPSHOTTER).is_empty());
        let record = plugins.inventory().get(types::SNAPSHOTTER, ID).unwrap();
        match &record.status {
            PluginStatus::Error { message, .. } => assert!(
                message.contains(&reason) && message.ends_with("skip plugin"),
                "{message}"
            ),
            other => panic!("devmapper should skip, got {other:?}"),
        }
        assert!(!dir
            .path()
            .join("root")
            .join("io.containerd.snapshotter.v1.devmapper")
            .exists());
    }
}
